// once: run an initialisation exactly once, however many tasks ask for it.
// Go: sync.Once.
//
//   sluice::once init;
//   co_await init.call([&]() -> sluice::task<void> { config = co_await load(); });
//   use(config);   // every caller gets here only after load() finished
//
// The first call runs f inside the calling task; concurrent callers suspend
// until it finishes, then return without running anything. If f throws, the
// exception reaches the caller that ran it and, as in Go (a panicking f still
// counts as done), the once is done: nobody runs f again and the others just
// return. Calling call() from inside f on the same once deadlocks (as in Go).
//
// g++ 12: give a lambda that captures by value a name before awaiting the call
// (`auto f = [p]() -> task<void> {...}; co_await once.call(f);`). A capturing
// lambda written as a temporary inside the co_await expression is destroyed
// twice by that compiler (GCC PR 100611); reference captures are harmless.
#pragma once

#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/task_record.hpp>
#include <sluice/detail/waiter.hpp>
#include <sluice/task.hpp>

#include <atomic>
#include <coroutine>
#include <functional>
#include <type_traits>
#include <utility>

namespace sluice {

class once {
 public:
  once() noexcept = default;
  once(const once&) = delete;
  once& operator=(const once&) = delete;

  // The awaitable returned by call(); it holds a decay-copy of f.
  template <class F>
  class [[nodiscard]] call_awaiter {
   public:
    call_awaiter(once* o, F f) : o_(o), f_(std::move(f)) {}
    call_awaiter(const call_awaiter&) = delete;
    call_awaiter& operator=(const call_awaiter&) = delete;
    ~call_awaiter() {
      if (node_.linked) o_->remove_waiter(node_);  // frame destroyed while parked
    }

    bool await_ready() const noexcept { return o_->done(); }

    [[gnu::noinline]] std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) {
      detail::task_record* t = detail::require_task("once::call");
      if (o_->try_begin()) {
        // We run f: as a nested task of this one, which resumes h when it ends.
        body_ = run(o_, std::move(f_));
        return body_.operator co_await().await_suspend(h);
      }
      // Computed before parking: after park() returns true nothing may touch
      // the frame (this awaiter lives in it).
      const std::coroutine_handle<> parked = std::noop_coroutine();
      if (o_->park(waiter_, node_, t, h)) return parked;
      return h;  // finished meanwhile: continue at once
    }

    void await_resume() {
      if (body_.valid()) body_.operator co_await().await_resume();  // f's exception
    }

   private:
    static task<void> run(once* o, F f) {
      try {
        // Named: no temporary in the co_await expression (GCC PR 100611).
        auto t = std::invoke(f);
        co_await std::move(t);
      } catch (...) {
        o->finish();
        throw;
      }
      o->finish();
    }

    once* o_;
    F f_;
    task<void> body_;  // set when this caller runs f
    detail::waiter waiter_;
    detail::wait_node node_;
  };

  // Runs f() (a callable returning a sluice::task) if no call has run yet, and
  // suspends until that first run has finished. Rethrows f's exception in the
  // caller that ran it. Must be awaited from a task. Go: once.Do(f).
  template <class F>
  call_awaiter<std::decay_t<F>> call(F&& f) {
    static_assert(detail::is_task<std::invoke_result_t<std::decay_t<F>&>>::value,
                  "sluice::once::call: the callable must return sluice::task<T>");
    return call_awaiter<std::decay_t<F>>(this, std::forward<F>(f));
  }

  // True once a call has finished (normally or by an exception).
  bool done() const noexcept { return state_.load(std::memory_order_acquire) == finished; }

 private:
  static constexpr int idle = 0;
  static constexpr int running = 1;
  static constexpr int finished = 2;

  bool try_begin() noexcept;
  void finish() noexcept;
  bool park(detail::waiter& w, detail::wait_node& n, detail::task_record* t,
            std::coroutine_handle<> h) noexcept;
  void remove_waiter(detail::wait_node& n) noexcept;

  std::atomic<int> state_{idle};
  detail::spinlock mu_;  // guards waiters_ and the running -> finished transition
  detail::wait_list waiters_;
};

}  // namespace sluice
