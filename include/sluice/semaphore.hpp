// semaphore: a weighted semaphore that bounds concurrent use of a resource.
// Go: golang.org/x/sync/semaphore.Weighted.
//
// Use it when work items have different costs against one budget (bytes of
// memory, connections, CPU slots): each acquire takes n units of the size given
// at construction and release gives them back.
//
//   sluice::semaphore mem(64 << 20);                      // 64 MiB budget
//   if (auto ec = co_await mem.acquire(ctx, size)) co_return ec;   // cancelled
//   auto buf = load(size);
//   mem.release(size);
//
// Waiters are served in FIFO order: a large request at the head of the queue
// blocks smaller ones behind it until enough units are free, so large requests
// cannot starve. acquire's context bounds the wait; an acquire that ends by its
// context holds no units.
#pragma once

#include <sluice/context.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/waiter.hpp>
#include <sluice/task.hpp>

#include <cstdint>
#include <system_error>

namespace sluice {

class semaphore {
 public:
  // A semaphore with `size` units, all free. Throws std::invalid_argument if
  // size < 0. Go: semaphore.NewWeighted(size).
  explicit semaphore(std::int64_t size);
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;

  // Suspends until n units are free and no earlier waiter is queued, then takes
  // them and returns an empty error_code. Returns ctx.err() (errc::canceled or
  // errc::deadline_exceeded), holding nothing, if ctx is done first, or was
  // done already when called (even if the units were free). If n exceeds the
  // size, waits for ctx to be done (it can never succeed). Throws
  // std::invalid_argument if n < 0. Must be awaited from a task.
  // Go: sem.Acquire(ctx, n).
  task<std::error_code> acquire(const context& ctx, std::int64_t n);

  // Takes n units if they are free and nobody is queued; false otherwise.
  // Never suspends. Throws std::invalid_argument if n < 0. Go: sem.TryAcquire(n).
  bool try_acquire(std::int64_t n);

  // Gives back n units and wakes the queued acquirers that now fit, in order.
  // Throws std::logic_error if more units would be released than are held,
  // std::invalid_argument if n < 0. Go: sem.Release(n).
  void release(std::int64_t n);

  // The number of units given at construction.
  std::int64_t size() const noexcept { return size_; }

 private:
  class acquire_case;

  task<std::error_code> acquire_waiting(context ctx, std::int64_t n);
  bool try_take_locked(std::int64_t n) noexcept;
  void notify_locked(detail::wake_batch& wakes) noexcept;
  void cancel_waiter(detail::wait_node& n) noexcept;

  const std::int64_t size_;
  detail::spinlock mu_;  // guards cur_ and waiters_
  std::int64_t cur_ = 0;  // units held
  detail::wait_list waiters_;  // each node's slot points at its requested units
};

}  // namespace sluice
