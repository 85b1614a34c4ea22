// pubsub: the non-template parts of broker<T> (option checks, limit errors).
// The broker itself is a template in include/sluice/pubsub.hpp; its invariants
// are stated on detail::broker_state there.
#include <sluice/pubsub.hpp>

#include <stdexcept>
#include <string>

namespace sluice {

const char* to_string(overflow_policy p) noexcept {
  switch (p) {
    case overflow_policy::block: return "block";
    case overflow_policy::drop_newest: return "drop_newest";
    case overflow_policy::drop_oldest: return "drop_oldest";
    case overflow_policy::disconnect: return "disconnect";
  }
  return "unknown";
}

namespace detail {

void check_subscribe_options(const subscribe_options& o) {
  if (o.buffer < 1 || o.buffer > chan_state<int>::max_capacity) {
    throw std::invalid_argument("sluice::broker::subscribe: buffer must be in [1, 2^30] (got " +
                                std::to_string(o.buffer) + ")");
  }
  switch (o.policy) {
    case overflow_policy::block:
    case overflow_policy::drop_newest:
    case overflow_policy::drop_oldest:
    case overflow_policy::disconnect:
      break;
    default:
      throw std::invalid_argument("sluice::broker::subscribe: unknown overflow_policy " +
                                  std::to_string(static_cast<int>(o.policy)));
  }
  if (o.block_timeout < clock::duration::zero()) {
    throw std::invalid_argument("sluice::broker::subscribe: negative block_timeout");
  }
}

void check_broker_options(const broker_options& o) {
  if (o.max_topics < 1) {
    throw std::invalid_argument("sluice::broker: max_topics must be >= 1 (got " +
                                std::to_string(o.max_topics) + ")");
  }
  if (o.max_subscribers_per_topic < 1) {
    throw std::invalid_argument("sluice::broker: max_subscribers_per_topic must be >= 1 (got " +
                                std::to_string(o.max_subscribers_per_topic) + ")");
  }
}

void throw_topic_limit(std::int64_t max_topics) {
  throw broker_limit_exceeded("sluice::broker::subscribe: a new topic would exceed max_topics (" +
                              std::to_string(max_topics) + ")");
}

void throw_subscriber_limit(std::string_view topic, std::int64_t max) {
  throw broker_limit_exceeded("sluice::broker::subscribe: topic \"" + std::string(topic) +
                              "\" already has max_subscribers_per_topic (" + std::to_string(max) +
                              ") subscribers");
}

}  // namespace detail

}  // namespace sluice
