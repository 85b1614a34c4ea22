// concurrency_limiter: a weight-1 use of sluice::semaphore (FIFO, context-aware
// waits, no lost slot when a grant races a cancellation) plus the counters a
// load-shedding middleware exports.
#include <sluice/concurrency_limiter.hpp>

#include <stdexcept>
#include <string>

namespace sluice {

namespace {
std::int64_t checked_limit(std::int64_t n) {
  if (n < 1) {
    throw std::invalid_argument("sluice::concurrency_limiter: max_in_flight must be >= 1 (got " +
                                std::to_string(n) + ")");
  }
  return n;
}
}  // namespace

concurrency_limiter::concurrency_limiter(std::int64_t max_in_flight)
    : sem_(checked_limit(max_in_flight)) {}

bool concurrency_limiter::try_acquire() noexcept {
  if (!sem_.try_acquire(1)) {
    rejected_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  acquired_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

task<std::error_code> concurrency_limiter::acquire(context ctx) {
  const std::error_code e = co_await sem_.acquire(ctx, 1);
  if (e) {
    gave_up_.fetch_add(1, std::memory_order_relaxed);
    co_return e;
  }
  in_flight_.fetch_add(1, std::memory_order_relaxed);
  acquired_.fetch_add(1, std::memory_order_relaxed);
  co_return std::error_code{};
}

void concurrency_limiter::release() {
  // The semaphore throws std::logic_error when nothing is held; count after it.
  sem_.release(1);
  in_flight_.fetch_sub(1, std::memory_order_relaxed);
}

task<concurrency_limiter::permit> concurrency_limiter::acquire_permit(context ctx) {
  const std::error_code e = co_await acquire(ctx);
  co_return e ? permit(e) : permit(this);
}

concurrency_limiter_stats concurrency_limiter::stats() const noexcept {
  concurrency_limiter_stats s;
  s.limit = limit();
  s.in_flight = in_flight();
  s.acquired = acquired_.load(std::memory_order_relaxed);
  s.rejected = rejected_.load(std::memory_order_relaxed);
  s.gave_up = gave_up_.load(std::memory_order_relaxed);
  return s;
}

}  // namespace sluice
