// The one place that reads the "current worker / current task" thread-locals.
//
// Kept in its own translation unit, out of line, behind a compiler barrier:
// clang 14 at -O1+ may compute a thread_local's address once and reuse it after
// a co_await that resumed the coroutine on another thread (llvm #47179/#47177).
// A call into another TU is opaque to that optimisation.
#include "scheduler.hpp"

namespace sluice::detail {
namespace {
thread_local worker* tl_worker = nullptr;
thread_local task_record* tl_task = nullptr;
}  // namespace

[[gnu::noinline]] worker* current_worker() noexcept {
  asm volatile("" ::: "memory");
  return tl_worker;
}

[[gnu::noinline]] task_record* current_task() noexcept {
  asm volatile("" ::: "memory");
  return tl_task;
}

[[gnu::noinline]] void set_current(worker* w, task_record* t) noexcept {
  asm volatile("" ::: "memory");
  tl_worker = w;
  tl_task = t;
}

[[gnu::noinline]] scheduler* current_scheduler() noexcept {
  worker* w = current_worker();
  return w != nullptr ? w->sched : nullptr;
}

[[gnu::noinline]] timer_heap* current_timer_heap() noexcept {
  worker* w = current_worker();
  return w != nullptr ? &w->timers : nullptr;
}

}  // namespace sluice::detail
