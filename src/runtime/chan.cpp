#include <sluice/chan.hpp>

#include <stdexcept>
#include <string>

namespace sluice::detail {

void throw_bad_capacity(std::int64_t capacity) {
  throw std::invalid_argument("sluice::chan: capacity must be in [0, 2^30], got " +
                              std::to_string(capacity));
}

}  // namespace sluice::detail
