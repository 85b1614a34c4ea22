// rate: x/time/rate's token bucket, formula for formula.
//
// State (guarded by mu_): limit_, burst_, tokens_, last_, last_event_.
// Invariants:
//   * limit_ >= 0 and not NaN; inf is stored as DBL_MAX, Go's rate.Inf, because
//     Go computes with that value (elapsed seconds × DBL_MAX is finite for
//     elapsed < 1 s and 0 for elapsed 0, where +inf would give inf and NaN);
//   * burst_ >= 0 (the limit-0 path lowers it by n only when burst_ >= n);
//   * tokens_ <= burst_ right after every advance; it may exceed a burst that
//     set_burst_at lowered until the next advance caps it (Go's behaviour);
//   * last_ is the zero time (before any time_point) until the first update,
//     then the t of the last update, which can go backwards;
//   * times are wide (128-bit ns) so that Go's Time.Add never overflows here
//     either; they are narrowed only by reservation::time_to_act().
//
// Why every formula is spelled out: to return Go's bits, each floating-point
// operation must be the same, in the same order, with nothing fused. Go on
// amd64 does not fuse multiply-add; this file is compiled with
// -ffp-contract=off (CMakeLists.txt) so neither does the C++ compiler.
//
// The lock: a spinlock, because every critical section is a few dozen
// nanoseconds of arithmetic that never blocks or allocates, and allow() must
// stay far below the cost of a futex round trip (Go's sync.Mutex fast path is
// an atomic too). wait_n never holds it across a suspension.
#include <sluice/rate.hpp>
#include <sluice/keyed_limiter.hpp>
#include <sluice/select.hpp>

#include <cmath>
#include <cstdio>
#include <mutex>
#include <ostream>
#include <stdexcept>
#include <string>

namespace sluice::rate {

namespace {

using detail::wide_ns;

constexpr double go_inf = std::numeric_limits<double>::max();
constexpr std::int64_t max_ns = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t min_ns = std::numeric_limits<std::int64_t>::min();

// Go's zero time.Time: long before any time_point, so the first refill sees a
// saturated elapsed time and fills the bucket.
constexpr wide_ns zero_time = -(wide_ns(1) << 100);

constexpr wide_ns wide(clock::time_point t) noexcept { return t.time_since_epoch().count(); }

// Go's t.Sub(u): the difference in ns, saturated to the int64 range.
constexpr std::int64_t sub(wide_ns t, wide_ns u) noexcept {
  const wide_ns d = t - u;
  if (d > max_ns) return max_ns;
  if (d < min_ns) return min_ns;
  return static_cast<std::int64_t>(d);
}

// Go's time.Duration(x): truncates toward zero. Out of range the Go spec leaves
// the result to the platform; we saturate as Go on arm64 does (NaN, which no
// call here can produce, gives 0 as there).
std::int64_t duration_from_float(double x) noexcept {
  if (std::isnan(x)) return 0;
  if (x >= 9223372036854775808.0) return max_ns;  // 2^63
  if (x < -9223372036854775808.0) return min_ns;
  return static_cast<std::int64_t>(x);
}

// Go's Limit.tokensFromDuration.
double tokens_from_duration(double limit, std::int64_t d) noexcept {
  if (limit <= 0) return 0;
  const double secs = detail::go_seconds(clock::duration(d));
  return secs * limit;
}

// Go's Limit.durationFromTokens.
std::int64_t duration_from_tokens(double limit, double tokens) noexcept {
  if (limit <= 0) return max_ns;
  const double secs = tokens / limit;
  const double ns = 1e9 * secs;
  return duration_from_float(ns);
}

// Go's Limiter.advance on bare state: the tokens at t, given `tokens` at
// `last` (the limiter's and keyed_limiter's per-key buckets both use it).
double advance_tokens(double tokens, wide_ns last, double limit, int burst_count, wide_ns t) noexcept {
  if (t < last) last = t;
  const std::int64_t elapsed = sub(t, last);
  const double burst = static_cast<double>(burst_count);
  // Fast path, for the busy limiter whose bucket refills to the brim between
  // calls: when even a lower bound of Go's delta fills it, the result is the
  // burst and Go's exact delta (with its division) is not needed. Why `low`
  // is <= Go's delta: Go's seconds S = fl(sec + fl(nsec / 1e9)) is within two
  // roundings (factor (1 - 2^-53)^2) of elapsed / 1e9, while
  // a = fl(fl(elapsed) × fl(1e-9 × (1 - 1e-12))) is at most
  // elapsed / 1e9 × (1 - 1e-12) × (1 + 2^-53)^3, which is smaller; so a <= S,
  // and rounding is monotonic, so low = fl(a × limit) <= fl(S × limit) = delta
  // (subnormals included), and fl(tokens + low) <= fl(tokens + delta): if
  // the former exceeds the burst, so does Go's sum, which Go then caps.
  if (limit > 0) {
    constexpr double below_1e9th = 1e-9 * (1 - 1e-12);
    const double a = static_cast<double>(elapsed) * below_1e9th;
    const double low = a * limit;
    if (tokens + low > burst) return burst;
  }
  tokens += tokens_from_duration(limit, elapsed);
  if (tokens > burst) tokens = burst;
  return tokens;
}

double go_limit(limit r) noexcept { return r == inf ? go_inf : r.value(); }

[[noreturn]] void throw_invalid(const char* what, const std::string& detail) {
  throw std::invalid_argument(std::string("sluice::rate::limiter::") + what + ": " + detail);
}

void check_limit(limit r, const char* what) {
  if (std::isnan(r.value()) || r.value() < 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", r.value());
    throw_invalid(what, std::string("limit must be >= 0 events per second (got ") + buf + ")");
  }
}

void check_burst(int b, const char* what) {
  if (b < 0) throw_invalid(what, "burst must be >= 0 (got " + std::to_string(b) + ")");
}

[[gnu::noinline]] void throw_negative_n(const char* what, int n) {
  throw_invalid(what, "n must be >= 0 (got " + std::to_string(n) + ")");
}

}  // namespace

std::ostream& operator<<(std::ostream& os, limit r) {
  if (r == inf) return os << "inf";
  return os << r.value() << "/s";
}

// ---- reservation ---------------------------------------------------------------

clock::duration reservation::delay_from(clock::time_point t) const noexcept {
  if (!ok_) return inf_duration;
  const std::int64_t d = sub(time_to_act_, wide(t));
  return clock::duration(d < 0 ? 0 : d);
}

clock::time_point reservation::time_to_act() const noexcept {
  if (!ok_) return clock::time_point::max();
  if (time_to_act_ > max_ns) return clock::time_point::max();
  if (time_to_act_ < min_ns) return clock::time_point::min();
  return clock::time_point(clock::duration(static_cast<std::int64_t>(time_to_act_)));
}

// Go's CancelAt. The tokens reserved after this reservation are estimated from
// how far the limiter's latest event lies beyond our time to act; those stay
// taken.
void reservation::cancel_at(clock::time_point at) {
  if (!ok_) return;
  const wide_ns t = wide(at);
  std::lock_guard<sluice::detail::spinlock> hold(lim_->mu_);
  if (lim_->limit_ == go_inf || tokens_ == 0 || time_to_act_ < t) return;
  const double later = tokens_from_duration(limit_, sub(lim_->last_event_, time_to_act_));
  const double restore = static_cast<double>(tokens_) - later;
  if (restore <= 0) return;
  limiter::advanced a = lim_->advance_locked(t);
  a.tokens += restore;
  const double burst = static_cast<double>(lim_->burst_);
  if (a.tokens > burst) a.tokens = burst;
  lim_->last_ = a.t;
  lim_->tokens_ = a.tokens;
  if (time_to_act_ == lim_->last_event_) {
    // We were the latest event: the latest is now the one before us, if it is
    // not already past.
    const wide_ns prev = time_to_act_ + duration_from_tokens(limit_, static_cast<double>(-tokens_));
    if (!(prev < a.t)) lim_->last_event_ = prev;
  }
}

// ---- limiter -------------------------------------------------------------------

limiter::limiter(rate::limit r, int burst)
    : limit_(go_limit(r)), burst_(burst), last_(zero_time), last_event_(zero_time) {
  check_limit(r, "limiter");
  check_burst(burst, "limiter");
}

rate::limit limiter::limit() const noexcept {
  std::lock_guard<sluice::detail::spinlock> hold(mu_);
  return rate::limit(limit_);
}

int limiter::burst() const noexcept {
  std::lock_guard<sluice::detail::spinlock> hold(mu_);
  return burst_;
}

// Go's advance: the state at t from the passage of time since last_, without
// changing anything. Requires mu_.
limiter::advanced limiter::advance_locked(wide_ns t) const noexcept {
  return {t, advance_tokens(tokens_, last_, limit_, burst_, t)};
}

// Go's reserveN: allow_n (max_wait 0), reserve_n (inf) and wait_n (until the
// deadline) all come here. Requires mu_.
reservation limiter::reserve_locked(wide_ns t, int n, std::int64_t max_wait_ns) noexcept {
  reservation r;
  r.lim_ = this;
  if (limit_ == go_inf) {
    r.ok_ = true;
    r.tokens_ = n;
    r.time_to_act_ = t;
    return r;
  }
  if (limit_ == 0) {
    if (burst_ >= n) {
      r.ok_ = true;
      burst_ -= n;
    }
    r.tokens_ = burst_;
    r.time_to_act_ = t;
    return r;
  }
  advanced a = advance_locked(t);
  a.tokens -= static_cast<double>(n);
  std::int64_t wait = 0;
  if (a.tokens < 0) wait = duration_from_tokens(limit_, -a.tokens);
  r.ok_ = n <= burst_ && wait <= max_wait_ns;
  r.limit_ = limit_;
  if (r.ok_) {
    r.tokens_ = n;
    r.time_to_act_ = a.t + wait;
    last_ = a.t;
    tokens_ = a.tokens;
    last_event_ = r.time_to_act_;
  } else {
    r.time_to_act_ = zero_time;
  }
  return r;
}

double limiter::tokens_at(clock::time_point t) const noexcept {
  std::lock_guard<sluice::detail::spinlock> hold(mu_);
  return advance_locked(wide(t)).tokens;
}

bool limiter::allow_n(clock::time_point t, int n) {
  if (n < 0) throw_negative_n("allow_n", n);
  mu_.lock();
  const bool ok = reserve_locked(wide(t), n, 0).ok_;
  mu_.unlock();
  return ok;
}

reservation limiter::reserve_n(clock::time_point t, int n) {
  if (n < 0) throw_negative_n("reserve_n", n);
  std::lock_guard<sluice::detail::spinlock> hold(mu_);
  return reserve_locked(wide(t), n, max_ns);
}

task<std::error_code> limiter::wait_n(const context& ctx, int n) {
  if (n < 0) throw_negative_n("wait_n", n);  // here, not in the coroutine: throws at the call
  return wait_waiting(ctx, n);
}

// Go's wait(), check for check. `now` is read once, first, as Go does.
task<std::error_code> limiter::wait_waiting(context ctx, int n) {
  const clock::time_point now = clock::now();
  mu_.lock();
  const int burst = burst_;
  const double lim = limit_;
  mu_.unlock();
  if (n > burst && lim != go_inf) co_return make_error_code(errc::exceeds_burst);
  if (std::error_code e = ctx.err()) co_return e;
  std::int64_t max_wait = max_ns;
  if (const auto deadline = ctx.deadline()) max_wait = sub(wide(*deadline), wide(now));
  mu_.lock();
  reservation r = reserve_locked(wide(now), n, max_wait);
  mu_.unlock();
  if (!r.ok()) co_return make_error_code(errc::would_exceed_deadline);
  const clock::duration delay = r.delay_from(now);
  if (delay == clock::duration::zero()) co_return std::error_code{};
  auto woken = sluice::select(sluice::at(sluice::detail::saturating_add(now, delay)), sluice::done(ctx));
  const auto which = co_await woken;
  if (which.index() == 0) co_return std::error_code{};
  // The context won: give the tokens back, which may let others go sooner.
  r.cancel();
  co_return ctx.err();
}

void limiter::set_limit_at(clock::time_point t, rate::limit r) {
  check_limit(r, "set_limit_at");
  std::lock_guard<sluice::detail::spinlock> hold(mu_);
  const advanced a = advance_locked(wide(t));
  last_ = a.t;
  tokens_ = a.tokens;
  limit_ = go_limit(r);
}

void limiter::set_burst_at(clock::time_point t, int b) {
  check_burst(b, "set_burst_at");
  std::lock_guard<sluice::detail::spinlock> hold(mu_);
  const advanced a = advance_locked(wide(t));
  last_ = a.t;
  tokens_ = a.tokens;
  burst_ = b;
}

}  // namespace sluice::rate

// ---- keyed_limiter's per-key bucket ------------------------------------------------

namespace sluice::detail {

rate::verdict rate_bucket_take(rate_bucket& b, double limit, int burst, std::int64_t t, int n) noexcept {
  rate::verdict v;
  double tokens = rate::advance_tokens(b.tokens, b.last_ns, limit, burst, t);
  const double after = tokens - static_cast<double>(n);
  std::int64_t wait = 0;
  if (after < 0) wait = rate::duration_from_tokens(limit, -after);
  // Go's reserveN with maxFutureReserve 0: ok only if nothing needs waiting.
  v.allowed = n <= burst && wait <= 0;
  if (v.allowed) {
    b.tokens = after;
    b.last_ns = t;
    tokens = after;
    v.retry_after = clock::duration::zero();
  } else {
    v.retry_after = n > burst ? rate::inf_duration : clock::duration(wait);
  }
  v.remaining = tokens;
  const double missing = static_cast<double>(burst) - tokens;
  v.reset = missing > 0 ? clock::duration(rate::duration_from_tokens(limit, missing))
                        : clock::duration::zero();
  return v;
}

double rate_bucket_tokens(const rate_bucket& b, double limit, int burst, std::int64_t t) noexcept {
  return rate::advance_tokens(b.tokens, b.last_ns, limit, burst, t);
}

void check_keyed_limit(rate::limit r, int burst) {
  if (std::isnan(r.value()) || r.value() <= 0) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", r.value());
    throw std::invalid_argument(
        std::string("sluice::rate::keyed_limiter: limit must be > 0 events per second (got ") + buf +
        "); a per-key limit of 0 would let each key spend its burst once and then refuse it "
        "until it is evicted");
  }
  if (burst < 0) {
    throw std::invalid_argument("sluice::rate::keyed_limiter: burst must be >= 0 (got " +
                                std::to_string(burst) + ")");
  }
}

}  // namespace sluice::detail
