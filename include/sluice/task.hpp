// task<T>: the coroutine type of sluice. Every function that suspends (sends on a
// channel, sleeps, locks a mutex, waits on I/O) returns a task.
//
//   sluice::task<int> add_later(int a, int b) {
//     co_await sluice::sleep_for(1ms);
//     co_return a + b;
//   }
//
// A task is lazy: calling add_later() only creates the frame; it starts when it is
// awaited (`co_await add_later(1, 2)`) or handed to go()/spawn()/run(). It is
// move-only, owns its frame, and carries an exception thrown inside it to its
// awaiter. Awaiting a chain of tasks uses symmetric transfer, with a budget that
// keeps the stack bounded even where the compiler does not emit it as a tail call.
// Go: a plain function call inside a goroutine (tasks are how sluice spells
// "a function that may block").
#pragma once

#include <sluice/detail/task_record.hpp>

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <new>
#include <type_traits>
#include <utility>

namespace sluice {

template <class T = void>
class task;

namespace detail {

// Frame allocation goes through here: per-thread size-class caches (frame_alloc.cpp).
void* allocate_frame(std::size_t size);
void deallocate_frame(void* p, std::size_t size) noexcept;

struct root_base;

// What runs when a task finishes: `next` is the awaiting coroutine's address,
// or (low bit set) the root_base that owns a top-level task. Returns the
// coroutine to transfer to (noop after a root has been finished).
std::coroutine_handle<> complete_task(std::uintptr_t next) noexcept;

struct promise_base {
  // The awaiting coroutine (set by co_await) or, tagged with 1, the root that
  // started this task (go/spawn/run): one word either way, since it is in every
  // frame.
  std::uintptr_t next = 0;
  std::exception_ptr exception;

  void set_continuation(std::coroutine_handle<> parent) noexcept {
    next = reinterpret_cast<std::uintptr_t>(parent.address());
  }
  void set_root(root_base* r) noexcept { next = reinterpret_cast<std::uintptr_t>(r) | 1U; }

  struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    template <class P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      return complete_task(h.promise().next);
    }
    void await_resume() const noexcept {}
  };

  std::suspend_always initial_suspend() const noexcept { return {}; }
  final_awaiter final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { exception = std::current_exception(); }

  static void* operator new(std::size_t size) { return allocate_frame(size); }
  static void operator delete(void* p, std::size_t size) noexcept { deallocate_frame(p, size); }
};

template <class T>
struct task_promise : promise_base {
  alignas(T) unsigned char storage[sizeof(T)];
  bool has_value = false;

  task<T> get_return_object() noexcept;
  template <class U>
  void return_value(U&& v) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    ::new (static_cast<void*>(storage)) T(std::forward<U>(v));
    has_value = true;
  }
  T take() {
    if (exception) std::rethrow_exception(exception);
    return std::move(*std::launder(reinterpret_cast<T*>(storage)));
  }
  ~task_promise() {
    if (has_value) std::launder(reinterpret_cast<T*>(storage))->~T();
  }
};

template <>
struct task_promise<void> : promise_base {
  task<void> get_return_object() noexcept;
  void return_void() const noexcept {}
  void take() const {
    if (exception) std::rethrow_exception(exception);
  }
};

template <class T>
struct task_promise<T&> : promise_base {
  T* value = nullptr;
  task<T&> get_return_object() noexcept;
  void return_value(T& v) noexcept { value = &v; }
  T& take() const {
    if (exception) std::rethrow_exception(exception);
    return *value;
  }
};

}  // namespace detail

template <class T>
class [[nodiscard]] task {
 public:
  using promise_type = detail::task_promise<T>;
  using value_type = T;

  task() noexcept = default;
  explicit task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  task(task&& other) noexcept : h_(std::exchange(other.h_, {})) {}
  task& operator=(task&& other) noexcept {
    if (this != &other) {
      if (h_) h_.destroy();
      h_ = std::exchange(other.h_, {});
    }
    return *this;
  }
  task(const task&) = delete;
  task& operator=(const task&) = delete;
  ~task() {
    if (h_) h_.destroy();
  }

  bool valid() const noexcept { return static_cast<bool>(h_); }

  class awaiter {
   public:
    explicit awaiter(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
      h_.promise().set_continuation(parent);
      return detail::transfer_to(h_);
    }
    T await_resume() { return h_.promise().take(); }

   private:
    std::coroutine_handle<promise_type> h_;
  };

  // Starts the task and suspends the caller until it finishes; returns its value
  // or rethrows its exception. The task must not have been awaited before.
  awaiter operator co_await() && noexcept { return awaiter(h_); }
  awaiter operator co_await() & noexcept { return awaiter(h_); }

  // Internal: gives up ownership of the frame.
  std::coroutine_handle<promise_type> release() noexcept { return std::exchange(h_, {}); }
  // Internal: the frame (roots read the result from its promise).
  std::coroutine_handle<promise_type> handle() const noexcept { return h_; }

 private:
  std::coroutine_handle<promise_type> h_;
};

namespace detail {
template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
  return task<T>(std::coroutine_handle<task_promise<T>>::from_promise(*this));
}
inline task<void> task_promise<void>::get_return_object() noexcept {
  return task<void>(std::coroutine_handle<task_promise<void>>::from_promise(*this));
}
template <class T>
task<T&> task_promise<T&>::get_return_object() noexcept {
  return task<T&>(std::coroutine_handle<task_promise<T&>>::from_promise(*this));
}

template <class>
struct is_task : std::false_type {};
template <class T>
struct is_task<task<T>> : std::true_type {};
}  // namespace detail

}  // namespace sluice
