// retry: the policy arithmetic and the context-aware sleep.
#include <sluice/retry.hpp>

#include <sluice/select.hpp>
#include <sluice/time.hpp>

#include <cmath>
#include <string>

namespace sluice {

void retry_policy::validate() const {
  if (max_attempts < 1) {
    throw std::invalid_argument("sluice::retry_policy: max_attempts must be >= 1 (got " +
                                std::to_string(max_attempts) + ")");
  }
  if (base_delay <= clock::duration::zero()) {
    throw std::invalid_argument("sluice::retry_policy: base_delay must be > 0");
  }
  if (max_delay < base_delay) {
    throw std::invalid_argument("sluice::retry_policy: max_delay must be >= base_delay");
  }
  if (!(multiplier >= 1.0) || !std::isfinite(multiplier)) {
    throw std::invalid_argument("sluice::retry_policy: multiplier must be a finite number >= 1");
  }
}

clock::duration retry_policy::cap(int attempt) const noexcept {
  // In floating point: base * multiplier^(attempt-1) overflows an integer
  // duration long before max_attempts gets large.
  const double c = static_cast<double>(base_delay.count()) *
                   std::pow(multiplier, static_cast<double>(attempt < 1 ? 0 : attempt - 1));
  if (!(c < static_cast<double>(max_delay.count()))) return max_delay;
  return clock::duration(static_cast<clock::rep>(c));
}

clock::duration retry_policy::delay(int attempt, double unit, clock::duration at_least) const noexcept {
  if (unit < 0) unit = 0;
  if (unit >= 1) unit = 0.999999999;
  const auto jittered =
      clock::duration(static_cast<clock::rep>(unit * static_cast<double>(cap(attempt).count())));
  const clock::duration floor = at_least < max_delay ? at_least : max_delay;
  return jittered > floor ? jittered : floor;
}

namespace detail {

task<std::error_code> retry_sleep(context ctx, clock::duration d) {
  if (ctx.node()->target() == nullptr) {
    co_await sleep_for(d);
    co_return std::error_code{};
  }
  auto r = co_await select(after(d), done(ctx));
  co_return r.index() == 0 ? std::error_code{} : ctx.err();
}

double retry_unit_random() noexcept {
  // 32 random bits: plenty of resolution for a jittered wait.
  return static_cast<double>(fast_rand()) / 4294967296.0;
}

clock::duration retry_after_hint(const std::exception_ptr& e) noexcept {
  try {
    std::rethrow_exception(e);
  } catch (const retry_after_error& r) {
    return r.delay() > clock::duration::zero() ? r.delay() : clock::duration::zero();
  } catch (...) {
    return clock::duration::zero();
  }
}

}  // namespace detail

}  // namespace sluice
