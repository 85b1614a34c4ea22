// wait_group: wait for a collection of tasks to finish. Go: sync.WaitGroup.
//
//   sluice::wait_group wg;
//   for (auto& job : jobs) { wg.add(1); sluice::go(run_job, job, &wg); }  // run_job calls wg->done()
//   co_await wg.wait();
//
// As in Go, a wait_group may be destroyed as soon as wait() returns, even while
// the last done() call is still returning; reusing one for a new round of add()
// calls must wait until every wait() of the previous round has returned.
#pragma once

#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/task_record.hpp>
#include <sluice/detail/waiter.hpp>

#include <atomic>
#include <coroutine>
#include <cstdint>

namespace sluice {

class wait_group {
 public:
  wait_group() noexcept = default;
  wait_group(const wait_group&) = delete;
  wait_group& operator=(const wait_group&) = delete;

  // Adds delta (may be negative) to the counter; when it reaches zero every
  // waiter is woken. Throws std::invalid_argument if the counter would go
  // negative (Go panics). Go: wg.Add(delta).
  void add(std::int64_t delta);
  // add(-1). Go: wg.Done().
  void done() { add(-1); }
  // The current counter.
  std::int64_t count() const noexcept {
    return static_cast<std::int64_t>(state_.load(std::memory_order_acquire) >> 32);
  }

  class wait_awaiter {
   public:
    explicit wait_awaiter(wait_group* g) noexcept : g_(g) {}
    wait_awaiter(const wait_awaiter&) = delete;
    wait_awaiter& operator=(const wait_awaiter&) = delete;
    ~wait_awaiter();
    bool await_ready() const noexcept { return g_->count() == 0; }
    [[gnu::noinline]] bool await_suspend(std::coroutine_handle<> h);
    void await_resume() const noexcept {}

   private:
    wait_group* g_;
    detail::waiter waiter_;
    detail::wait_node node_;
  };

  // Suspends until the counter is zero. Go: wg.Wait().
  wait_awaiter wait() noexcept { return wait_awaiter(this); }

 private:
  // Counter in the high 32 bits, number of parked waiters in the low 32 (Go's
  // layout). add() touches nothing but this word unless it brings the counter
  // to zero while waiters are parked, and parked waiters keep the object alive.
  std::atomic<std::uint64_t> state_{0};
  detail::spinlock mu_;
  detail::wait_list waiters_;
};

}  // namespace sluice
