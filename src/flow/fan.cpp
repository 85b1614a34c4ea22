// fan: the argument checks of fan_in, fan_out and for_each (the patterns
// themselves are templates in include/sluice/fan.hpp).
#include <sluice/fan.hpp>

#include <stdexcept>
#include <string>

namespace sluice::detail {

std::int64_t checked_fan_in_capacity(std::size_t out_capacity) {
  constexpr std::size_t max = static_cast<std::size_t>(chan_state<int>::max_capacity);
  if (out_capacity > max) {
    throw std::invalid_argument("sluice::fan_in: out_capacity must be <= 2^30 (got " +
                                std::to_string(out_capacity) + ")");
  }
  return static_cast<std::int64_t>(out_capacity);
}

void check_fan_out_workers(int workers) {
  if (workers < 1) {
    throw std::invalid_argument("sluice::fan_out: workers must be >= 1 (got " +
                                std::to_string(workers) + ")");
  }
}

void check_for_each_limit(std::int64_t limit) {
  if (limit < 1) {
    throw std::invalid_argument("sluice::for_each: limit must be >= 1 (got " +
                                std::to_string(limit) + ")");
  }
}

}  // namespace sluice::detail
