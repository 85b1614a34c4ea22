// The runtime: worker threads that run tasks, and the ways to start tasks.
//
//   int main() {
//     return sluice::run([]() -> sluice::task<int> {
//       auto h = sluice::spawn(add_later, 20, 22);   // a task with a result
//       sluice::go(log_forever, logger);             // a detached task
//       co_return co_await h.join() == 42 ? 0 : 1;
//     });
//   }
//
// run(f) starts a runtime (one worker per core by default), runs f's task on it
// and returns f's result as soon as that task finishes, like Go's main: it never
// waits for other tasks; those still alive are destroyed (frames freed,
// destructors run) after the workers have stopped. go()/spawn() decay-copy the
// callable and its arguments into the new task, so a capturing lambda stays
// alive until its task ends (std::thread's rule).
#pragma once

#include <sluice/detail/task_record.hpp>
#include <sluice/detail/type_name.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/task.hpp>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <sluice/detail/source_location.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

namespace sluice {

// A snapshot of one task, as dump_tasks and leak_check report it.
struct task_info {
  std::uint64_t id = 0;
  std::string state;   // what it waits on: "chan receive", "sleep", "running", ...
  std::string origin;  // "entry: f(int)\n  created by go at file.cpp:12"
};

// Runtime settings. Go: GOMAXPROCS and the panic behaviour.
struct runtime_options {
  // Worker threads; must be >= 1. Default: the number of cores.
  int workers = static_cast<int>(std::thread::hardware_concurrency() == 0
                                     ? 1
                                     : std::thread::hardware_concurrency());
  // Called when an exception escapes a detached task (go()). Default (empty):
  // print the task and the exception to stderr and terminate, like a Go panic.
  std::function<void(const task_info&, std::exception_ptr)> on_task_exception;
};

namespace detail {

class scheduler;
struct root_promise;

struct root_task {
  using promise_type = root_promise;
  std::coroutine_handle<root_promise> handle;
};

// Standard layout with the record first, so root_of() can go from a record to
// its frame without storing the handle.
struct root_promise {
  task_record rec;

  root_task get_return_object() noexcept {
    return {std::coroutine_handle<root_promise>::from_promise(*this)};
  }
  std::suspend_always initial_suspend() const noexcept { return {}; }
  struct final_awaiter {
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<root_promise> h) const noexcept;
    void await_resume() const noexcept {}
  };
  final_awaiter final_suspend() const noexcept { return {}; }
  void return_void() const noexcept {}
  void unhandled_exception() noexcept;
  ~root_promise();

  static void* operator new(std::size_t size) { return allocate_frame(size); }
  static void operator delete(void* p, std::size_t size) noexcept { deallocate_frame(p, size); }
};

// Registers the root task and makes it runnable on the current runtime.
// Throws std::logic_error outside a runtime (the frame is destroyed).
void start_task(root_task t, const task_origin& origin);

template <class T>
using decay_t = std::decay_t<T>;

template <class F, class... A>
using invoke_task_t = std::invoke_result_t<decay_t<F>&&, decay_t<A>&&...>;

template <class F, class... A>
root_task go_body(F f, A... a) {
  // The copies are used once, so they are passed as rvalues (std::thread's rule;
  // move-only arguments work). A lambda coroutine keeps pointing at `f`, which
  // lives in this frame until the task ends. Named, not a temporary in the
  // co_await expression: GCC PR 100611.
  auto t = std::invoke(std::move(f), std::move(a)...);
  co_await std::move(t);
}

template <class F>
task_origin make_origin(task_kind kind, const detail::source_location& loc) noexcept {
  task_origin o;
  o.kind = kind;
  o.file = loc.file_name();
  o.line = loc.line();
  o.entry_type = &type_name_v<F>;
  return o;
}

template <class F>
const void* entry_address(const F& f) noexcept {
  if constexpr (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) {
    return reinterpret_cast<const void*>(f);
  } else {
    return nullptr;
  }
}

// ---- join state ----------------------------------------------------------------

class join_state_base {
 public:
  void add_ref() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  template <class Derived>
  static void release(Derived* s) noexcept {
    // acq_rel: the last owner must see every write of the others before freeing.
    if (s->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete s;
  }
  bool done() const noexcept { return done_.load(std::memory_order_acquire); }
  // Wakes the joiner, if any. Called once by the task body.
  void complete() noexcept;
  // join's await_suspend: returns false if already done (do not suspend).
  bool park_joiner(task_record* t, std::coroutine_handle<> h) noexcept;
  void unpark_joiner(task_record* t) noexcept;

 protected:
  std::atomic<int> refs_{2};
  std::atomic<bool> done_{false};
  spinlock mu_;
  task_record* joiner_ = nullptr;
  std::exception_ptr error_;
};

template <class T>
class join_state : public join_state_base {
 public:
  template <class U>
  void set_value(U&& v) {
    value_.emplace(std::forward<U>(v));
  }
  void set_error(std::exception_ptr e) noexcept { error_ = std::move(e); }
  T take() {
    if (error_) std::rethrow_exception(error_);
    return std::move(*value_);
  }

 private:
  std::optional<T> value_;
};

template <>
class join_state<void> : public join_state_base {
 public:
  void set_error(std::exception_ptr e) noexcept { error_ = std::move(e); }
  void take() {
    if (error_) std::rethrow_exception(error_);
  }
};

template <class T>
struct join_ref {
  join_state<T>* p;
  explicit join_ref(join_state<T>* s) noexcept : p(s) {}
  join_ref(join_ref&& o) noexcept : p(std::exchange(o.p, nullptr)) {}
  join_ref(const join_ref&) = delete;
  ~join_ref() {
    if (p != nullptr) join_state_base::release(p);
  }
  join_state<T>* operator->() const noexcept { return p; }
};

template <class T, class F, class... A>
root_task spawn_body(join_ref<T> st, F f, A... a) {
  try {
    auto t = std::invoke(std::move(f), std::move(a)...);
    if constexpr (std::is_void_v<T>) {
      co_await std::move(t);
    } else {
      st->set_value(co_await std::move(t));
    }
  } catch (...) {
    st->set_error(std::current_exception());
  }
  st->complete();
}

template <class T>
struct main_slot {
  std::optional<T> value;
  std::exception_ptr error;
  T take() {
    if (error) std::rethrow_exception(error);
    return std::move(*value);
  }
};
template <>
struct main_slot<void> {
  std::exception_ptr error;
  void take() const {
    if (error) std::rethrow_exception(error);
  }
};

template <class T, class F>
root_task main_body(main_slot<T>* out, F* f) {
  try {
    auto t = (*f)();
    if constexpr (std::is_void_v<T>) {
      co_await std::move(t);
    } else {
      out->value.emplace(co_await std::move(t));
    }
  } catch (...) {
    out->error = std::current_exception();
  }
}

}  // namespace detail

// join_handle<T>: the result of spawn(). join() suspends until the task finishes
// and returns its value or rethrows its exception. Dropping the handle detaches
// the task. Go: a goroutine plus the channel you would make to get its result.
template <class T>
class join_handle {
 public:
  join_handle() noexcept = default;
  explicit join_handle(detail::join_state<T>* s) noexcept : s_(s) {}
  join_handle(join_handle&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  join_handle& operator=(join_handle&& o) noexcept {
    if (this != &o) {
      reset();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  join_handle(const join_handle&) = delete;
  join_handle& operator=(const join_handle&) = delete;
  ~join_handle() { reset(); }

  // True once the task has finished (join() would not suspend).
  bool done() const noexcept { return s_ != nullptr && s_->done(); }
  bool valid() const noexcept { return s_ != nullptr; }

 protected:
  detail::join_state<T>* state() const noexcept { return s_; }

 public:
  class join_awaiter {
   public:
    explicit join_awaiter(detail::join_state<T>* s) noexcept : s_(s) {}
    join_awaiter(const join_awaiter&) = delete;
    join_awaiter& operator=(const join_awaiter&) = delete;
    ~join_awaiter() {
      if (parked_ != nullptr) s_->unpark_joiner(parked_);  // frame destroyed at shutdown
    }
    bool await_ready() const noexcept { return s_->done(); }
    [[gnu::noinline]] bool await_suspend(std::coroutine_handle<> h) {
      detail::task_record* t = detail::require_task("join_handle::join");
      parked_ = t;
      if (!s_->park_joiner(t, h)) {
        parked_ = nullptr;
        return false;
      }
      return true;
    }
    T await_resume() {
      parked_ = nullptr;
      return s_->take();
    }

   private:
    detail::join_state<T>* s_;
    detail::task_record* parked_ = nullptr;
  };

  // Waits for the task. Call at most once. Go: `<-done` on a result channel.
  join_awaiter join() {
    if (s_ == nullptr) throw std::logic_error("sluice::join_handle::join: empty handle");
    return join_awaiter(s_);
  }

 private:
  void reset() noexcept {
    if (s_ != nullptr) detail::join_state_base::release(std::exchange(s_, nullptr));
  }
  detail::join_state<T>* s_ = nullptr;
};

// go(f, args...): starts f(args...) as a detached task. f must return a task.
// Must be called from inside a runtime. Go: `go f(args...)`.
template <class F, class... Args>
struct go {
  explicit go(F&& f, Args&&... args,
              const detail::source_location loc = detail::source_location::current()) {
    using fn = detail::decay_t<F>;
    static_assert(detail::is_task<detail::invoke_task_t<F, Args...>>::value,
                  "sluice::go: the callable must return sluice::task<T>");
    detail::task_origin o = detail::make_origin<fn>(detail::task_kind::go, loc);
    o.entry_address = detail::entry_address<fn>(f);
    detail::start_task(
        detail::go_body<fn, detail::decay_t<Args>...>(std::forward<F>(f),
                                                      std::forward<Args>(args)...),
        o);
  }
};
template <class F, class... Args>
go(F&&, Args&&...) -> go<F, Args...>;

template <class F, class... Args>
using spawn_result_t = typename detail::invoke_task_t<F, Args...>::value_type;

// spawn(f, args...): starts f(args...) as a task and returns a join_handle for
// its result. Must be called from inside a runtime.
template <class F, class... Args>
struct spawn : join_handle<spawn_result_t<F, Args...>> {
  using value_type = spawn_result_t<F, Args...>;
  explicit spawn(F&& f, Args&&... args,
                 const detail::source_location loc = detail::source_location::current())
      : join_handle<value_type>(new detail::join_state<value_type>()) {
    using fn = detail::decay_t<F>;
    static_assert(detail::is_task<detail::invoke_task_t<F, Args...>>::value,
                  "sluice::spawn: the callable must return sluice::task<T>");
    detail::task_origin o = detail::make_origin<fn>(detail::task_kind::spawn, loc);
    o.entry_address = detail::entry_address<fn>(f);
    detail::join_state<value_type>* s = this->state();
    detail::start_task(detail::spawn_body<value_type, fn, detail::decay_t<Args>...>(
                           detail::join_ref<value_type>(s), std::forward<F>(f),
                           std::forward<Args>(args)...),
                       o);
  }
};
template <class F, class... Args>
spawn(F&&, Args&&...) -> spawn<F, Args...>;

// A runtime with explicit options. run() may be called once per runtime object.
class runtime {
 public:
  explicit runtime(runtime_options opts = {});
  runtime(const runtime&) = delete;
  runtime& operator=(const runtime&) = delete;
  ~runtime();

  // Runs f() (which returns task<T>) as the main task; returns its result or
  // rethrows its exception once it finishes. Go: the program's main().
  template <class F>
  auto run(F&& f) {
    using T = typename std::invoke_result_t<F&>::value_type;
    detail::main_slot<T> slot;
    auto fp = std::addressof(f);
    detail::task_origin o =
        detail::make_origin<std::decay_t<F>>(detail::task_kind::run, detail::source_location::current());
    run_main(detail::main_body<T, std::remove_reference_t<F>>(&slot, fp), o);
    return slot.take();
  }

 private:
  void run_main(detail::root_task main, const detail::task_origin& origin);
  runtime_options opts_;
  bool used_ = false;
};

// Runs f's task on a new runtime with default options. See runtime::run.
template <class F>
auto run(F&& f) {
  runtime rt;
  return rt.run(std::forward<F>(f));
}

// Suspends the current task and lets others run (Go: runtime.Gosched()).
class yield_awaiter {
 public:
  yield_awaiter() noexcept = default;
  bool await_ready() const noexcept { return false; }
  [[gnu::noinline]] void await_suspend(std::coroutine_handle<> h) const;
  void await_resume() const noexcept {}
};
inline yield_awaiter yield() noexcept { return yield_awaiter(); }

// Number of live tasks in the current runtime, the main task included; 0 outside
// a runtime. Go: runtime.NumGoroutine().
std::size_t num_tasks() noexcept;

// True when called from a task of a running runtime.
bool in_runtime() noexcept;

}  // namespace sluice
