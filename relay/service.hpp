// sluice-relay's service: the HTTP API, the subscription and event stores, and
// the delivery engine (a bounded worker pool with retries, per-subscriber
// concurrency and an all-or-nothing admission queue), with the two-phase
// shutdown main() drives from SIGTERM/SIGINT.
//
//   relay::service svc(cfg, log);                    // inside a sluice runtime
//   sluice::go(serve, &svc, std::move(listener));    // co_await svc.serve(ln)
//   ...signal...
//   auto [ctx, cancel] = sluice::with_timeout(bg, cfg.shutdown_timeout);
//   relay::shutdown_report r = co_await svc.shutdown(ctx);
//
// Delivery, one event to one subscription:
//   accepted (pending) -> a worker POSTs the body (in_flight) -> 2xx: delivered;
//   5xx, 408, 429, a timeout or a connection error: pending again after a
//   backoff (full jitter, at least the subscriber's Retry-After on 429/503,
//   capped at --retry-max) until --max-attempts, then failed; another 4xx (or a
//   3xx/1xx): failed at once; still queued or in flight when the shutdown
//   deadline passes: dropped (and logged).
//
// What the queue counts: deliveries waiting to start — waiting for their
// subscription's concurrency slot, waiting in the pool for a worker, or waiting
// for a retry's backoff to pass. An event is admitted only if all of its
// deliveries fit under --queue (else 503 and nothing is enqueued). A retry
// is never refused (refusing it would lose a delivery already promised), so
// the queue can exceed --queue by at most the deliveries in flight
// (--workers) while retries are scheduled.
#pragma once

#include "config.hpp"

#include <sluice/context.hpp>
#include <sluice/net.hpp>
#include <sluice/task.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace relay {

// Where the relay writes its log lines (one JSON object per line, no newline).
// Default (empty): stdout, flushed per line.
using log_sink = std::function<void(std::string_view line)>;

// Counters of the relay (monotonic unless noted).
struct relay_stats {
  std::uint64_t events_accepted = 0;
  std::uint64_t events_rejected_queue_full = 0;   // 503: the deliveries did not fit
  std::uint64_t events_rejected_shutting_down = 0;  // 503 after the shutdown began
  std::uint64_t deliveries_delivered = 0;
  std::uint64_t deliveries_failed = 0;
  std::uint64_t deliveries_dropped = 0;
  std::uint64_t delivery_attempts = 0;
  std::uint64_t delivery_retries = 0;  // attempts scheduled after a failed one
  std::int64_t queued = 0;             // gauge: waiting to start (see above)
  std::int64_t in_flight = 0;          // gauge: being delivered now
  std::int64_t outstanding = 0;        // gauge: accepted, not yet delivered/failed/dropped
  std::size_t subscriptions = 0;       // gauge
  std::size_t events_retained = 0;     // gauge
};

// What shutdown() did.
struct shutdown_report {
  bool drained = false;  // every delivery ended before the deadline
  std::uint64_t dropped = 0;
  relay_stats stats;
};

class service {
 public:
  // Builds the API and starts the delivery pool. Must be called inside a
  // sluice runtime. Throws std::invalid_argument for a config that fails
  // validate().
  explicit service(config cfg, log_sink log = {});
  service(const service&) = delete;
  service& operator=(const service&) = delete;
  // Requires that shutdown() has finished.
  ~service();

  // Serves the API on `ln` until shutdown() closes the server.
  sluice::task<std::error_code> serve(sluice::net::tcp_listener ln);

  // Phase one (the first signal): /readyz answers 503 and new events are
  // refused with 503 + Retry-After; everything else keeps working (the
  // listener stays open). Idempotent, callable from any thread.
  void begin_shutdown() noexcept;

  // Both phases: begin_shutdown(), then lets queued and in-flight deliveries
  // run until none is left or `drain` ends; then cancels what is left, marks
  // it dropped (one log line each, then a summary line), stops the pool and
  // closes the server's connections. Returns when every task of the service
  // has ended. Call once.
  sluice::task<shutdown_report> shutdown(sluice::context drain);

  relay_stats stats() const;
  // The address serve() listens on ("" before serve()).
  std::string address() const;
  const config& options() const noexcept;

  struct state;

 private:
  std::shared_ptr<state> s_;
};

// One JSON log line: {"time": RFC 3339 UTC, "level", "msg", ...fields}
// (`fields` is an object). Exposed for main() and the tests.
std::string log_line(std::string_view level, std::string_view msg,
                     const nlohmann::json& fields = nlohmann::json::object());
// Writes `line` and a newline to stdout and flushes, one writer at a time.
void stdout_sink(std::string_view line);

}  // namespace relay
