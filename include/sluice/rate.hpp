// rate: token-bucket rate limiting with the semantics of golang.org/x/time/rate.
//
// A limiter holds a bucket of `burst` tokens, full at the start and refilled at
// `limit` tokens per second. Every event costs one token (n events cost n).
// Three ways to spend them, by what you want to happen when tokens are short:
//
//   * drop the event:       if (!lim.allow()) return reject();        Go: lim.Allow()
//   * delay the event:      auto r = lim.reserve(); act after r.delay()  Go: lim.Reserve()
//   * wait for the tokens:  if (auto ec = co_await lim.wait(ctx)) ... Go: lim.Wait(ctx)
//
// Every time-dependent call has a twin that takes the time (`allow_n(t, n)`,
// `reserve_n(t, n)`, `tokens_at(t)`, `set_limit_at(t, r)`, ...), so tests and
// simulations never read the clock; the short forms read sluice::clock once.
// Results are those of Go's limiter, bit for bit: the same float formulas in
// the same order (tests/rate_diff replays random call sequences against the
// real Go package and compares every result).
//
// All calls are thread-safe. All calls except wait/wait_n work outside a
// running runtime; wait/wait_n must be awaited from a task and suspend the
// task, never the thread.
//
// Argument rules (Go checks none of these; where Go's behaviour is defined we
// keep it, where it is an accident of the code and the value is a caller's
// mistake we throw std::invalid_argument instead):
//
//   | value                   | here                              | Go                                   |
//   |-------------------------|-----------------------------------|--------------------------------------|
//   | burst == 0              | allows nothing, unless limit inf  | same (documented)                    |
//   | burst < 0               | std::invalid_argument             | accepted: refuses all, even n == 0,  |
//   |                         |                                   | unless limit inf; tokens() < 0       |
//   | limit == 0              | only the burst, once (see below)  | same (documented: "allows no events")|
//   | limit < 0 or NaN        | std::invalid_argument             | accepted: never refills, starts      |
//   |                         |                                   | empty, reservations wait ~292 years  |
//   | limit >= DBL_MAX, +inf  | both are rate::inf                | only math.MaxFloat64 is Inf          |
//   | n == 0                  | takes nothing; allowed unless the | same                                 |
//   |                         | bucket is in debt (reservations)  |                                      |
//   | n > burst               | not allowed / not ok              | same                                 |
//   | n < 0                   | std::invalid_argument             | accepted: gives tokens back, and     |
//   |                         |                                   | with limit 0 raises the burst        |
//
// Two more places where Go leaves the result to the platform:
//   * a wait longer than 2^63 ns (a tiny limit, or a big deficit) saturates at
//     inf_duration, as Go does on arm64; on amd64 Go's float-to-int conversion
//     overflows to math.MinInt64 and the reservation acts immediately;
//   * Go's time.Time spans billions of years, clock::time_point about ±292
//     years. Internally times are kept wider, so results match Go even when a
//     reservation's time to act lies beyond the clock's range; only
//     reservation::time_to_act() clamps it to time_point::max()/min().
#pragma once

#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/task.hpp>

#include <compare>
#include <cstdint>
#include <iosfwd>
#include <limits>
#include <ratio>
#include <system_error>
#include <type_traits>

namespace sluice::rate {

static_assert(std::is_same_v<clock::duration::period, std::nano>,
              "sluice::rate computes in nanoseconds, like Go's time.Duration");

// ---- limit ---------------------------------------------------------------------

// limit: a rate of events per second, as a strong type over double. Go: rate.Limit.
//
// A default-constructed limit is 0 (Go's zero Limit): no events beyond the
// burst. Every value at or above the largest finite double is stored as
// +infinity, so `limit(DBL_MAX)` (Go's spelling of Inf) and `limit(HUGE_VAL)`
// both equal rate::inf.
class limit {
 public:
  constexpr limit() noexcept = default;
  constexpr explicit limit(double events_per_second) noexcept
      : v_(events_per_second >= std::numeric_limits<double>::max()
               ? std::numeric_limits<double>::infinity()
               : events_per_second) {}

  // Events per second; +infinity for rate::inf.
  constexpr double value() const noexcept { return v_; }

  friend constexpr bool operator==(limit, limit) noexcept = default;
  friend constexpr std::partial_ordering operator<=>(limit, limit) noexcept = default;

 private:
  double v_ = 0;
};

// Prints "10/s", or "inf".
std::ostream& operator<<(std::ostream& os, limit r);

// The infinite rate: allows every event, whatever the burst. Go: rate.Inf.
inline constexpr limit inf{std::numeric_limits<double>::infinity()};

// What reservation::delay() returns when the reservation is not ok: "never".
// Go: rate.InfDuration.
inline constexpr clock::duration inf_duration = clock::duration::max();

}  // namespace sluice::rate

namespace sluice::detail {
// Go's Duration.Seconds(), with its evaluation order (whole seconds and the
// remainder converted separately), so every later product rounds as Go's does.
constexpr double go_seconds(clock::duration d) noexcept {
  const std::int64_t ns = d.count();
  const std::int64_t sec = ns / 1'000'000'000;
  const std::int64_t nsec = ns % 1'000'000'000;
  return static_cast<double>(sec) + static_cast<double>(nsec) / 1e9;
}

// Nanoseconds since the clock's epoch, wide enough for Go's time arithmetic
// (time_point + inf_duration, and back) to never overflow.
__extension__ typedef __int128 wide_ns;
}  // namespace sluice::detail

namespace sluice::rate {

// The limit that allows one event every `interval`; inf if interval <= 0.
// every(100ms) == limit(10). Go: rate.Every(interval).
constexpr limit every(clock::duration interval) noexcept {
  if (interval <= clock::duration::zero()) return inf;
  return limit(1 / sluice::detail::go_seconds(interval));
}

// ---- reservation ---------------------------------------------------------------

class limiter;

// reservation: tokens a limiter has set aside for events that may happen after
// a delay. Go: *rate.Reservation (returned by ReserveN).
//
// An ok() reservation has already taken its tokens: the holder should act after
// delay(), or cancel() to give the tokens back to the limiter. A reservation that
// is not ok took nothing; delay() is inf_duration and cancel() does nothing.
//
// It refers to its limiter (as Go's holds a pointer): the limiter must outlive
// every reservation that may still be cancelled. Copies refer to the same
// tokens; cancelling two copies is cancelling twice (as with Go's pointer), and
// Go's limiter does not detect that: the second cancel may restore tokens again.
// Immutable after creation, so a reservation may be read from any thread.
class reservation {
 public:
  // Not ok: nothing reserved. Go: the zero Reservation.
  reservation() noexcept = default;

  // Whether the limiter granted the tokens (n <= burst, or limit inf, and within
  // the maximum wait). Go: r.OK().
  bool ok() const noexcept { return ok_; }

  // How long the holder must wait from t before acting: 0 means act now;
  // inf_duration if !ok(). Go: r.DelayFrom(t).
  clock::duration delay_from(clock::time_point t) const noexcept;
  // delay_from(clock::now()). Go: r.Delay().
  clock::duration delay() const noexcept { return delay_from(clock::now()); }

  // When the reserved events may happen, clamped to the clock's range;
  // time_point::max() if !ok(). (Go keeps this unexported as timeToAct.)
  clock::time_point time_to_act() const noexcept;

  // The holder will not act: give back as many tokens as possible at time t.
  // Tokens reserved after this reservation are not given back, and nothing is
  // given back if t is after time_to_act(), if the limit is inf now, or if
  // !ok(). Go's rule, including its imprecision: when the limiter's newest
  // reservation was cancelled before and a later one acts sooner than this one,
  // the estimate can give back more than this reservation took. Go: r.CancelAt(t).
  void cancel_at(clock::time_point t);
  // cancel_at(clock::now()). Go: r.Cancel().
  void cancel() { cancel_at(clock::now()); }

 private:
  friend class limiter;

  limiter* lim_ = nullptr;
  detail::wide_ns time_to_act_ = 0;
  // The limit when reserved (Go's representation: inf is DBL_MAX); 0 when
  // the reservation came from the limit-0 or inf shortcuts, as in Go.
  double limit_ = 0;
  // Go's Reservation.tokens: n; but for the limit-0 shortcut, the burst left
  // after the reservation (Go's quirk, which its CancelAt then restores).
  int tokens_ = 0;
  bool ok_ = false;
};

// ---- limiter -------------------------------------------------------------------

// limiter: a token bucket of `burst` tokens refilled at `limit` tokens per
// second, initially full. Go: *rate.Limiter (rate.NewLimiter(r, b)).
// ("Full" the way Go fills it: by crediting the saturated ~292 years since the
// zero time, so a limit below burst / 292 years starts with fewer tokens.)
//
// Over any long enough interval at most limit × interval + burst events pass;
// a single call can take at most burst tokens (except with limit inf, which
// ignores the burst). Special limits, exactly as in Go:
//   * inf: every call succeeds immediately and the burst is ignored; no tokens
//     are taken, and cancel gives nothing back while the limit is inf;
//   * 0: never refills, and each granted call lowers the burst itself by n, so
//     the limiter allows `burst` events in total and then burst() is 0;
//     set_burst() replenishes it. The bucket is not used: tokens() stays 0.
//
// Time may go backwards: a call at an earlier time than the last update sees
// the tokens as they are (none are added). If it changes the limiter (a granted
// allow or reserve, a set_*, a cancel that gives tokens back), the refill clock
// moves back to that earlier time, so the interval up to the later time is
// credited again by the next call (Go's rule).
//
// Not copyable or movable: reservations point at it.
class limiter {
 public:
  // Throws std::invalid_argument if r is negative or NaN, or burst < 0.
  // Go: rate.NewLimiter(r, burst).
  limiter(rate::limit r, int burst);
  limiter(const limiter&) = delete;
  limiter& operator=(const limiter&) = delete;

  // The current rate. Go: lim.Limit().
  rate::limit limit() const noexcept;
  // The current burst: the most tokens one call can take. Go: lim.Burst().
  int burst() const noexcept;

  // The tokens available at t (negative while reservations are outstanding).
  // Changes nothing. Go: lim.TokensAt(t).
  [[nodiscard]] double tokens_at(clock::time_point t) const noexcept;
  // tokens_at(clock::now()). Go: lim.Tokens().
  [[nodiscard]] double tokens() const noexcept { return tokens_at(clock::now()); }

  // Takes n tokens at t if they are all available then; false (taking nothing)
  // otherwise, or if n > burst. Use it to drop events over the limit. Throws
  // std::invalid_argument if n < 0. Never blocks. Go: lim.AllowN(t, n).
  [[nodiscard]] bool allow_n(clock::time_point t, int n);
  // allow_n(clock::now(), 1). Go: lim.Allow().
  [[nodiscard]] bool allow() { return allow_n(clock::now(), 1); }

  // Takes n tokens at t, going into debt if need be, and says how long to wait
  // before acting. Not ok (and nothing taken) if n > burst (unless limit inf).
  // Throws std::invalid_argument if n < 0. Never blocks. Go: lim.ReserveN(t, n).
  reservation reserve_n(clock::time_point t, int n);
  // reserve_n(clock::now(), 1). Go: lim.Reserve().
  reservation reserve() { return reserve_n(clock::now(), 1); }

  // Suspends the task until n tokens are its own. Returns, checked in Go's order:
  //   1. errc::exceeds_burst if n > burst and the limit is not inf;
  //   2. ctx.err() if ctx is already done (even if tokens are available);
  //   3. errc::would_exceed_deadline if the tokens would come after ctx's
  //      deadline (nothing is taken);
  //   4. ctx.err() if ctx is done while waiting: the reservation is cancelled,
  //      giving its tokens back;
  //   5. an empty error_code once the tokens are available.
  // Throws std::invalid_argument (at the call) if n < 0. Must be awaited from a
  // task; the limiter must outlive the wait. Go: lim.WaitN(ctx, n).
  task<std::error_code> wait_n(const context& ctx, int n);
  // wait_n(ctx, 1). Go: lim.Wait(ctx).
  task<std::error_code> wait(const context& ctx) { return wait_n(ctx, 1); }

  // Changes the rate from t on; tokens accrued until t at the old rate are kept.
  // Reservations already made keep their delay. Throws std::invalid_argument if
  // r is negative or NaN. Go: lim.SetLimitAt(t, r).
  void set_limit_at(clock::time_point t, rate::limit r);
  // set_limit_at(clock::now(), r). Go: lim.SetLimit(r).
  void set_limit(rate::limit r) { set_limit_at(clock::now(), r); }

  // Changes the burst from t on. Tokens are refilled up to the old burst until
  // t; a lower burst caps them from the next call on. Throws
  // std::invalid_argument if b < 0. Go: lim.SetBurstAt(t, b).
  void set_burst_at(clock::time_point t, int b);
  // set_burst_at(clock::now(), b). Go: lim.SetBurst(b).
  void set_burst(int b) { set_burst_at(clock::now(), b); }

 private:
  friend class reservation;
  struct advanced {
    detail::wide_ns t;
    double tokens;
  };

  task<std::error_code> wait_waiting(context ctx, int n);
  reservation reserve_locked(detail::wide_ns t, int n, std::int64_t max_wait_ns) noexcept;
  advanced advance_locked(detail::wide_ns t) const noexcept;

  mutable sluice::detail::spinlock mu_;  // guards everything below
  double limit_;  // Go's representation: inf is DBL_MAX, as Go's rate.Inf
  int burst_;
  double tokens_ = 0;
  detail::wide_ns last_;        // when tokens_ was last brought up to date
  detail::wide_ns last_event_;  // time to act of the latest reservation (past or future)
};

}  // namespace sluice::rate
