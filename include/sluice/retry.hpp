// retry: run an operation again after a failure, with exponential backoff and
// full jitter, a cap, a bounded number of attempts, and sleeps that end with the
// caller's context.
//
// Use it for calls to other services that fail transiently (a refused
// connection, a 503): a fixed retry interval makes every client that failed
// together retry together; full jitter (a uniformly random wait in
// [0, min(max_delay, base_delay * multiplier^(attempt-1))]) spreads them out.
//
//   sluice::retry_policy p{.max_attempts = 4, .base_delay = 50ms, .max_delay = 2s};
//   auto body = co_await sluice::retry(ctx, p, [&](int attempt) { return fetch(ctx, url, attempt); });
//
// A failure is an exception thrown by the operation. `retryable` decides which
// ones are worth another attempt (default: all); the last failure, or the first
// one that is not retryable, is rethrown. An exception derived from
// sluice::retry_after_error asks for a minimum wait (an HTTP Retry-After): the
// next wait is at least min(its delay, max_delay). Go: no standard helper; this
// is the loop Go services write around time.After and ctx.Done().
#pragma once

#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/task.hpp>

#include <cstdint>
#include <exception>
#include <functional>
#include <stdexcept>
#include <system_error>
#include <type_traits>
#include <utility>

namespace sluice {

// Thrown by an operation to ask for at least `delay` before the next attempt
// (a server's Retry-After). Retryable unless the policy's predicate says not.
class retry_after_error : public std::runtime_error {
 public:
  retry_after_error(const std::string& what, clock::duration delay)
      : std::runtime_error(what), delay_(delay) {}
  clock::duration delay() const noexcept { return delay_; }

 private:
  clock::duration delay_;
};

// How retry() waits and when it gives up; members in this order (designated
// initializers).
struct retry_policy {
  int max_attempts = 5;                                         // >= 1; 1: no retry
  clock::duration base_delay = std::chrono::milliseconds(100);  // > 0: the first wait's cap
  clock::duration max_delay = std::chrono::seconds(10);         // >= base_delay: every wait's cap
  double multiplier = 2.0;                                      // >= 1: growth of the cap per attempt
  // Whether a failure may be retried; empty: every exception is.
  std::function<bool(const std::exception_ptr&)> retryable;

  // Throws std::invalid_argument (saying which member) if the policy makes no sense.
  void validate() const;
  // The cap of the wait after failed attempt `attempt` (1-based):
  // min(max_delay, base_delay * multiplier^(attempt-1)).
  clock::duration cap(int attempt) const noexcept;
  // The wait after failed attempt `attempt` for a uniform random `unit` in
  // [0, 1): full jitter, unit * cap(attempt), at least `at_least` (a
  // Retry-After, itself capped at max_delay).
  clock::duration delay(int attempt, double unit,
                        clock::duration at_least = clock::duration::zero()) const noexcept;
};

namespace detail {
// Suspends for d or until ctx is done; returns ctx.err() in the second case.
task<std::error_code> retry_sleep(context ctx, clock::duration d);
// A uniform random number in [0, 1) (per-thread generator).
double retry_unit_random() noexcept;
// The delay a retry_after_error asks for, or zero.
clock::duration retry_after_hint(const std::exception_ptr& e) noexcept;

// What fn returns: fn(int) if it takes the attempt number, else fn().
template <class F, bool = std::is_invocable_v<F&, int>>
struct retry_result {
  using type = std::invoke_result_t<F&, int>;
};
template <class F>
struct retry_result<F, false> {
  using type = std::invoke_result_t<F&>;
};
}  // namespace detail

// Calls fn (with the 1-based attempt number if it takes an int, else with no
// argument; it returns task<T>) until it succeeds, and returns its result.
// Gives up by rethrowing the failure when it is not retryable or the last
// attempt failed; throws std::system_error with ctx.err() when ctx is done
// before an attempt or during a wait. Throws std::invalid_argument for a bad
// policy. Must be awaited from a task.
template <class F>
typename detail::retry_result<F>::type retry(context ctx, retry_policy policy, F fn) {
  policy.validate();
  for (int attempt = 1;; ++attempt) {
    if (std::error_code e = ctx.err()) throw std::system_error(e, "sluice::retry");
    std::exception_ptr failure;
    try {
      if constexpr (std::is_invocable_v<F&, int>) {
        co_return co_await fn(attempt);
      } else {
        co_return co_await fn();
      }
    } catch (...) {
      failure = std::current_exception();
    }
    if (attempt >= policy.max_attempts || (policy.retryable && !policy.retryable(failure))) {
      std::rethrow_exception(failure);
    }
    const clock::duration wait =
        policy.delay(attempt, detail::retry_unit_random(), detail::retry_after_hint(failure));
    if (std::error_code e = co_await detail::retry_sleep(ctx, wait)) {
      throw std::system_error(e, "sluice::retry: context done while waiting to retry");
    }
  }
}

}  // namespace sluice
