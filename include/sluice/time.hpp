// Sleeping and tickers. Timers live in per-worker heaps; 100,000 concurrent
// sleeps cost one heap node each and no thread.
#pragma once

#include <sluice/chan.hpp>
#include <sluice/clock.hpp>
#include <sluice/detail/task_record.hpp>
#include <sluice/detail/timer.hpp>

#include <coroutine>

namespace sluice {

class sleep_awaiter {
 public:
  explicit sleep_awaiter(clock::time_point when) noexcept : when_(when) {}
  // Relative form: reads the clock once (in await_ready), not twice.
  explicit sleep_awaiter(clock::duration d) noexcept : delay_(d), relative_(true) {}
  sleep_awaiter(const sleep_awaiter&) = delete;
  sleep_awaiter& operator=(const sleep_awaiter&) = delete;
  ~sleep_awaiter() {
    // Normally a no-op: the timer fired, and fire() touches nothing of ours
    // after it scheduled us, so there is no firing to wait out under the heap's
    // lock. Removes the timer when the frame is destroyed while asleep
    // (runtime shutdown).
    if (!node_.fired && node_.home.load(std::memory_order_acquire) != nullptr) {
      detail::timer_heap::remove(&node_);
    }
  }
  bool await_ready() noexcept {
    if (relative_) {
      if (delay_ <= clock::duration::zero()) return true;
      when_ = detail::deadline_after(delay_);
      return false;
    }
    return when_ <= clock::now();
  }
  [[gnu::noinline]] void await_suspend(std::coroutine_handle<> h);
  void await_resume() const noexcept {}

 private:
  struct node : detail::timer_node {
    detail::task_record* task = nullptr;
    // Set by fire() before it schedules the task; read by the task after it
    // resumed (ordered by the scheduler's hand-over).
    bool fired = false;
  };
  static void fire(detail::timer_node* n) noexcept;
  clock::time_point when_{};
  clock::duration delay_{};
  bool relative_ = false;
  node node_;
};

// Suspends the current task for at least `d` (no-op for d <= 0).
// Go: time.Sleep(d).
//
// Timer precision: a timer never fires early. It fires between tasks of its
// worker when that worker is busy; when a worker is idle and not polling file
// descriptors it fires up to about 50 us late, because idle workers fire the
// timers due within 50 us of each other together (Linux gives a thread's timed
// sleeps the same 50 us of slack by default). An idle worker that waits in
// epoll_wait rounds its wait up to a whole millisecond, as Go 1.19's does.
inline sleep_awaiter sleep_for(clock::duration d) noexcept { return sleep_awaiter(d); }
// Suspends the current task until `t`. Go: time.Sleep(time.Until(t)).
inline sleep_awaiter sleep_until(clock::time_point t) noexcept { return sleep_awaiter(t); }

namespace detail {
struct ticker_state;
}

// ticker delivers the time on channel() every `period`. The channel holds one
// tick: a slow reader misses ticks instead of queuing them (Go's semantics).
// Must be created inside a runtime. Go: time.NewTicker(d).
class ticker {
 public:
  // Throws std::invalid_argument if period <= 0, std::logic_error outside a runtime.
  explicit ticker(clock::duration period);
  ticker(const ticker&) = delete;
  ticker& operator=(const ticker&) = delete;
  ticker(ticker&& o) noexcept;
  ticker& operator=(ticker&& o) noexcept;
  ~ticker();

  // The tick channel. Never closed (like Go's). Go: ticker.C.
  const chan<clock::time_point>& channel() const noexcept;
  // Stops delivering ticks; idempotent. Go: ticker.Stop().
  void stop() noexcept;
  // Stops the ticker and restarts it with a new period. Go: ticker.Reset(d).
  void reset(clock::duration period);

 private:
  detail::ticker_state* s_ = nullptr;
};

}  // namespace sluice
