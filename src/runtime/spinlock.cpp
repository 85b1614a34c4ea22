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
  // short spin almost always wins. Exponential backoff between looks keeps the
  // waiter off the lock's cache line while the holder works (every look pulls
  // the line over from the holder's core). Past a bound the holder was probably
  // preempted (more runnable threads than cores): give the core away.
  unsigned backoff = 1;
  int rounds = 0;
  for (;;) {
    while (locked_.load(std::memory_order_relaxed)) {
      if (++rounds < 64) {
        for (unsigned i = 0; i < backoff; ++i) cpu_relax();
        if (backoff < 64) backoff <<= 1;
      } else {
        yield_thread();
      }
    }
    if (!locked_.exchange(true, std::memory_order_acquire)) return;
  }
}
}  // namespace sluice::detail
