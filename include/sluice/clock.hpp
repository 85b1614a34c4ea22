// The clock every sluice deadline, timer and rate limiter uses.
#pragma once

#include <chrono>

namespace sluice {

// Monotonic clock of the runtime (Go's monotonic time.Now()).
using clock = std::chrono::steady_clock;

namespace detail {
// t + d, saturating at the ends of the clock's range (a timeout of
// duration::max() means "never", not an overflow into the past).
constexpr clock::time_point saturating_add(clock::time_point t, clock::duration d) noexcept {
  if (d > clock::duration::zero() && t > clock::time_point::max() - d) return clock::time_point::max();
  if (d < clock::duration::zero() && t < clock::time_point::min() - d) return clock::time_point::min();
  return t + d;
}
inline clock::time_point deadline_after(clock::duration d) noexcept {
  return saturating_add(clock::now(), d);
}
}  // namespace detail

}  // namespace sluice
