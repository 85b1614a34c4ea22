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
#include <tuple>
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

// A root: the heap object behind every task started by go(), spawn(), run() or
// errgroup::go(). It holds the task's record, the decay-copied callable and
// arguments, and the task<T> made by calling one with the others; the task's
// promise points back at it (promise_base::set_root). Not a coroutine frame,
// so a parked task costs its record plus its own frames and nothing more.
struct root_base {
  task_record rec;  // first: a record converts back to its root by a cast
  // Called once: when the task's body has finished (abandoned = false, from its
  // final suspend point) or when the runtime destroys a task still alive at
  // shutdown (abandoned = true). Frees the root unless the policy keeps it.
  void (*finish)(root_base* self, bool abandoned) noexcept = nullptr;
};

// Registers the root's task and makes it runnable on the current runtime.
// Throws std::logic_error outside a runtime (the root is destroyed first).
void start_root(root_base* r, const task_origin& origin);
// The root a record belongs to.
inline root_base* root_of(task_record* t) noexcept { return reinterpret_cast<root_base*>(t); }
// Unregisters the task (called by every root's finish before it frees itself).
void unregister_root(root_base* r) noexcept;
// Reports an exception that escaped a detached task (the panic handler).
void report_task_exception(root_base* r, std::exception_ptr e) noexcept;

template <class T>
using decay_t = std::decay_t<T>;

template <class F, class... A>
using invoke_task_t = std::invoke_result_t<decay_t<F>&&, decay_t<A>&&...>;

// Policy: what happens with the result. Each provides
//   bool complete(root_base&, task<R>&) noexcept  -> true: free the root now
//   void abandon() noexcept
template <class Policy, class F, class... A>
class root final : public root_base {
 public:
  using task_type = std::invoke_result_t<F&&, A&&...>;

  template <class P, class FF, class... AA>
  explicit root(P&& policy, FF&& f, AA&&... args)
      : policy_(std::forward<P>(policy)),
        f_(std::forward<FF>(f)),
        args_(std::forward<AA>(args)...),
        // The copies are used once, so they are passed as rvalues (std::thread's
        // rule; move-only arguments work). A lambda coroutine keeps pointing at
        // f_, which lives here until the task is destroyed (t_ goes first).
        t_(std::apply([this](A&... a) { return std::invoke(std::move(f_), std::move(a)...); },
                      args_)) {
    finish = &finish_root;
    t_.handle().promise().set_root(this);
    rec.resume_point = t_.handle();
  }

  // Allocates a root from the frame allocator and builds its (not started) task.
  template <class P, class FF, class... AA>
  static root* create(P&& policy, FF&& f, AA&&... args) {
    static_assert(alignof(root) <= 16, "over-aligned callable or argument");
    void* mem = allocate_frame(sizeof(root));
    try {
      return ::new (mem) root(std::forward<P>(policy), std::forward<FF>(f), std::forward<AA>(args)...);
    } catch (...) {
      deallocate_frame(mem, sizeof(root));
      throw;
    }
  }

  // create() and make the task runnable on the current runtime.
  template <class P, class FF, class... AA>
  static void start(const task_origin& origin, P&& policy, FF&& f, AA&&... args) {
    root* r = create(std::forward<P>(policy), std::forward<FF>(f), std::forward<AA>(args)...);
    start_root(r, origin);  // on failure it calls finish(r, true)
  }

 private:
  static void finish_root(root_base* self, bool abandoned) noexcept {
    auto* r = static_cast<root*>(self);
    if (!abandoned && !r->policy_.complete(*r, r->t_)) return;
    if (abandoned) r->policy_.abandon();
    unregister_root(r);
    r->~root();
    deallocate_frame(r, sizeof(root));
  }

  Policy policy_;
  F f_;
  std::tuple<A...> args_;
  task_type t_;
};

// go(): an exception escaping the task is a panic.
struct go_policy {
  template <class T>
  bool complete(root_base& r, task<T>& t) noexcept {
    if (std::exception_ptr e = t.handle().promise().exception) report_task_exception(&r, e);
    return true;
  }
  void abandon() noexcept {}
};

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

// spawn(): the result (value or exception) goes to the join state.
template <class T>
struct spawn_policy {
  join_ref<T> st;
  explicit spawn_policy(join_state<T>* s) noexcept : st(s) {}
  template <class U>
  bool complete(root_base&, task<U>& t) noexcept {
    try {
      if constexpr (std::is_void_v<T>) {
        t.handle().promise().take();
      } else {
        st->set_value(t.handle().promise().take());
      }
    } catch (...) {
      st->set_error(std::current_exception());
    }
    st->complete();
    return true;
  }
  void abandon() noexcept {}
};

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

// Stops the runtime the main task ran on (runtime.cpp).
void main_finished(root_base& r) noexcept;

// run(): the result goes to run()'s caller; the root stays until every other
// task is destroyed, because their waits may point into main's frames.
template <class T>
struct main_policy {
  main_slot<T>* out;
  explicit main_policy(main_slot<T>* o) noexcept : out(o) {}
  template <class U>
  bool complete(root_base& r, task<U>& t) noexcept {
    try {
      if constexpr (std::is_void_v<T>) {
        t.handle().promise().take();
      } else {
        out->value.emplace(t.handle().promise().take());
      }
    } catch (...) {
      out->error = std::current_exception();
    }
    main_finished(r);
    return false;
  }
  void abandon() noexcept {}
};

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
    detail::root<detail::go_policy, fn, detail::decay_t<Args>...>::start(
        o, detail::go_policy{}, std::forward<F>(f), std::forward<Args>(args)...);
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
    detail::root<detail::spawn_policy<value_type>, fn, detail::decay_t<Args>...>::start(
        o, detail::spawn_policy<value_type>(s), std::forward<F>(f), std::forward<Args>(args)...);
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
    auto* fp = std::addressof(f);
    detail::task_origin o = detail::make_origin<std::decay_t<F>>(
        detail::task_kind::run, detail::source_location::current());
    // f stays in the caller's frame for the whole run; the root calls it there.
    auto call = [fp]() { return (*fp)(); };
    using root_t = detail::root<detail::main_policy<T>, decltype(call)>;
    run_main(root_t::create(detail::main_policy<T>(&slot), std::move(call)), o);
    return slot.take();
  }

 private:
  void run_main(detail::root_base* main, const detail::task_origin& origin);
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
