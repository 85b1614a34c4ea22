// Middleware: functions that wrap a handler in another handler. Go: the
// func(http.Handler) http.Handler convention.
//
//   auto h = sluice::http::chain(mux, {
//       sluice::http::recover(log),            // outermost: sees everything
//       sluice::http::request_id(),
//       sluice::http::access_log(log),
//       sluice::http::rate_limit({.limit = 100, .burst = 200}),
//       sluice::http::concurrency_limit(512),
//       sluice::http::timeout(5s),
//   });
//   sluice::http::server srv(h);
//
// Each middleware is independent; chain() applies them so that the first in
// the list runs first (is outermost).
#pragma once

#include <sluice/clock.hpp>
#include <sluice/concurrency_limiter.hpp>
#include <sluice/http/server.hpp>
#include <sluice/keyed_limiter.hpp>
#include <sluice/rate.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sluice::http {

// A handler wrapper. Go: func(http.Handler) http.Handler.
using middleware = std::function<handler(handler)>;

// Wraps `h` in `layers`, the first one outermost. Throws std::invalid_argument
// for an empty handler or middleware.
handler chain(handler h, std::initializer_list<middleware> layers);

// Where middleware writes its lines: one line per call, no newline. Default
// (empty): stderr.
using log_sink = std::function<void(std::string_view line)>;

// An exception from the handler becomes a 500 (if the response was not yet
// streamed) and one structured log line with the method, target, request id
// and what was thrown; the connection stays usable. Go: the recover() idiom
// (net/http itself only logs and closes the connection).
middleware recover(log_sink log = {});

// Whether `id` is 1-128 characters of [A-Za-z0-9._-]: safe to echo in a
// header, a log line, a path segment or a metric label.
bool is_safe_id(std::string_view id) noexcept;

// Gives every request an id: the client's `header` value if is_safe_id
// holds for it, else a new random one. The id
// is set on the request (so later middleware and the handler read it with
// request_id()) and echoed on the response.
middleware request_id(std::string header = "X-Request-Id");
// The id request_id() gave this request ("" if that middleware is not in
// front).
std::string_view request_id(const request& req) noexcept;

// One JSON line per request: time, method, target, pattern, status, bytes,
// duration_ms, remote, request id. Go: a logging middleware with slog.
middleware access_log(log_sink log = {});

// Gives the handler a context with a deadline `d` from now (req.ctx()
// narrowed). When the handler returns after the deadline passed, its
// response is replaced by 503 `message` (Go's http.TimeoutHandler). A
// coroutine cannot be preempted: a handler that ignores its context is
// waited for; one that awaits sluice calls with req.ctx() is woken at the
// deadline. Throws std::invalid_argument for d <= 0.
middleware timeout(clock::duration d, std::string message = "handler timeout");

// Where rate_limit finds the client a request belongs to.
enum class rate_key {
  client_ip,  // the peer's IP, or X-Forwarded-For's when the peer is a trusted proxy
  api_key,    // the value of api_key_header (requests without it: by client IP)
};

// Settings of rate_limit, in this order (designated initializers).
struct rate_limit_options {
  rate::limit limit;  // per client, events per second (> 0)
  int burst = 1;      // per client (>= 1)
  rate_key key = rate_key::client_ip;
  // Peers whose X-Forwarded-For is believed: IPs ("10.0.0.1", "::1") or
  // CIDR ranges ("10.0.0.0/8", "fd00::/8"). The client is the rightmost
  // address in X-Forwarded-For that is not itself a trusted proxy. Empty:
  // X-Forwarded-For is ignored (it is trivially forged).
  std::vector<std::string> trusted_proxies;
  std::string api_key_header = "X-API-Key";
  std::size_t max_keys = 100'000;  // clients tracked at most (see keyed_limiter)
  clock::duration idle_ttl = std::chrono::minutes(3);
  // Add the RateLimit-* headers to allowed responses too (always on 429s).
  bool headers_on_success = false;
};

// A limiter shared by the middleware and whoever wants its numbers.
class client_rate_limiter {
 public:
  // Throws std::invalid_argument for a bad limit, burst < 1, or a malformed
  // trusted proxy entry.
  explicit client_rate_limiter(rate_limit_options o);
  // The key a request is limited under.
  std::string key_of(const request& req) const;
  rate::verdict check(const request& req, clock::time_point now);
  const rate_limit_options& options() const noexcept { return opts_; }
  rate::keyed_limiter_stats stats() const noexcept { return limiter_.stats(); }
  // Requests answered 429 so far.
  std::uint64_t rejected() const noexcept { return rejected_.load(std::memory_order_relaxed); }

  struct cidr;

 private:
  // Client keys are short (an IP, an API key): a hash of 8-byte words is
  // enough (keyed_limiter mixes the bits again) and cheaper than std::hash.
  struct key_hash {
    std::size_t operator()(const std::string& s) const noexcept;
  };
  bool trusted(std::string_view ip) const noexcept;
  rate_limit_options opts_;
  std::vector<std::shared_ptr<const cidr>> proxies_;
  rate::keyed_limiter<std::string, key_hash> limiter_;
  std::atomic<std::uint64_t> rejected_{0};
};

// Per-client token buckets: over the limit is 429 with Retry-After (whole
// seconds until a token is there, at least 1) and RateLimit-Limit (the
// burst), RateLimit-Remaining (tokens left, rounded down) and
// RateLimit-Reset (seconds until the bucket is full). Go: the per-IP
// x/time/rate map middleware, bounded and swept.
middleware rate_limit(rate_limit_options o);
middleware rate_limit(std::shared_ptr<client_rate_limiter> limiter);

// At most limiter->limit() requests in the wrapped handler at once; the rest
// are shed at once with 503 and Retry-After (load shedding, not queuing: a
// queue in front of an overloaded server only adds latency). The limiter's
// stats() count admitted and shed requests. Go: a semaphore middleware
// (golang.org/x/sync/semaphore.TryAcquire).
middleware concurrency_limit(std::shared_ptr<concurrency_limiter> limiter,
                             std::chrono::seconds retry_after = std::chrono::seconds(1));
// The same with a limiter of its own. Throws std::invalid_argument for 0.
middleware concurrency_limit(std::size_t max_in_flight,
                             std::chrono::seconds retry_after = std::chrono::seconds(1));

}  // namespace sluice::http
