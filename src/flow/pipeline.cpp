// pipeline: the non-template parts of stage()/filter()/generate() (option
// checks). The stages are templates in include/sluice/pipeline.hpp; the
// channels that join their tasks, and who closes each, are described there.
#include <sluice/pipeline.hpp>

#include <stdexcept>
#include <string>

namespace sluice::detail {

void check_stage_options(const stage_options& o, const char* who) {
  if (o.workers < 1) {
    throw std::invalid_argument(std::string(who) + ": workers must be >= 1 (got " +
                                std::to_string(o.workers) + ")");
  }
  if (o.out_capacity < 0 || o.out_capacity > chan_state<int>::max_capacity) {
    throw std::invalid_argument(std::string(who) + ": out_capacity must be in [0, 2^30] (got " +
                                std::to_string(o.out_capacity) + ")");
  }
}

void check_source_capacity(std::int64_t capacity) {
  if (capacity < 0 || capacity > chan_state<int>::max_capacity) {
    throw std::invalid_argument("sluice::generate: out_capacity must be in [0, 2^30] (got " +
                                std::to_string(capacity) + ")");
  }
}

void require_runtime_for(const char* who) {
  if (!in_runtime()) throw std::logic_error(std::string(who) + " must be called from a task");
}

}  // namespace sluice::detail
