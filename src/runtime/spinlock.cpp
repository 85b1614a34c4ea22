#include <sluice/detail/spinlock.hpp>

#include <sched.h>

namespace sluice::detail {

void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

void yield_thread() noexcept { sched_yield(); }

void spinlock::lock_slow() noexcept {
  // Critical sections guarded by this lock are a few dozen instructions, so a
  // short spin almost always wins. Past that the holder was probably preempted
  // (more runnable threads than cores): give the core away instead of burning it.
  int spins = 0;
  for (;;) {
    while (locked_.load(std::memory_order_relaxed)) {
      if (++spins < 100) {
        cpu_relax();
      } else {
        yield_thread();
      }
    }
    if (!locked_.exchange(true, std::memory_order_acquire)) return;
  }
}

}  // namespace sluice::detail
