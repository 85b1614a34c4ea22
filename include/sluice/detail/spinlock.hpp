// Internal: a small test-and-test-and-set lock for very short critical sections
// (channel state, wait lists, timer heaps). Falls back to sched_yield() after a
// bounded spin so a preempted holder cannot make a waiter burn its whole slice.
#pragma once

#include <atomic>

namespace sluice::detail {

void cpu_relax() noexcept;
void yield_thread() noexcept;

class spinlock {
 public:
  void lock() noexcept {
    // Fast path: uncontended exchange. acquire pairs with unlock's release so the
    // protected data written by the previous holder is visible.
    if (!locked_.exchange(true, std::memory_order_acquire)) return;
    lock_slow();
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  void lock_slow() noexcept;
  std::atomic<bool> locked_{false};
};

}  // namespace sluice::detail
