#include "service.hpp"

#include <sluice/chan.hpp>
#include <sluice/http/client.hpp>
#include <sluice/http/json.hpp>
#include <sluice/http/metrics.hpp>
#include <sluice/http/middleware.hpp>
#include <sluice/http/router.hpp>
#include <sluice/http/server.hpp>
#include <sluice/retry.hpp>
#include <sluice/select.hpp>
#include <sluice/stats.hpp>
#include <sluice/runtime.hpp>
#include <sluice/wait_group.hpp>
#include <sluice/worker_pool.hpp>

#include <arpa/inet.h>

#include <array>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <mutex>
#include <random>
#include <stdexcept>
#include <unordered_map>
#include <utility>
#include <vector>

namespace relay {

namespace http = sluice::http;
using json = nlohmann::json;
using sluice::clock;
using sluice::context;
using sluice::task;

// ---- logging ---------------------------------------------------------------------

std::string log_line(std::string_view level, std::string_view msg, const json& fields) {
  const auto now = std::chrono::system_clock::now();
  const std::time_t secs = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char stamp[64];
  std::snprintf(stamp, sizeof stamp, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  json line = {{"time", stamp}, {"level", level}, {"msg", msg}};
  if (fields.is_object()) {
    for (auto it = fields.begin(); it != fields.end(); ++it) line[it.key()] = it.value();
  }
  return line.dump(-1, ' ', false, json::error_handler_t::replace);
}

void stdout_sink(std::string_view line) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

namespace {

// ---- small helpers ---------------------------------------------------------------

// Unique, unguessable-looking ids: a bijective mix of a per-process random
// salt plus a counter, so two ids never collide within a process.
std::uint64_t next_id() noexcept {
  static const std::uint64_t salt = [] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }();
  static std::atomic<std::uint64_t> counter{0};
  std::uint64_t x = salt + 0x9e3779b97f4a7c15ULL * (counter.fetch_add(1, std::memory_order_relaxed) + 1);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

// "<prefix><16 hex digits>" into `out` (prefix_len + 16 + 1 bytes).
void format_id(char* out, std::string_view prefix, std::uint64_t x) noexcept {
  static constexpr char hex[] = "0123456789abcdef";
  std::memcpy(out, prefix.data(), prefix.size());
  for (int i = 15; i >= 0; --i, x >>= 4) out[prefix.size() + static_cast<std::size_t>(i)] = hex[x & 15];
  out[prefix.size() + 16] = '\0';
}

// Event ids: a sequence number, disguised by a bijection (multiply by an odd
// constant, xor a per-process salt) so they do not look sequential, and
// undone on lookup so the store can be a ring indexed by the sequence.
struct event_id_codec {
  static constexpr std::uint64_t k = 0x9e3779b97f4a7c15ULL;  // odd: invertible mod 2^64
  static constexpr std::uint64_t k_inverse = [] {
    std::uint64_t inv = k;  // Newton's iteration doubles the correct bits each step
    for (int i = 0; i < 6; ++i) inv *= 2 - k * inv;
    return inv;
  }();
  static_assert(k * k_inverse == 1);
  std::uint64_t salt = 0;
  std::uint64_t encode(std::uint64_t seq) const noexcept { return (seq * k) ^ salt; }
  std::uint64_t decode(std::uint64_t id) const noexcept { return (id ^ salt) * k_inverse; }
};

std::string make_id(std::string_view prefix) {
  char buf[32];
  format_id(buf, prefix, next_id());
  return std::string(buf, prefix.size() + 16);
}

// The number behind "<prefix><16 lower-case hex digits>", or nullopt.
std::optional<std::uint64_t> parse_id(std::string_view prefix, std::string_view text) noexcept {
  if (text.size() != prefix.size() + 16 || text.substr(0, prefix.size()) != prefix) return std::nullopt;
  std::uint64_t x = 0;
  for (char c : text.substr(prefix.size())) {
    int v;
    if (c >= '0' && c <= '9') v = c - '0';
    else if (c >= 'a' && c <= 'f') v = c - 'a' + 10;
    else return std::nullopt;
    x = (x << 4) | static_cast<std::uint64_t>(v);
  }
  return x;
}

constexpr std::string_view event_prefix = "evt_";

// Topics are path segments and log fields: 1-128 of [A-Za-z0-9._-].
bool valid_topic(std::string_view t) noexcept { return http::is_safe_id(t); }

// A subscriber URL: exactly http://host[:port][/path], with a host the
// client can dial (an IP literal or localhost: sluice has no DNS resolver).
// Returns the reason it is not, or "" when it is.
std::string url_problem(std::string_view text) {
  if (text.size() > 2048) return "url: longer than 2048 characters";
  if (text.find_first_of("?#") != std::string_view::npos) {
    return "url: expected http://host[:port][/path] (no query or fragment)";
  }
  http::url u;
  try {
    u = http::url::parse(text);
  } catch (const std::invalid_argument& e) {
    return std::string("url: ") + e.what();
  }
  if (u.scheme != "http") return "url: only http:// subscribers are supported";
  if (u.host != "localhost") {
    std::string h = u.host;
    unsigned char buf[16];
    bool ip = false;
    if (h.size() > 2 && h.front() == '[' && h.back() == ']') {
      ip = inet_pton(AF_INET6, h.substr(1, h.size() - 2).c_str(), buf) == 1;
    } else {
      ip = inet_pton(AF_INET, h.c_str(), buf) == 1;
    }
    if (!ip) return "url: the host must be an IP address or localhost (no DNS resolver)";
  }
  return {};
}

// A Retry-After value: delay-seconds or an HTTP-date (RFC 9110 10.2.3).
std::optional<clock::duration> parse_retry_after(std::string_view v) {
  while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) v.remove_prefix(1);
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.remove_suffix(1);
  if (v.empty()) return std::nullopt;
  if (v.find_first_not_of("0123456789") == std::string_view::npos) {
    if (v.size() > 9) return std::chrono::hours(24 * 365);  // effectively "very long"
    unsigned secs = 0;
    std::from_chars(v.data(), v.data() + v.size(), secs);
    return std::chrono::seconds(secs);
  }
  std::tm tm{};
  const std::string s(v);
  const char* end = strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S GMT", &tm);
  if (end == nullptr || *end != '\0') return std::nullopt;
  const auto when = std::chrono::system_clock::from_time_t(timegm(&tm));
  const auto now = std::chrono::system_clock::now();
  if (when <= now) return clock::duration::zero();
  return std::chrono::duration_cast<clock::duration>(when - now);
}

enum class dstatus : std::uint8_t { pending, in_flight, delivered, failed, dropped };

const char* to_string(dstatus s) noexcept {
  switch (s) {
    case dstatus::pending: return "pending";
    case dstatus::in_flight: return "in_flight";
    case dstatus::delivered: return "delivered";
    case dstatus::failed: return "failed";
    case dstatus::dropped: return "dropped";
  }
  return "?";
}

struct subscription;

struct delivery_record {
  std::shared_ptr<const subscription> sub;  // its id and URL (both immutable)
  dstatus status = dstatus::pending;
  int attempts = 0;
  int last_status = 0;     // the subscriber's last HTTP status, 0 if none
  std::string last_error;  // the last attempt's network error, if any
};

struct event_record {
  std::uint64_t seq = 0;  // the event's sequence number, behind its id
  char id_buf[event_prefix.size() + 17] = {};
  std::string_view id() const noexcept { return {id_buf, event_prefix.size() + 16}; }
  std::string topic;
  clock::time_point accepted;
  mutable std::mutex mu;  // guards deliveries
  std::vector<delivery_record> deliveries;
};

struct delivery;

struct subscription {
  std::string id;
  std::string topic;
  std::string url;
  // Deliveries ready to run that wait for one of this subscription's slots.
  // Invariant: `waiting` is non-empty only while in_flight > 0, so some
  // delivery of this subscription will come back and start (or drop) them.
  std::mutex mu;
  std::deque<delivery> waiting;
  int in_flight = 0;  // dispatched to the pool (queued there or running)
};

// One event to one subscription: what a pool job carries.
struct delivery {
  std::shared_ptr<event_record> event;
  std::size_t index = 0;  // into event->deliveries
  std::shared_ptr<subscription> sub;
  std::shared_ptr<const std::string> body;
  int attempt = 1;  // the attempt to make next
};

// A delivery handed to the pool, with the state it runs against. From the
// frame allocator (dispatched once per attempt).
struct pending_job;

// How one attempt ended.
enum class outcome { delivered, retry, failed, canceled };

struct attempt_result {
  outcome what = outcome::failed;
  int status = 0;
  std::string error;
  clock::duration retry_after = clock::duration::zero();
};

}  // namespace

// ---- the service state -----------------------------------------------------------

struct service::state : std::enable_shared_from_this<state> {
  state(config c, log_sink l);

  void log(std::string_view level, std::string_view msg, const json& fields = json::object()) const {
    sink(log_line(level, msg, fields));
  }

  // -- delivery engine --
  void enqueue(delivery d);
  void dispatch(delivery d);
  void release_slot(subscription& sub);
  task<void> run(context ctx, delivery d);
  task<attempt_result> attempt(const context& ctx, const delivery& d);
  void schedule_retry(delivery d, clock::duration wait, const attempt_result& r);
  void dropped_unstarted(const delivery& d);
  void finish(const delivery& d, dstatus s, int made, const attempt_result* r = nullptr);
  void outstanding_sub(std::int64_t n) noexcept;
  void update(const delivery& d, dstatus s, int attempts, const attempt_result* r);

  // -- HTTP --
  void create_subscription(http::request& req, http::response& res);
  void list_subscriptions(http::request& req, http::response& res);
  void delete_subscription(http::request& req, http::response& res);
  void post_event(http::request& req, http::response& res);
  void get_event(http::request& req, http::response& res);
  void collect(http::prometheus_writer& out) const;
  relay_stats snapshot() const;

  const config cfg;
  const log_sink sink;
  const sluice::retry_policy backoff;

  // Subscriptions (bounded by max_subscriptions).
  mutable std::mutex subs_mu;
  std::unordered_map<std::string, std::shared_ptr<subscription>> subs;
  // Copy on write: a post takes the topic's current list with one reference
  // count, not a copy of every subscription's pointer; a change of the list
  // (rare) builds a new one.
  using sub_list = std::vector<std::shared_ptr<subscription>>;
  std::unordered_map<std::string, std::shared_ptr<const sub_list>> by_topic;

  // Events, the newest retain_events of them: a ring indexed by sequence
  // number (slot seq % retain_events), grown as events arrive, each new
  // event overwriting the oldest. No hashing, no node per event.
  mutable std::mutex events_mu;
  std::vector<std::shared_ptr<event_record>> ring;
  std::uint64_t next_seq = 0;  // guarded by events_mu
  event_id_codec ids;

  // Delivery.
  http::client client;
  std::shared_ptr<sluice::worker_pool> pool;
  std::atomic<std::int64_t> queued{0};
  std::atomic<std::int64_t> in_flight{0};
  // Accepted deliveries not yet delivered/failed/dropped, plus event posts
  // being admitted right now: the drain waits for this to reach zero.
  std::atomic<std::int64_t> outstanding{0};
  std::atomic<bool> draining{false};
  std::atomic<bool> stopped{false};
  sluice::context_with_cancel stop;  // cancelled at stop: retry waits end
  sluice::wait_group retry_waits;    // one per scheduled retry task
  sluice::chan<int> idle_note{1};    // "outstanding reached 0 while draining"

  // Counters.
  std::atomic<std::uint64_t> events_accepted{0}, events_full{0}, events_refused{0},
      delivered{0}, failed{0}, dropped{0}, attempts{0}, retries{0};
  mutable std::mutex latency_mu;
  sluice::duration_summary latency;  // accepted -> delivered

  // HTTP.
  std::shared_ptr<http::http_metrics> http_m = std::make_shared<http::http_metrics>();
  std::shared_ptr<http::client_rate_limiter> limiter;
  std::shared_ptr<http::metrics_registry> registry = std::make_shared<http::metrics_registry>();
  http::router mux;
  std::shared_ptr<http::server> srv;
};

namespace {

struct pending_job {
  std::shared_ptr<service::state> self;
  delivery d;
  static void* operator new(std::size_t n) { return sluice::detail::allocate_frame(n); }
  static void operator delete(void* p, std::size_t n) noexcept { sluice::detail::deallocate_frame(p, n); }
};

http::client_options client_options_for(const config& c) {
  http::client_options o;
  o.max_conns_per_host = static_cast<std::size_t>(c.workers);
  o.max_idle_per_host = static_cast<std::size_t>(c.workers);
  o.connect_timeout = c.delivery_timeout;
  o.max_response_body_bytes = 1 << 20;  // a subscriber's answer is read and discarded
  o.user_agent = "sluice-relay";
  return o;
}

// Errors are {"error": "..."}: this rewrites the plain-text answers of the
// router (404, 405) and of the middleware (429, 500) into that shape.
http::handler json_errors(http::handler next) {
  return [next = std::move(next)](http::request& req, http::response& res) -> task<void> {
    co_await next(req, res);
    if (res.status() < 400 || res.headers_sent()) co_return;
    const auto type = res.header().get_or("content-type", "");
    if (type.substr(0, 10) != "text/plain") co_return;
    std::string msg = res.body();
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == '\r')) msg.pop_back();
    res.header().erase("X-Content-Type-Options");
    http::write_json_error(res, res.status(), msg);
  };
}

using member_handler = void (service::state::*)(http::request&, http::response&);

task<void> call_member(service::state* s, member_handler fn, http::request& req,
                       http::response& res) {
  (s->*fn)(req, res);
  co_return;
}

http::handler bind(service::state* s, member_handler fn) {
  return [s, fn](http::request& req, http::response& res) { return call_member(s, fn, req, res); };
}

task<void> healthz(http::request&, http::response& res) {
  http::write_json(res, 200, {{"status", "ok"}});
  co_return;
}

}  // namespace

service::state::state(config c, log_sink l)
    : cfg(std::move(c)),
      sink(l ? std::move(l) : log_sink(stdout_sink)),
      backoff{.max_attempts = cfg.max_attempts, .base_delay = cfg.retry_base, .max_delay = cfg.retry_max},
      client(client_options_for(cfg)),
      stop(sluice::with_cancel(context::background())) {
  cfg.validate();
  backoff.validate();
  ids.salt = next_id();
  // The pool's own queue holds only deliveries whose subscription had a free
  // slot; the relay's admission counter (`queued`) bounds it below --queue
  // plus the retries in flight, so try_submit never fails for room.
  pool = std::make_shared<sluice::worker_pool>(sluice::worker_pool_options{
      .workers = cfg.workers,
      .queue_capacity = cfg.queue + cfg.workers,
      .name = "deliveries",
      .on_error =
          [this](std::string_view name, std::exception_ptr e) {
            log("error", "delivery job threw", {{"pool", name}, {"error", sluice::describe(e)}});
          },
  });
  limiter = std::make_shared<http::client_rate_limiter>(
      http::rate_limit_options{.limit = sluice::rate::limit(cfg.rate), .burst = cfg.burst});

  auto v1 = http::rate_limit(limiter);
  mux.handle("POST /v1/topics/{topic}/subscriptions", v1(bind(this, &state::create_subscription)));
  mux.handle("GET /v1/topics/{topic}/subscriptions", v1(bind(this, &state::list_subscriptions)));
  mux.handle("DELETE /v1/subscriptions/{id}", v1(bind(this, &state::delete_subscription)));
  mux.handle("POST /v1/topics/{topic}/events", v1(bind(this, &state::post_event)));
  mux.handle("GET /v1/events/{id}", v1(bind(this, &state::get_event)));
  mux.handle("GET /healthz", healthz);
  mux.handle("GET /readyz", [this](http::request&, http::response& res) -> task<void> {
    if (draining.load(std::memory_order_acquire)) {
      http::write_json(res, 503, {{"status", "shutting down"}});
    } else {
      http::write_json(res, 200, {{"status", "ready"}});
    }
    co_return;
  });
  mux.handle("GET /metrics", http::metrics_handler(registry));
  mux.handle("GET /debug/tasks", http::tasks_handler());

  http::log_sink line_sink = [this](std::string_view line) { sink(line); };
  http::handler h = http_m->middleware()(mux);
  if (cfg.access_log) h = http::access_log(line_sink)(h);
  h = http::recover(line_sink)(h);
  h = json_errors(h);

  http::server_options so;
  so.max_body_bytes = cfg.max_body;
  so.max_connections = cfg.max_connections;
  so.error_log = [this](std::string_view what) { log("error", "http server", {{"error", what}}); };
  so.error_body = [](http::response& res, std::string_view message) {
    http::write_json_error(res, res.status(), message);
  };
  srv = std::make_shared<http::server>(h, so);

  http::add_runtime_metrics(*registry);
  http::add_server_metrics(*registry, srv, "relay");
  http::add_pool_metrics(*registry, pool);
  http::add_rate_limiter_metrics(*registry, limiter, "v1");
  registry->add([m = http_m](http::prometheus_writer& out) { m->collect(out); });
  registry->add([this](http::prometheus_writer& out) { collect(out); });
}

// ---- the delivery engine ---------------------------------------------------------

void service::state::outstanding_sub(std::int64_t n) noexcept {
  if (outstanding.fetch_sub(n, std::memory_order_acq_rel) == n &&
      draining.load(std::memory_order_acquire)) {
    idle_note.try_send(1);  // full already: a note is pending, which is enough
  }
}

void service::state::update(const delivery& d, dstatus s, int attempts_made, const attempt_result* r) {
  std::lock_guard lock(d.event->mu);
  auto& rec = d.event->deliveries[d.index];
  rec.status = s;
  rec.attempts = attempts_made;
  if (r != nullptr) {
    rec.last_status = r->status;
    rec.last_error = r->error;
  }
}

// A delivery reached its end after `made` attempts (the last one's result in
// *r, if it just ended): record it, count it, log it if dropped.
void service::state::finish(const delivery& d, dstatus s, int made, const attempt_result* r) {
  update(d, s, made, r);
  switch (s) {
    case dstatus::delivered: {
      delivered.fetch_add(1, std::memory_order_relaxed);
      const auto took = clock::now() - d.event->accepted;
      std::lock_guard lock(latency_mu);
      latency.count += 1;
      latency.sum += took;
      if (took > latency.max) latency.max = took;
      latency.buckets[sluice::duration_summary::bucket_of(took)] += 1;
      break;
    }
    case dstatus::failed: failed.fetch_add(1, std::memory_order_relaxed); break;
    case dstatus::dropped:
      dropped.fetch_add(1, std::memory_order_relaxed);
      log("warn", "delivery dropped",
          {{"event", d.event->id()}, {"subscription", d.sub->id}, {"topic", d.event->topic},
           {"attempts", made}});
      break;
    default: break;
  }
  outstanding_sub(1);
}

// A delivery ready to run (counted in `queued`): it starts if its
// subscription has a free slot, else waits in the subscription's line.
void service::state::enqueue(delivery d) {
  auto sub = d.sub;
  bool start = false;
  {
    std::lock_guard lock(sub->mu);
    // Checked under the subscription's lock: release_slot drops the line
    // under the same lock once stopped, so nothing joins it afterwards.
    if (!stopped.load(std::memory_order_acquire)) {
      if (sub->in_flight >= cfg.per_subscriber_concurrency) {
        sub->waiting.push_back(std::move(d));
        return;
      }
      ++sub->in_flight;
      start = true;
    }
  }
  if (!start) {
    queued.fetch_sub(1, std::memory_order_acq_rel);
    finish(d, dstatus::dropped, d.attempt - 1);
    return;
  }
  dispatch(std::move(d));
}

// Hands a delivery that holds one of its subscription's slots to the pool.
// After the stop the pool refuses it: it is dropped here.
void service::state::dispatch(delivery d) {
  if (!stopped.load(std::memory_order_acquire)) {
    // The job owns the pending_job; on_drop (which the pool calls before it
    // destroys a job that never started) sees it through a plain pointer, so
    // the std::function holds 8 bytes in place instead of a heap copy.
    auto job = std::unique_ptr<pending_job>(new pending_job{shared_from_this(), d});
    pending_job* p = job.get();
    const bool accepted = pool->try_submit(
        [job = std::move(job)](context ctx) { return job->self->run(std::move(ctx), std::move(job->d)); },
        sluice::job_options{.on_drop = [p](sluice::drop_reason) { p->self->dropped_unstarted(p->d); }});
    if (accepted) return;
  }
  dropped_unstarted(d);
}

void service::state::dropped_unstarted(const delivery& d) {
  queued.fetch_sub(1, std::memory_order_acq_rel);
  release_slot(*d.sub);
  finish(d, dstatus::dropped, d.attempt - 1);
}

// A delivery of `sub` left the pool: its slot goes to the next one waiting,
// or, after the stop, everything waiting is dropped.
void service::state::release_slot(subscription& sub) {
  // (An optional: libstdc++ allocates for a deque as it is constructed.)
  std::optional<std::deque<delivery>> drop;
  std::optional<delivery> next;
  {
    std::lock_guard lock(sub.mu);
    if (stopped.load(std::memory_order_acquire)) {
      drop.emplace().swap(sub.waiting);
      --sub.in_flight;
    } else if (!sub.waiting.empty()) {
      next.emplace(std::move(sub.waiting.front()));  // the slot passes on
      sub.waiting.pop_front();
    } else {
      --sub.in_flight;
    }
  }
  if (drop) {
    for (auto& d : *drop) {
      queued.fetch_sub(1, std::memory_order_acq_rel);
      finish(d, dstatus::dropped, d.attempt - 1);
    }
  }
  if (next) dispatch(std::move(*next));
}

task<attempt_result> service::state::attempt(const context& ctx, const delivery& d) {
  http::client_request req;
  req.method = "POST";
  req.url = d.sub->url;
  req.header.reserve(4);
  req.header.add("Content-Type", "application/json");
  req.header.add("X-Sluice-Event-Id", d.event->id());
  req.header.add("X-Sluice-Topic", d.event->topic);
  req.header.add("X-Sluice-Attempt", std::to_string(d.attempt));
  req.body = *d.body;
  auto [actx, cancel] = sluice::with_timeout(ctx, cfg.delivery_timeout);
  http::client_result r = co_await client.send(actx, std::move(req));
  cancel();
  attempt_result out;
  if (!r.ok()) {
    out.error = r.error_message;
    // The pool's context ends only at the stop: the attempt was cut off.
    out.what = ctx.err() ? outcome::canceled : outcome::retry;
    co_return out;
  }
  const int st = r.response.status;
  out.status = st;
  if (st >= 200 && st < 300) {
    out.what = outcome::delivered;
  } else if (st >= 500 || st == 408 || st == 429) {
    out.what = outcome::retry;
    if (st == 429 || st == 503) {
      if (auto v = r.response.header.get("retry-after")) {
        if (auto ra = parse_retry_after(*v)) out.retry_after = *ra;
      }
    }
  } else {
    out.what = outcome::failed;
  }
  co_return out;
}

task<void> service::state::run(context ctx, delivery d) {
  queued.fetch_sub(1, std::memory_order_acq_rel);
  in_flight.fetch_add(1, std::memory_order_relaxed);
  attempts.fetch_add(1, std::memory_order_relaxed);
  update(d, dstatus::in_flight, d.attempt, nullptr);
  attempt_result r;
  try {
    r = co_await attempt(ctx, d);
  } catch (const std::exception& e) {
    // Only a malformed request throws; the URL was checked when subscribing.
    r.what = outcome::failed;
    r.error = e.what();
  }
  in_flight.fetch_sub(1, std::memory_order_relaxed);
  release_slot(*d.sub);
  // One update of the record per outcome: its status, attempts and result.
  switch (r.what) {
    case outcome::delivered: finish(d, dstatus::delivered, d.attempt, &r); break;
    case outcome::failed: finish(d, dstatus::failed, d.attempt, &r); break;
    case outcome::canceled: finish(d, dstatus::dropped, d.attempt, &r); break;
    case outcome::retry:
      if (d.attempt >= cfg.max_attempts) {
        finish(d, dstatus::failed, d.attempt, &r);
      } else {
        const clock::duration wait =
            backoff.delay(d.attempt, sluice::detail::retry_unit_random(), r.retry_after);
        schedule_retry(std::move(d), wait, r);
      }
      break;
  }
}

namespace {
task<void> wait_then_retry(std::shared_ptr<service::state> s, delivery d, clock::duration wait) {
  auto r = co_await sluice::select(sluice::after(wait), sluice::done(s->stop.ctx));
  if (r.index() == 0 && !s->stopped.load(std::memory_order_acquire)) {
    s->enqueue(std::move(d));  // still `pending` in the record
  } else {
    s->queued.fetch_sub(1, std::memory_order_acq_rel);
    s->finish(d, dstatus::dropped, d.attempt - 1);
  }
  s->retry_waits.done();
}
}  // namespace

// A retry joins the queue at once (it counts while it waits out its backoff)
// and is never refused for room: it was promised when its event was accepted.
void service::state::schedule_retry(delivery d, clock::duration wait, const attempt_result& r) {
  const int made = d.attempt;
  ++d.attempt;
  if (stopped.load(std::memory_order_acquire)) {
    finish(d, dstatus::dropped, made, &r);
    return;
  }
  retries.fetch_add(1, std::memory_order_relaxed);
  queued.fetch_add(1, std::memory_order_acq_rel);
  update(d, dstatus::pending, made, &r);
  retry_waits.add(1);
  sluice::go(wait_then_retry, shared_from_this(), std::move(d), wait);
}

// ---- handlers --------------------------------------------------------------------

void service::state::create_subscription(http::request& req, http::response& res) {
  const std::string topic(req.path_value("topic"));
  if (!valid_topic(topic)) {
    http::write_json_error(res, 400, "topic: 1-128 characters of A-Z a-z 0-9 . _ -");
    return;
  }
  auto body = http::read_json(req, res);
  if (!body) return;
  if (!body->is_object() || !body->contains("url") || !(*body)["url"].is_string()) {
    http::write_json_error(res, 400, "expected {\"url\": \"http://host[:port][/path]\"}");
    return;
  }
  const std::string url = (*body)["url"].get<std::string>();
  if (std::string why = url_problem(url); !why.empty()) {
    http::write_json_error(res, 400, why);
    return;
  }
  auto sub = std::make_shared<subscription>();
  sub->id = make_id("sub_");
  sub->topic = topic;
  sub->url = url;
  {
    std::lock_guard lock(subs_mu);
    if (subs.size() >= cfg.max_subscriptions) {
      http::write_json_error(res, 409,
                             "subscription limit reached (" + std::to_string(cfg.max_subscriptions) + ")");
      return;
    }
    // Out of memory anywhere here leaves both maps as they were (and the
    // recover middleware answers 500): the new list is built first, and a
    // failed topic insert takes the subscription back out.
    const auto listed = by_topic.find(topic);
    auto grown = listed != by_topic.end() ? std::make_shared<sub_list>(*listed->second)
                                          : std::make_shared<sub_list>();
    grown->push_back(sub);
    const auto [added, inserted] = subs.emplace(sub->id, sub);
    try {
      by_topic[topic] = std::move(grown);
    } catch (...) {
      if (inserted) subs.erase(added);
      throw;
    }
  }
  res.header().set("Location", "/v1/subscriptions/" + sub->id);
  http::write_json(res, 201, {{"id", sub->id}, {"topic", topic}, {"url", url}});
}

void service::state::list_subscriptions(http::request& req, http::response& res) {
  const std::string_view topic = req.path_value("topic");
  if (!valid_topic(topic)) {
    http::write_json_error(res, 400, "topic: 1-128 characters of A-Z a-z 0-9 . _ -");
    return;
  }
  json out = json::array();
  {
    std::lock_guard lock(subs_mu);
    if (auto it = by_topic.find(std::string(topic)); it != by_topic.end()) {
      for (const auto& s : *it->second) out.push_back({{"id", s->id}, {"url", s->url}});
    }
  }
  http::write_json(res, 200, out);
}

// Deliveries already accepted for the subscription still run to their end
// (they were promised when their event was accepted).
void service::state::delete_subscription(http::request& req, http::response& res) {
  const std::string id(req.path_value("id"));
  {
    std::lock_guard lock(subs_mu);
    auto it = subs.find(id);
    if (it == subs.end()) {
      http::write_json_error(res, 404, "no subscription " + id);
      return;
    }
    const auto list = by_topic.find(it->second->topic);  // a subscription's topic is listed
    auto shrunk = std::make_shared<sub_list>(*list->second);
    std::erase(*shrunk, it->second);
    if (shrunk->empty()) {
      by_topic.erase(list);
    } else {
      list->second = std::move(shrunk);
    }
    subs.erase(it);
  }
  res.set_status(204);
}

void service::state::post_event(http::request& req, http::response& res) {
  // Counted while admitted, so a drain that begins now waits for this post.
  outstanding.fetch_add(1, std::memory_order_acq_rel);
  struct guard {
    state* s;
    ~guard() { s->outstanding_sub(1); }
  } g{this};
  if (draining.load(std::memory_order_acquire)) {
    events_refused.fetch_add(1, std::memory_order_relaxed);
    res.header().set("Retry-After", "5");
    http::write_json_error(res, 503, "shutting down; send the event to another instance");
    return;
  }
  const std::string topic(req.path_value("topic"));
  if (!valid_topic(topic)) {
    http::write_json_error(res, 400, "topic: 1-128 characters of A-Z a-z 0-9 . _ -");
    return;
  }
  if (req.body().size() > cfg.max_body) {  // the server enforces it too
    http::write_json_error(res, 413, "body over " + std::to_string(cfg.max_body) + " bytes");
    return;
  }
  // Validation only: the body is delivered as received, byte for byte.
  // json_valid keeps no tree and does not recurse (hostile nesting is cheap)
  // and gives nlohmann's answer several times faster than its SAX parser.
  if (!http::json_valid(req.body())) {
    http::write_json_error(res, 400, "invalid JSON body");
    return;
  }
  std::shared_ptr<const sub_list> subscribed;
  {
    std::lock_guard lock(subs_mu);
    if (auto it = by_topic.find(topic); it != by_topic.end()) subscribed = it->second;
  }
  static const sub_list nobody;
  const sub_list& targets = subscribed ? *subscribed : nobody;
  const auto n = static_cast<std::int64_t>(targets.size());
  // All or nothing: reserve every delivery's place in the queue, or none.
  std::int64_t cur = queued.load(std::memory_order_acquire);
  do {
    if (n > 0 && cur + n > cfg.queue) {
      events_full.fetch_add(1, std::memory_order_relaxed);
      res.header().set("Retry-After", "1");
      http::write_json_error(res, 503, "delivery queue full; retry later");
      return;
    }
  } while (!queued.compare_exchange_weak(cur, cur + n, std::memory_order_acq_rel));

  auto ev = std::make_shared<event_record>();
  ev->topic = topic;
  ev->accepted = clock::now();
  ev->deliveries.reserve(targets.size());
  for (const auto& s : targets) ev->deliveries.push_back({.sub = s});
  outstanding.fetch_add(n, std::memory_order_acq_rel);
  events_accepted.fetch_add(1, std::memory_order_relaxed);
  std::shared_ptr<event_record> evicted;  // destroyed after the lock is released
  {
    std::lock_guard lock(events_mu);
    ev->seq = next_seq++;
    format_id(ev->id_buf, event_prefix, ids.encode(ev->seq));
    const std::size_t slot = static_cast<std::size_t>(ev->seq % cfg.retain_events);
    if (slot == ring.size()) {
      ring.push_back(ev);
    } else {
      evicted = std::exchange(ring[slot], ev);  // the oldest event leaves
    }
  }
  auto body = std::make_shared<const std::string>(std::move(req.body()));
  for (std::size_t i = 0; i < targets.size(); ++i) {
    enqueue(delivery{.event = ev, .index = i, .sub = targets[i], .body = body, .attempt = 1});
  }
  // The one answer on the hot path, formatted by hand (the id is hex).
  res.header().set("Content-Type", "application/json");
  res.set_status(202);
  std::string& out = res.body();
  out.assign("{\"id\":\"").append(ev->id()).append("\",\"deliveries\":").append(std::to_string(n)).append("}");
}

void service::state::get_event(http::request& req, http::response& res) {
  std::shared_ptr<event_record> ev;
  {
    std::lock_guard lock(events_mu);
    if (auto id = parse_id(event_prefix, req.path_value("id"))) {
      const std::uint64_t seq = ids.decode(*id);
      const std::size_t slot = static_cast<std::size_t>(seq % cfg.retain_events);
      if (seq < next_seq && slot < ring.size() && ring[slot]->seq == seq) ev = ring[slot];
    }
  }
  if (!ev) {
    http::write_json_error(res, 404, "no event " + std::string(req.path_value("id")) +
                                         " (unknown, or older than the retained events)");
    return;
  }
  json ds = json::array();
  {
    std::lock_guard lock(ev->mu);
    for (const auto& d : ev->deliveries) {
      json one = {{"subscription", d.sub->id}, {"url", d.sub->url}, {"status", to_string(d.status)},
                  {"attempts", d.attempts},         {"last_status", d.last_status}};
      if (!d.last_error.empty()) one["last_error"] = d.last_error;
      ds.push_back(std::move(one));
    }
  }
  http::write_json(res, 200, {{"id", ev->id()}, {"topic", ev->topic}, {"deliveries", std::move(ds)}});
}

relay_stats service::state::snapshot() const {
  relay_stats r;
  r.events_accepted = events_accepted.load(std::memory_order_relaxed);
  r.events_rejected_queue_full = events_full.load(std::memory_order_relaxed);
  r.events_rejected_shutting_down = events_refused.load(std::memory_order_relaxed);
  r.deliveries_delivered = delivered.load(std::memory_order_relaxed);
  r.deliveries_failed = failed.load(std::memory_order_relaxed);
  r.deliveries_dropped = dropped.load(std::memory_order_relaxed);
  r.delivery_attempts = attempts.load(std::memory_order_relaxed);
  r.delivery_retries = retries.load(std::memory_order_relaxed);
  r.queued = queued.load(std::memory_order_relaxed);
  r.in_flight = in_flight.load(std::memory_order_relaxed);
  r.outstanding = outstanding.load(std::memory_order_relaxed);
  {
    std::lock_guard lock(subs_mu);
    r.subscriptions = subs.size();
  }
  {
    std::lock_guard lock(events_mu);
    r.events_retained = ring.size();
  }
  return r;
}

void service::state::collect(http::prometheus_writer& out) const {
  const relay_stats r = snapshot();
  auto d = [](auto v) { return static_cast<double>(v); };
  out.family("sluice_relay_deliveries_total", "counter",
             "Deliveries that reached their end, by result (delivered, failed, dropped).");
  out.sample("sluice_relay_deliveries_total", {{"result", "delivered"}}, d(r.deliveries_delivered));
  out.sample("sluice_relay_deliveries_total", {{"result", "failed"}}, d(r.deliveries_failed));
  out.sample("sluice_relay_deliveries_total", {{"result", "dropped"}}, d(r.deliveries_dropped));
  out.family("sluice_relay_delivery_attempts_total", "counter", "HTTP POSTs made to subscribers.");
  out.sample("sluice_relay_delivery_attempts_total", {}, d(r.delivery_attempts));
  out.family("sluice_relay_delivery_retries_total", "counter", "Attempts scheduled after a failed one.");
  out.sample("sluice_relay_delivery_retries_total", {}, d(r.delivery_retries));
  out.family("sluice_relay_events_total", "counter",
             "Event posts by result (accepted, queue_full, shutting_down).");
  out.sample("sluice_relay_events_total", {{"result", "accepted"}}, d(r.events_accepted));
  out.sample("sluice_relay_events_total", {{"result", "queue_full"}}, d(r.events_rejected_queue_full));
  out.sample("sluice_relay_events_total", {{"result", "shutting_down"}},
             d(r.events_rejected_shutting_down));
  const auto gauge = [&](std::string_view name, std::string_view help, double v) {
    out.family(name, "gauge", help);
    out.sample(name, {}, v);
  };
  gauge("sluice_relay_queue_depth", "Deliveries waiting to start (for a slot, a worker or a retry's backoff).",
        d(r.queued));
  gauge("sluice_relay_queue_capacity", "--queue.", d(cfg.queue));
  gauge("sluice_relay_deliveries_in_flight", "Deliveries being POSTed now.", d(r.in_flight));
  gauge("sluice_relay_deliveries_outstanding", "Accepted deliveries not yet delivered, failed or dropped.",
        d(r.outstanding));
  gauge("sluice_relay_subscriptions", "Subscriptions, all topics.", d(r.subscriptions));
  gauge("sluice_relay_events_retained", "Events kept for GET /v1/events/{id}.", d(r.events_retained));
  gauge("sluice_relay_draining", "1 once the shutdown began.", draining.load(std::memory_order_relaxed) ? 1.0 : 0.0);
  sluice::duration_summary lat;
  {
    std::lock_guard lock(latency_mu);
    lat = latency;
  }
  out.family("sluice_relay_delivery_latency_seconds", "histogram",
             "From the event's acceptance to its delivery's 2xx, retries included.");
  out.histogram("sluice_relay_delivery_latency_seconds", {}, lat);
}

// ---- service ---------------------------------------------------------------------

service::service(config cfg, log_sink log) : s_(std::make_shared<state>(std::move(cfg), std::move(log))) {}

service::~service() = default;

task<std::error_code> service::serve(sluice::net::tcp_listener ln) {
  auto srv = s_->srv;
  co_return co_await srv->serve(std::move(ln));
}

void service::begin_shutdown() noexcept { s_->draining.store(true, std::memory_order_release); }

task<shutdown_report> service::shutdown(context drain) {
  auto s = s_;
  begin_shutdown();
  const auto began = clock::now();
  s->log("info", "shutdown: draining",
         {{"outstanding", s->outstanding.load()}, {"queued", s->queued.load()},
          {"in_flight", s->in_flight.load()}});
  // Phase one: everything keeps running; wait until nothing is outstanding.
  while (s->outstanding.load(std::memory_order_acquire) > 0) {
    auto r = co_await sluice::select(sluice::recv(s->idle_note), sluice::done(drain));
    if (r.index() == 1) break;
  }
  shutdown_report report;
  report.drained = s->outstanding.load(std::memory_order_acquire) == 0;

  // Phase two: stop. Retry waits end, waiting deliveries are dropped as their
  // subscription's in-flight ones come back, the pool drops what it queued
  // and cancels what runs (those attempts end as dropped).
  s->stopped.store(true, std::memory_order_release);
  s->stop.cancel();
  {
    auto [expired, cancel] = sluice::with_cancel(context::background());
    cancel();
    co_await s->pool->shutdown(expired);
  }
  co_await s->retry_waits.wait();

  report.stats = s->snapshot();
  report.dropped = report.stats.deliveries_dropped;
  s->log(report.dropped == 0 ? "info" : "warn",
         "shutdown: " + std::to_string(report.dropped) + " deliveries dropped",
         {{"dropped", report.dropped},
          {"drained", report.drained},
          {"delivered", report.stats.deliveries_delivered},
          {"failed", report.stats.deliveries_failed},
          {"events_accepted", report.stats.events_accepted},
          {"outstanding", report.stats.outstanding},
          {"drain_ms", std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - began).count()}});

  // Close the listener and the connections; requests still running get a
  // moment to finish (they are short: the relay's handlers never wait).
  auto [close_ctx, close_cancel] = sluice::with_timeout(context::background(), std::chrono::seconds(2));
  co_await s->srv->shutdown(close_ctx);
  close_cancel();
  s->client.close_idle();
  co_return report;
}

relay_stats service::stats() const { return s_->snapshot(); }
std::string service::address() const { return s_->srv->address(); }
const config& service::options() const noexcept { return s_->cfg; }

}  // namespace relay
