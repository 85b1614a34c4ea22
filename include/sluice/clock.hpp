// The clock every sluice deadline, timer and rate limiter uses.
#pragma once

#include <chrono>

namespace sluice {

// Monotonic clock of the runtime (Go's monotonic time.Now()).
using clock = std::chrono::steady_clock;

}  // namespace sluice
