// End-to-end delivery over loopback: a relay in-process, subscribers written
// with sluice's own HTTP server (or a raw listener that resets connections),
// and assertions on what the subscribers received and what the relay reports
// (GET /v1/events/{id}, stats(), /metrics, its log).
//
// No sleeps coordinate anything: the tests wait for observable state (a
// counter, a parked handler, a final delivery state). Time appears only as
// lower bounds the design guarantees (a Retry-After waited out, a timed-out
// attempt), never as an upper bound.
#include "relay_test_util.hpp"

#include <sluice/select.hpp>

#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <map>
#include <random>
#include <set>
#include <sstream>

namespace {

using namespace relay_test;
namespace http = sluice::http;
using sluice::clock;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
constexpr bool kSanitized = true;
#else
constexpr bool kSanitized = false;
#endif

// A timer may fire a hair before its deadline as read by another thread's
// clock; lower bounds on waits allow this much.
constexpr auto kClockSlack = 10ms;

// Yields until pred() holds or `limit` passes (longer than sl_test::until's
// 10 s, for the runs under a sanitizer).
template <class Pred>
sluice::task<bool> wait_for(Pred pred, clock::duration limit = 30s) {
  const auto give_up = clock::now() + limit;
  while (clock::now() < give_up) {
    if (pred()) co_return true;
    co_await sluice::yield();
  }
  co_return pred();
}

// ---- a scripted subscriber ---------------------------------------------------------

// What the subscriber answers to one request.
struct reply {
  int status = 200;
  std::string retry_after;  // sent as Retry-After when not empty
  bool hold = false;        // wait until release() (or until the relay hangs up)
};

// One request the subscriber received.
struct hit {
  std::string path;
  std::string event;
  std::string topic;
  std::string attempt;
  std::string content_type;
  std::string body;
  clock::time_point at;  // arrival
  int answered = -1;     // the status answered; -1 while held
};

// The script sees the request and how many requests this (path, event) pair
// has had, this one included. Called under the subscriber's lock.
using script_fn = std::function<reply(const hit&, int nth)>;

struct sub_state {
  std::mutex mu;
  std::vector<hit> hits;                // in arrival order
  std::map<std::string, int> per_pair;  // "path event" -> requests so far
  script_fn script;
  std::atomic<int> active{0};
  std::atomic<int> max_active{0};
  sluice::context_with_cancel gate = sluice::with_cancel(sluice::context::background());
};

sluice::task<void> serve_hit(std::shared_ptr<sub_state> st, http::request& req, http::response& res) {
  hit h;
  h.path = std::string(req.raw_path());
  h.event = std::string(req.header().get_or("X-Sluice-Event-Id", ""));
  h.topic = std::string(req.header().get_or("X-Sluice-Topic", ""));
  h.attempt = std::string(req.header().get_or("X-Sluice-Attempt", ""));
  h.content_type = std::string(req.header().get_or("Content-Type", ""));
  h.body = req.body();
  h.at = clock::now();
  const int now_active = st->active.fetch_add(1) + 1;
  int seen = st->max_active.load();
  while (now_active > seen && !st->max_active.compare_exchange_weak(seen, now_active)) {
  }
  reply rep;
  std::size_t index = 0;
  {
    std::lock_guard lock(st->mu);
    const int nth = ++st->per_pair[h.path + " " + h.event];
    if (st->script) rep = st->script(h, nth);
    index = st->hits.size();
    st->hits.push_back(std::move(h));
  }
  if (rep.hold) {
    // The relay hanging up (an attempt's timeout, the shutdown) ends it too.
    auto woke = co_await sluice::select(sluice::done(st->gate.ctx), sluice::done(req.ctx()));
    (void)woke;
  }
  {
    std::lock_guard lock(st->mu);
    st->hits[index].answered = rep.status;
  }
  // Before the answer goes out: the relay cannot send this subscriber's next
  // request before it has this answer, so max_active is true concurrency.
  st->active.fetch_sub(1);
  if (!rep.retry_after.empty()) res.header().set("Retry-After", rep.retry_after);
  res.send(rep.status, "{}", "application/json");
}

struct subscriber {
  std::shared_ptr<sub_state> st = std::make_shared<sub_state>();
  std::unique_ptr<sl_http::test_server> server;

  explicit subscriber(script_fn script = {}) {
    st->script = std::move(script);
    auto s = st;
    server = std::make_unique<sl_http::test_server>(
        [s](http::request& req, http::response& res) { return serve_hit(s, req, res); });
  }
  std::string url(std::string_view path = "/hook") const {
    return "http://" + server->address + std::string(path);
  }
  // Held requests answer now, and later ones do not wait.
  void release() const { st->gate.cancel(); }
  std::vector<hit> hits() const {
    std::lock_guard lock(st->mu);
    return st->hits;
  }
  std::size_t hit_count() const {
    std::lock_guard lock(st->mu);
    return st->hits.size();
  }
  sluice::task<void> stop() {
    release();
    co_await server->stop();
  }
};

// ---- a subscriber that resets connections --------------------------------------------

// Reads one request (head and Content-Length body); "" if the connection ended first.
sluice::task<std::string> read_request(sluice::net::tcp_stream& s, const sluice::context& ctx) {
  std::string buf;
  char b[4096];
  std::size_t need = std::string::npos;
  for (;;) {
    if (need == std::string::npos) {
      const std::size_t end = buf.find("\r\n\r\n");
      if (end != std::string::npos) {
        std::string head = buf.substr(0, end);
        for (auto& ch : head) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
        std::size_t len = 0;
        if (auto p = head.find("\r\ncontent-length:"); p != std::string::npos) {
          len = std::stoul(head.substr(p + 17));
        }
        need = end + 4 + len;
      }
    }
    if (need != std::string::npos && buf.size() >= need) co_return buf;
    auto r = co_await s.read(ctx, b, clock::now() + 10s);
    if (r.error || r.bytes == 0) co_return std::string();
    buf.append(b, r.bytes);
  }
}

std::string header_of(const std::string& raw, std::string_view name) {
  const std::string key = "\r\n" + std::string(name) + ": ";
  const auto p = raw.find(key);
  if (p == std::string::npos) return {};
  const auto e = raw.find("\r\n", p + key.size());
  return raw.substr(p + key.size(), e - p - key.size());
}

// A raw listener: the first `resets` connections get their request read and
// then a RST (SO_LINGER 0); later ones get 200 and a close.
struct resetting_subscriber {
  struct shared {
    std::mutex mu;
    std::vector<std::string> attempts;  // X-Sluice-Attempt of each request
    int resets_sent = 0;
  };
  std::shared_ptr<shared> st = std::make_shared<shared>();
  std::string address;
  sluice::context_with_cancel stopper = sluice::with_cancel(sluice::context::background());
  std::optional<sluice::join_handle<void>> loop;

  static sluice::task<void> accept_loop(sluice::net::tcp_listener ln, sluice::context ctx, int resets,
                                        std::shared_ptr<shared> st) {
    int n = 0;
    for (;;) {
      auto [s, ec] = co_await ln.accept(ctx);
      if (ec) break;
      ++n;
      std::string raw = co_await read_request(s, ctx);
      {
        std::lock_guard lock(st->mu);
        st->attempts.push_back(header_of(raw, "X-Sluice-Attempt"));
        if (n <= resets) ++st->resets_sent;
      }
      if (n <= resets) {
        linger l{1, 0};
        setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
        s.close();
        continue;
      }
      const std::string ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      co_await s.write(ctx, ok);
      s.close();
    }
  }

  explicit resetting_subscriber(int resets) {
    auto ln = sluice::net::tcp_listener::listen("127.0.0.1:0");
    address = ln.local_address();
    loop.emplace(sluice::spawn(&accept_loop, std::move(ln), stopper.ctx, resets, st));
  }
  std::string url() const { return "http://" + address + "/hook"; }
  std::vector<std::string> attempts() const {
    std::lock_guard lock(st->mu);
    return st->attempts;
  }
  sluice::task<void> stop() {
    stopper.cancel();
    co_await loop->join();
  }
};

// ---- API helpers ---------------------------------------------------------------------

// The delivery of `ev` (a GET /v1/events answer) to `sub_id`; null if none.
json delivery_to(const json& ev, const std::string& sub_id) {
  if (!ev.contains("deliveries")) return nullptr;
  for (const auto& d : ev["deliveries"]) {
    if (d.value("subscription", std::string()) == sub_id) return d;
  }
  return nullptr;
}

// The value of an unlabelled sample in /metrics; -1 if it is not there.
sluice::task<double> metric(http::client& c, const test_relay& r, std::string name) {
  api_result m = co_await call(c, "GET", r.url("/metrics"));
  std::istringstream in(m.body);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(name + " ", 0) == 0) co_return std::stod(line.substr(name.size() + 1));
  }
  co_return -1;
}

// The relay's log lines parsed, those whose "msg" contains `msg`.
std::vector<json> log_records(test_relay& r, std::string_view msg) {
  std::vector<json> out;
  for (const auto& line : r.log.matching({msg})) {
    json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.value("msg", std::string()).find(msg) != std::string::npos) out.push_back(j);
  }
  return out;
}

std::vector<std::string> attempts_of(const std::vector<hit>& hits, const std::string& path,
                                     const std::string& event) {
  std::vector<std::string> out;
  for (const auto& h : hits) {
    if (h.path == path && h.event == event) out.push_back(h.attempt);
  }
  return out;
}

// ---- 1. success -----------------------------------------------------------------------

TEST(RelayDelivery, EveryEventReachesEachSubscriberOnceWithItsHeadersAndBody) {
  sl_test::run_checked([]() -> sluice::task<void> {
    test_relay r;
    subscriber a;
    subscriber b;
    http::client c;
    const std::string sa = co_await subscribe(c, r, "orders", a.url("/a"));
    const std::string sb = co_await subscribe(c, r, "orders", b.url("/b"));
    RELAY_CO_ASSERT(!sa.empty() && !sb.empty());

    constexpr int kEvents = 200;
    std::map<std::string, std::string> body_of;  // event id -> the body posted
    for (int i = 0; i < kEvents; ++i) {
      // Whitespace, 2.50, 1e3 and escapes: a relay that re-serialized the
      // JSON would change these bytes.
      const std::string body = "{ \"n\" : " + std::to_string(i) +
                               ",\n  \"price\": 2.50, \"big\": 1e3, \"s\": \"caf\\u00e9 \xc3\xa9 \\\"q\\\"\" }";
      auto [st, id] = co_await publish(c, r, "orders", body);
      EXPECT_EQ(st, 202);
      RELAY_CO_ASSERT(!id.empty());
      body_of[id] = body;
    }
    RELAY_CO_ASSERT(body_of.size() == static_cast<std::size_t>(kEvents));  // ids are unique

    const bool done = co_await wait_for([&] { return r.svc->stats().outstanding == 0; });
    RELAY_CO_ASSERT(done);
    const relay::relay_stats s = r.svc->stats();
    EXPECT_EQ(s.events_accepted, static_cast<std::uint64_t>(kEvents));
    EXPECT_EQ(s.deliveries_delivered, static_cast<std::uint64_t>(2 * kEvents));
    EXPECT_EQ(s.deliveries_failed, 0u);
    EXPECT_EQ(s.delivery_attempts, static_cast<std::uint64_t>(2 * kEvents));
    EXPECT_EQ(s.delivery_retries, 0u);
    EXPECT_EQ(s.queued, 0);
    EXPECT_EQ(s.in_flight, 0);

    for (const auto& [id, body] : body_of) {
      api_result ev = co_await call(c, "GET", r.url("/v1/events/" + id));
      EXPECT_EQ(ev.status, 200);
      RELAY_CO_ASSERT(ev.value["deliveries"].size() == 2u);
      for (const auto& d : ev.value["deliveries"]) {
        EXPECT_EQ(d["status"], "delivered") << id;
        EXPECT_EQ(d["attempts"], 1) << id;
        EXPECT_EQ(d["last_status"], 200) << id;
        EXPECT_FALSE(d.contains("last_error")) << d.dump();
      }
    }

    for (const subscriber* sub : {&a, &b}) {
      const std::vector<hit> hits = sub->hits();
      EXPECT_EQ(hits.size(), static_cast<std::size_t>(kEvents));
      std::set<std::string> ids;
      for (const auto& h : hits) {
        EXPECT_TRUE(ids.insert(h.event).second) << "event " << h.event << " received twice";
        auto it = body_of.find(h.event);
        RELAY_CO_ASSERT(it != body_of.end());
        EXPECT_EQ(h.body, it->second);  // byte for byte
        EXPECT_EQ(h.content_type, "application/json");
        EXPECT_EQ(h.topic, "orders");
        EXPECT_EQ(h.attempt, "1");
        EXPECT_EQ(h.path, sub == &a ? "/a" : "/b");
      }
      EXPECT_EQ(ids.size(), static_cast<std::size_t>(kEvents));
    }

    auto rep = co_await r.stop();
    EXPECT_TRUE(rep.drained);
    EXPECT_EQ(rep.dropped, 0u);
    co_await a.stop();
    co_await b.stop();
  });
}

// ---- 2. retries by status -------------------------------------------------------------

TEST(RelayDelivery, RetriesUntil2xxGivesUpAfterMaxAttemptsAndNeverRetriesA4xx) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.max_attempts = 4;
    test_relay r(cfg);
    constexpr int kFailFirst = 2;  // K
    subscriber sub([](const hit& h, int nth) {
      reply rep;
      if (h.path == "/flaky") rep.status = nth <= kFailFirst ? 500 : 200;
      if (h.path == "/always500") rep.status = 500;
      if (h.path == "/bad400") rep.status = 400;
      if (h.path == "/gone404") rep.status = 404;
      if (h.path == "/slow408") rep.status = nth == 1 ? 408 : 200;
      if (h.path == "/busy503") rep.status = nth == 1 ? 503 : 200;
      return rep;
    });
    http::client c;
    struct expect {
      std::string path;
      std::string status;
      int attempts;
      int last_status;
    };
    const std::vector<expect> cases = {
        {"/flaky", "delivered", kFailFirst + 1, 200}, {"/always500", "failed", cfg.max_attempts, 500},
        {"/bad400", "failed", 1, 400},                {"/gone404", "failed", 1, 404},
        {"/slow408", "delivered", 2, 200},            {"/busy503", "delivered", 2, 200},
    };
    std::map<std::string, std::string> path_of;  // subscription id -> path
    for (const auto& e : cases) {
      const std::string id = co_await subscribe(c, r, "t", sub.url(e.path));
      RELAY_CO_ASSERT(!id.empty());
      path_of[id] = e.path;
    }

    constexpr int kEvents = 3;
    std::vector<std::string> events;
    for (int i = 0; i < kEvents; ++i) {
      auto [st, id] = co_await publish(c, r, "t", "{\"i\":" + std::to_string(i) + "}");
      EXPECT_EQ(st, 202);
      RELAY_CO_ASSERT(!id.empty());
      events.push_back(id);
    }
    for (const auto& id : events) {
      json ev = co_await until_final(c, r, id);
      RELAY_CO_ASSERT(ev["deliveries"].size() == cases.size());
      for (const auto& entry : path_of) {
        // Named copies: clang 14 cannot capture structured bindings in a lambda.
        const std::string& sub_id = entry.first;
        const std::string& path = entry.second;
        const json d = delivery_to(ev, sub_id);
        RELAY_CO_ASSERT(!d.is_null());
        const auto& e = *std::find_if(cases.begin(), cases.end(), [&](const expect& x) { return x.path == path; });
        EXPECT_EQ(d["status"], e.status) << path;
        EXPECT_EQ(d["attempts"], e.attempts) << path;
        EXPECT_EQ(d["last_status"], e.last_status) << path;
        EXPECT_FALSE(d.contains("last_error")) << path << ": " << d.dump();
      }
    }
    // What each subscriber path saw: X-Sluice-Attempt 1, 2, ... in order, and
    // nothing after the final answer (the event was final when we looked, so
    // a further attempt would already have been counted by the relay).
    const std::vector<hit> hits = sub.hits();
    for (const auto& id : events) {
      for (const auto& e : cases) {
        std::vector<std::string> want;
        for (int i = 1; i <= e.attempts; ++i) want.push_back(std::to_string(i));
        EXPECT_EQ(attempts_of(hits, e.path, id), want) << e.path;
      }
    }
    int per_event_attempts = 0;
    for (const auto& e : cases) per_event_attempts += e.attempts;
    const relay::relay_stats s = r.svc->stats();
    EXPECT_EQ(s.delivery_attempts, static_cast<std::uint64_t>(kEvents * per_event_attempts));
    EXPECT_EQ(s.delivery_retries,
              static_cast<std::uint64_t>(kEvents * (per_event_attempts - static_cast<int>(cases.size()))));
    EXPECT_EQ(s.deliveries_delivered, static_cast<std::uint64_t>(kEvents * 3));
    EXPECT_EQ(s.deliveries_failed, static_cast<std::uint64_t>(kEvents * 3));
    EXPECT_EQ(hits.size(), static_cast<std::size_t>(kEvents * per_event_attempts));

    co_await r.stop();
    co_await sub.stop();
  });
}

// ---- 3. Retry-After -------------------------------------------------------------------

// Two subscriptions answering 429 and 503 with Retry-After: 1 to the first
// attempt, then 200: with --retry-max `retry_max`, the retry must arrive at
// least `at_least` after the first attempt did.
sluice::task<void> retry_after_case(clock::duration retry_max, clock::duration at_least) {
  relay::config cfg = test_config();
  cfg.retry_max = retry_max;
  test_relay r(cfg);
  subscriber sub([](const hit& h, int nth) {
    if (nth > 1) return reply{};
    // (Built whole: g++ 12 -O3 flags a bogus -Wrestrict on assigning "1".)
    return reply{.status = h.path == "/429" ? 429 : 503, .retry_after = std::string(1, '1')};
  });
  http::client c;
  for (const char* path : {"/429", "/503"}) {
    const std::string id = co_await subscribe(c, r, "t", sub.url(path));
    RELAY_CO_ASSERT(!id.empty());
  }
  auto [st, id] = co_await publish(c, r, "t", "{}");
  RELAY_CO_ASSERT(st == 202);
  json ev = co_await until_final(c, r, id);
  RELAY_CO_ASSERT(ev["deliveries"].size() == 2u);
  for (const auto& d : ev["deliveries"]) {
    EXPECT_EQ(d["status"], "delivered");
    EXPECT_EQ(d["attempts"], 2);
  }
  const std::vector<hit> hits = sub.hits();
  for (const char* path : {"/429", "/503"}) {
    std::vector<clock::time_point> at;
    for (const auto& h : hits) {
      if (h.path == path) at.push_back(h.at);
    }
    RELAY_CO_ASSERT(at.size() == 2u);
    const auto gap = at[1] - at[0];
    EXPECT_GE(gap, at_least - kClockSlack)
        << path << ": the retry came " << duration_cast<milliseconds>(gap).count() << " ms after the first attempt";
  }
  co_await r.stop();
  co_await sub.stop();
}

TEST(RelayDelivery, RetryAfterIsWaitedOutButCappedAtRetryMax) {
  // Retry-After: 1 with --retry-max 300ms: at least 300 ms.
  sl_test::run_checked([]() -> sluice::task<void> { co_await retry_after_case(300ms, 300ms); });
}

TEST(RelayDelivery, RetryAfterBelowRetryMaxIsWaitedInFull) {
  // Retry-After: 1 with --retry-max 2s: at least the second asked for.
  sl_test::run_checked([]() -> sluice::task<void> { co_await retry_after_case(2s, 1s); });
}

// ---- 4. slow subscribers, timeouts ------------------------------------------------------

TEST(RelayDelivery, SlowSubscriberGetsAtMostItsConcurrencyAndDoesNotStallOthers) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.workers = 3;
    cfg.per_subscriber_concurrency = 2;  // P: one worker stays free for others
    test_relay r(cfg);
    subscriber slow([](const hit&, int) { return reply{.hold = true}; });
    subscriber fast;
    http::client c;
    const std::string slow_id = co_await subscribe(c, r, "t", slow.url());
    const std::string fast_id = co_await subscribe(c, r, "t", fast.url());
    RELAY_CO_ASSERT(!slow_id.empty() && !fast_id.empty());

    constexpr int kEvents = 10;
    std::vector<std::string> events;
    for (int i = 0; i < kEvents; ++i) {
      auto [st, id] = co_await publish(c, r, "t", "{\"i\":" + std::to_string(i) + "}");
      RELAY_CO_ASSERT(st == 202);
      events.push_back(id);
    }
    // The fast subscriber gets every event while the slow one holds P requests.
    const bool fast_done = co_await wait_for([&] {
      // (outstanding too: a delivery is counted delivered a moment before
      // it stops being outstanding.)
      const relay::relay_stats s = r.svc->stats();
      return s.deliveries_delivered == static_cast<std::uint64_t>(kEvents) && s.outstanding == kEvents &&
             slow.st->active.load() == 2;
    });
    RELAY_CO_ASSERT(fast_done);
    EXPECT_EQ(fast.hit_count(), static_cast<std::size_t>(kEvents));
    EXPECT_EQ(slow.hit_count(), 2u);
    {
      const relay::relay_stats s = r.svc->stats();
      EXPECT_EQ(s.in_flight, 2);
      EXPECT_EQ(s.queued, kEvents - 2);  // the slow subscriber's line
      EXPECT_EQ(s.outstanding, kEvents);
    }
    for (const auto& id : events) {
      api_result ev = co_await call(c, "GET", r.url("/v1/events/" + id));
      EXPECT_EQ(delivery_to(ev.value, fast_id)["status"], "delivered");
      const std::string slow_status = delivery_to(ev.value, slow_id)["status"];
      EXPECT_TRUE(slow_status == "in_flight" || slow_status == "pending") << slow_status;
    }

    slow.release();
    const bool all_done = co_await wait_for([&] { return r.svc->stats().outstanding == 0; });
    RELAY_CO_ASSERT(all_done);
    EXPECT_EQ(r.svc->stats().deliveries_delivered, static_cast<std::uint64_t>(2 * kEvents));
    EXPECT_EQ(slow.hit_count(), static_cast<std::size_t>(kEvents));
    EXPECT_EQ(slow.st->max_active.load(), 2);  // reached P, never more
    for (const auto& id : events) {
      json ev = co_await until_final(c, r, id);
      EXPECT_EQ(delivery_to(ev, slow_id)["status"], "delivered");
      EXPECT_EQ(delivery_to(ev, slow_id)["attempts"], 1);
    }
    co_await r.stop();
    co_await slow.stop();
    co_await fast.stop();
  });
}

TEST(RelayDelivery, AttemptsThatTimeOutAreRetriedThenFail) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.delivery_timeout = 200ms;
    cfg.max_attempts = 3;
    test_relay r(cfg);
    subscriber mute([](const hit&, int) { return reply{.hold = true}; });  // never answers in time
    http::client c;
    const std::string sub_id = co_await subscribe(c, r, "t", mute.url());
    RELAY_CO_ASSERT(!sub_id.empty());
    const auto posted_at = clock::now();  // before the first attempt began
    auto [st, id] = co_await publish(c, r, "t", "{}");
    RELAY_CO_ASSERT(st == 202);
    json ev = co_await until_final(c, r, id);
    const json d = delivery_to(ev, sub_id);
    RELAY_CO_ASSERT(!d.is_null());
    EXPECT_EQ(d["status"], "failed");
    EXPECT_EQ(d["attempts"], 3);
    EXPECT_EQ(d["last_status"], 0);
    EXPECT_TRUE(d.contains("last_error") && d["last_error"].is_string() &&
                !d["last_error"].get<std::string>().empty())
        << d.dump();
    const std::vector<hit> hits = mute.hits();
    const std::vector<std::string> want = {"1", "2", "3"};
    EXPECT_EQ(attempts_of(hits, "/hook", id), want);
    // Attempt k+1 starts only after attempt k timed out, and attempt 1 began
    // after posted_at: attempt k arrives at least (k-1) timeouts after it.
    for (std::size_t i = 1; i < hits.size(); ++i) {
      const auto bound = static_cast<long>(i) * cfg.delivery_timeout - kClockSlack;
      EXPECT_GE(hits[i].at - posted_at, bound)
          << "attempt " << i + 1 << " came " << duration_cast<milliseconds>(hits[i].at - posted_at).count()
          << " ms after the post";
    }
    EXPECT_EQ(r.svc->stats().deliveries_failed, 1u);
    EXPECT_EQ(r.svc->stats().delivery_retries, 2u);
    co_await r.stop();
    co_await mute.stop();
  });
}

// ---- 5. connection errors ---------------------------------------------------------------

TEST(RelayDelivery, ConnectionResetsAreRetriedUntilDelivered) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.max_attempts = 5;
    test_relay r(cfg);
    resetting_subscriber rs(2);
    http::client c;
    const std::string sub_id = co_await subscribe(c, r, "t", rs.url());
    RELAY_CO_ASSERT(!sub_id.empty());
    auto [st, id] = co_await publish(c, r, "t", "{\"x\":1}");
    RELAY_CO_ASSERT(st == 202);
    json ev = co_await until_final(c, r, id);
    const json d = delivery_to(ev, sub_id);
    RELAY_CO_ASSERT(!d.is_null());
    EXPECT_EQ(d["status"], "delivered") << d.dump();
    EXPECT_EQ(d["attempts"], 3);
    EXPECT_EQ(d["last_status"], 200);
    EXPECT_FALSE(d.contains("last_error")) << d.dump();  // the reset was an earlier attempt's
    const std::vector<std::string> want = {"1", "2", "3"};
    EXPECT_EQ(rs.attempts(), want);
    const relay::relay_stats s = r.svc->stats();
    EXPECT_EQ(s.delivery_attempts, 3u);
    EXPECT_EQ(s.delivery_retries, 2u);
    EXPECT_EQ(s.deliveries_delivered, 1u);
    co_await r.stop();
    co_await rs.stop();
  });
}

TEST(RelayDelivery, NothingListeningIsRetriedThenFails) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.max_attempts = 3;
    test_relay r(cfg);
    std::string dead;
    {
      auto ln = sluice::net::tcp_listener::listen("127.0.0.1:0");
      dead = "http://" + ln.local_address() + "/hook";
    }  // closed: connecting is refused
    http::client c;
    const std::string sub_id = co_await subscribe(c, r, "t", dead);
    RELAY_CO_ASSERT(!sub_id.empty());
    auto [st, id] = co_await publish(c, r, "t", "{}");
    RELAY_CO_ASSERT(st == 202);
    json ev = co_await until_final(c, r, id);
    const json d = delivery_to(ev, sub_id);
    RELAY_CO_ASSERT(!d.is_null());
    EXPECT_EQ(d["status"], "failed");
    EXPECT_EQ(d["attempts"], 3);
    EXPECT_EQ(d["last_status"], 0);
    const std::string err = d.value("last_error", std::string());
    EXPECT_NE(err.find("refused"), std::string::npos) << d.dump();
    EXPECT_EQ(r.svc->stats().delivery_retries, 2u);
    EXPECT_EQ(r.svc->stats().deliveries_failed, 1u);
    co_await r.stop();
  });
}

// ---- 6. the admission queue --------------------------------------------------------------

TEST(RelayDelivery, FullQueueRefusesWholeEventsWith503AndEnqueuesNothing) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.queue = 10;  // Q
    cfg.workers = 2;
    cfg.per_subscriber_concurrency = 1;
    test_relay r(cfg);
    subscriber stuck([](const hit&, int) { return reply{.hold = true}; });
    http::client c;
    // "wide": 3 subscriptions, "narrow": 2, "single": 1, "empty": none.
    for (const char* p : {"/w1", "/w2", "/w3"}) {
      RELAY_CO_ASSERT(!(co_await subscribe(c, r, "wide", stuck.url(p))).empty());
    }
    for (const char* p : {"/n1", "/n2"}) {
      RELAY_CO_ASSERT(!(co_await subscribe(c, r, "narrow", stuck.url(p))).empty());
    }
    RELAY_CO_ASSERT(!(co_await subscribe(c, r, "single", stuck.url("/s1"))).empty());

    std::vector<std::string> accepted;
    auto post = [&](std::string topic) -> sluice::task<int> {
      auto [st, id] = co_await publish(c, r, topic, "{}");
      if (st == 202) accepted.push_back(id);
      co_return st;
    };
    auto queued = [&] { return r.svc->stats().queued; };

    // Both workers stuck on the first event's deliveries; its third waits.
    EXPECT_EQ(co_await post("wide"), 202);
    const bool stuck_now = co_await wait_for([&] {
      return r.svc->stats().in_flight == 2 && stuck.st->active.load() == 2;
    });
    RELAY_CO_ASSERT(stuck_now);
    EXPECT_EQ(queued(), 1);
    EXPECT_EQ(co_await post("wide"), 202);    // 4
    EXPECT_EQ(co_await post("wide"), 202);    // 7
    EXPECT_EQ(co_await post("single"), 202);  // 8
    EXPECT_EQ(queued(), 8);
    EXPECT_EQ(co_await metric(c, r, "sluice_relay_queue_depth"), 8.0);

    // 3 more do not fit (2 would): refused whole, with Retry-After.
    {
      const std::uint64_t rejected_before = r.svc->stats().events_rejected_queue_full;
      api_result refused = co_await call(c, "POST", r.url("/v1/topics/wide/events"), "{}");
      EXPECT_EQ(refused.status, 503);
      EXPECT_TRUE(refused.header.has("retry-after"));
      EXPECT_TRUE(refused.value.is_object() && refused.value["error"].is_string()) << refused.body;
      EXPECT_EQ(refused.header.get_or("content-type", ""), "application/json");
      EXPECT_EQ(queued(), 8);  // nothing of it enqueued
      EXPECT_EQ(co_await metric(c, r, "sluice_relay_queue_depth"), 8.0);
      EXPECT_EQ(r.svc->stats().events_rejected_queue_full, rejected_before + 1);
    }
    // 2 fit exactly: accepted, the queue at Q.
    EXPECT_EQ(co_await post("narrow"), 202);
    EXPECT_EQ(queued(), 10);
    EXPECT_EQ(co_await post("single"), 503);  // even 1 does not fit now
    EXPECT_EQ(co_await post("wide"), 503);
    EXPECT_EQ(queued(), 10);
    EXPECT_EQ(co_await metric(c, r, "sluice_relay_queue_depth"), 10.0);
    EXPECT_EQ(co_await post("empty"), 202);  // no deliveries: always fits
    {
      const relay::relay_stats s = r.svc->stats();
      EXPECT_EQ(s.events_rejected_queue_full, 3u);
      EXPECT_EQ(s.events_accepted, 6u);
      EXPECT_EQ(s.outstanding, 12);  // 3 * 3 + 1 + 2
    }

    stuck.release();
    const bool drained = co_await wait_for([&] { return r.svc->stats().outstanding == 0; });
    RELAY_CO_ASSERT(drained);
    for (const auto& id : accepted) {
      json ev = co_await until_final(c, r, id);
      for (const auto& d : ev["deliveries"]) {
        EXPECT_EQ(d["status"], "delivered") << id;
        EXPECT_EQ(d["attempts"], 1) << id;
      }
    }
    const relay::relay_stats s = r.svc->stats();
    EXPECT_EQ(s.deliveries_delivered, 12u);
    EXPECT_EQ(s.queued, 0);
    EXPECT_EQ(stuck.hit_count(), 12u);
    EXPECT_EQ(co_await post("wide"), 202);  // room again
    co_await r.stop();
    co_await stuck.stop();
  });
}

// ---- 7. rate limiting --------------------------------------------------------------------

TEST(RelayDelivery, RateLimitedClientGets429WithRateLimitHeaders) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.rate = 1;
    cfg.burst = 3;
    test_relay r(cfg);
    http::client c;
    const auto began = clock::now();
    std::vector<int> statuses;
    api_result limited;
    // The burst passes; then a 429 (normally the 4th; a slow machine may
    // earn a token back per second, which the bound below allows for).
    for (int i = 0; i < 10; ++i) {
      api_result res = co_await call(c, "POST", r.url("/v1/topics/t/events"), "{}");
      statuses.push_back(res.status);
      if (res.status == 429) {
        limited = std::move(res);
        break;
      }
    }
    const double elapsed_s = std::chrono::duration<double>(clock::now() - began).count();
    RELAY_CO_ASSERT(statuses.size() >= 4u);
    EXPECT_EQ(statuses[0], 202);
    EXPECT_EQ(statuses[1], 202);
    EXPECT_EQ(statuses[2], 202);
    RELAY_CO_ASSERT(limited.status == 429);
    const auto passed = static_cast<double>(statuses.size() - 1);
    EXPECT_LE(passed, 3 + std::ceil(elapsed_s * cfg.rate)) << "tokens: the burst plus the rate";

    EXPECT_EQ(limited.header.get_or("retry-after", ""), "1");
    EXPECT_EQ(limited.header.get_or("ratelimit-limit", ""), "3");
    EXPECT_EQ(limited.header.get_or("ratelimit-remaining", ""), "0");
    const std::string reset(limited.header.get_or("ratelimit-reset", ""));
    RELAY_CO_ASSERT(!reset.empty());
    EXPECT_GE(std::stoi(reset), 1);
    EXPECT_LE(std::stoi(reset), 3);  // until the bucket of 3 is full at 1/s
    EXPECT_EQ(limited.header.get_or("content-type", ""), "application/json");
    EXPECT_TRUE(limited.value.is_object() && limited.value["error"].is_string()) << limited.body;

    // Health and metrics are outside /v1: never limited.
    for (int i = 0; i < 20; ++i) {
      EXPECT_EQ((co_await call(c, "GET", r.url("/healthz"))).status, 200);
      EXPECT_EQ((co_await call(c, "GET", r.url("/readyz"))).status, 200);
    }
    for (int i = 0; i < 5; ++i) EXPECT_EQ((co_await call(c, "GET", r.url("/metrics"))).status, 200);
    co_await r.stop();
  });
}

// ---- 8. a storm -------------------------------------------------------------------------

struct posted {
  std::string id;
  std::string topic;
  int deliveries = 0;
};

const std::vector<std::string> kStormTopics = {"alpha", "beta", "gamma", "delta"};

sluice::task<std::vector<posted>> poster(const test_relay* r, int which, int count) {
  http::client c;
  std::vector<posted> out;
  for (int i = 0; i < count; ++i) {
    const std::string& topic = kStormTopics[static_cast<std::size_t>(which + i) % kStormTopics.size()];
    const std::string body = "{\"poster\":" + std::to_string(which) + ",\"i\":" + std::to_string(i) + "}";
    for (;;) {
      api_result res = co_await call(c, "POST", r->url("/v1/topics/" + topic + "/events"), body);
      if (res.status == 202) {
        out.push_back({res.value.value("id", std::string()), topic, res.value.value("deliveries", -1)});
        break;
      }
      if (res.status != 503) {
        ADD_FAILURE() << "POST " << topic << ": " << res.status << " " << res.body;
        co_return out;
      }
      co_await sluice::yield();  // the queue is full for a moment: post again
    }
  }
  co_return out;
}

TEST(RelayDelivery, StormEveryDeliveryEndsOnceAndTheCountersAgree) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.workers = 16;
    cfg.per_subscriber_concurrency = 4;
    cfg.queue = 20000;
    cfg.max_attempts = 4;
    cfg.retry_base = 1ms;
    cfg.retry_max = 10ms;
    cfg.delivery_timeout = 30s;  // no attempt times out: every answer is counted
    test_relay r(cfg);
    // Flaky subscribers answer 500 at random (seeded; called under a lock).
    auto flaky = [](unsigned seed, int percent) -> script_fn {
      return [rng = std::mt19937(seed), percent](const hit&, int) mutable {
        reply rep;
        if (static_cast<int>(rng() % 100) < percent) rep.status = 500;
        return rep;
      };
    };
    subscriber steady;
    subscriber shaky(flaky(12345, 20));
    subscriber shakier(flaky(67890, 35));
    http::client c;
    // (topic, subscriber, path); each subscription has its own path.
    struct plan {
      std::string topic;
      subscriber* sub;
      std::string path;
    };
    const std::vector<plan> plans = {
        {"alpha", &steady, "/alpha-0"}, {"alpha", &shaky, "/alpha-1"},  {"beta", &shaky, "/beta-0"},
        {"gamma", &steady, "/gamma-0"}, {"gamma", &shaky, "/gamma-1"},  {"gamma", &shakier, "/gamma-2"},
        {"delta", &shakier, "/delta-0"}, {"delta", &steady, "/delta-1"},
    };
    std::map<std::string, std::string> path_of;  // subscription id -> path
    std::map<std::string, int> subs_per_topic;
    for (const auto& p : plans) {
      const std::string id = co_await subscribe(c, r, p.topic, p.sub->url(p.path));
      RELAY_CO_ASSERT(!id.empty());
      path_of[id] = p.path;
      ++subs_per_topic[p.topic];
    }

    const int kPosters = 4;
    const int kPerPoster = kSanitized ? 250 : 500;
    std::vector<sluice::join_handle<std::vector<posted>>> posters;
    for (int i = 0; i < kPosters; ++i) posters.push_back(sluice::spawn(&poster, &r, i, kPerPoster));
    std::vector<posted> events;
    for (auto& h : posters) {
      std::vector<posted> part = co_await h.join();
      events.insert(events.end(), part.begin(), part.end());
    }
    RELAY_CO_ASSERT(events.size() == static_cast<std::size_t>(kPosters * kPerPoster));
    std::int64_t total = 0;
    std::map<std::string, const posted*> by_id;
    for (const auto& e : events) {
      EXPECT_EQ(e.deliveries, subs_per_topic[e.topic]) << e.topic;
      total += e.deliveries;
      EXPECT_TRUE(by_id.emplace(e.id, &e).second) << "duplicate event id " << e.id;
    }

    const bool done = co_await wait_for([&] { return r.svc->stats().outstanding == 0; }, 120s);
    RELAY_CO_ASSERT(done);

    // The relay's view of every delivery.
    std::map<std::pair<std::string, std::string>, json> outcome;  // (event, path) -> delivery
    std::int64_t delivered = 0, failed = 0;
    for (const auto& e : events) {
      api_result ev = co_await call(c, "GET", r.url("/v1/events/" + e.id));
      RELAY_CO_ASSERT(ev.status == 200);
      EXPECT_EQ(ev.value["deliveries"].size(), static_cast<std::size_t>(e.deliveries));
      for (const auto& d : ev.value["deliveries"]) {
        const std::string status = d.value("status", std::string());
        if (status == "delivered") ++delivered;
        else if (status == "failed") ++failed;
        else ADD_FAILURE() << e.id << ": " << d.dump();
        outcome[{e.id, path_of[d.value("subscription", std::string())]}] = d;
      }
    }
    EXPECT_EQ(delivered + failed, total);

    // The subscribers' view: per (event, subscription) the answers given, in order.
    std::map<std::pair<std::string, std::string>, std::vector<int>> answers;
    std::uint64_t requests = 0;
    for (const subscriber* s : {&steady, &shaky, &shakier}) {
      for (const auto& h : s->hits()) {
        auto& got = answers[{h.event, h.path}];
        got.push_back(h.answered);
        EXPECT_EQ(h.attempt, std::to_string(got.size())) << h.event << h.path;  // 1, 2, ... in order
        ++requests;
        auto ev = by_id.find(h.event);
        RELAY_CO_ASSERT(ev != by_id.end());
        EXPECT_EQ(h.topic, ev->second->topic);
        EXPECT_EQ(h.path.rfind("/" + ev->second->topic + "-", 0), 0u) << h.path << " got " << h.topic;
      }
    }
    EXPECT_EQ(answers.size(), static_cast<std::size_t>(total));
    std::int64_t successes = 0;
    for (const auto& [key, d] : outcome) {
      const auto& got = answers[key];
      const auto ok = std::count_if(got.begin(), got.end(), [](int st) { return st >= 200 && st < 300; });
      successes += ok;
      EXPECT_EQ(static_cast<int>(got.size()), d.value("attempts", -1)) << key.first << key.second;
      if (d["status"] == "delivered") {
        EXPECT_EQ(ok, 1) << "delivered " << ok << " times: " << key.first << key.second;
        EXPECT_EQ(got.back(), 200) << key.first << key.second;  // nothing after the success
      } else {
        EXPECT_EQ(ok, 0) << key.first << key.second;
        EXPECT_EQ(static_cast<int>(got.size()), cfg.max_attempts);
        EXPECT_EQ(d.value("last_status", 0), 500);
      }
    }
    EXPECT_EQ(successes, delivered);

    const relay::relay_stats s = r.svc->stats();
    EXPECT_EQ(s.events_accepted, events.size());
    EXPECT_EQ(s.deliveries_delivered, static_cast<std::uint64_t>(delivered));
    EXPECT_EQ(s.deliveries_failed, static_cast<std::uint64_t>(failed));
    EXPECT_EQ(s.deliveries_dropped, 0u);
    EXPECT_EQ(s.delivery_attempts, requests);
    EXPECT_EQ(s.delivery_retries, requests - static_cast<std::uint64_t>(total));
    EXPECT_EQ(s.outstanding, 0);
    EXPECT_EQ(s.queued, 0);
    EXPECT_EQ(s.in_flight, 0);
    EXPECT_GT(s.delivery_retries, 0u);  // the flaky ones did fail sometimes

    auto rep = co_await r.stop();
    EXPECT_TRUE(rep.drained);
    EXPECT_EQ(rep.dropped, 0u);
    co_await steady.stop();
    co_await shaky.stop();
    co_await shakier.stop();
  });
}

// ---- shutdown ---------------------------------------------------------------------------

TEST(RelayShutdown, StuckDeliveriesAreDroppedAndLoggedOnceEach) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.workers = 4;
    cfg.per_subscriber_concurrency = 2;
    cfg.retry_max = 60s;
    test_relay r(cfg);
    subscriber stuck([](const hit&, int) { return reply{.hold = true}; });
    // Answers 503 with Retry-After: 30: each retry waits at least 30 s.
    subscriber later([](const hit&, int) { return reply{.status = 503, .retry_after = "30"}; });
    http::client c;
    const std::string stuck_id = co_await subscribe(c, r, "t", stuck.url());
    const std::string later_id = co_await subscribe(c, r, "t", later.url());
    RELAY_CO_ASSERT(!stuck_id.empty() && !later_id.empty());
    constexpr int kEvents = 4;
    std::set<std::string> events;
    for (int i = 0; i < kEvents; ++i) {
      auto [st, id] = co_await publish(c, r, "t", "{}");
      RELAY_CO_ASSERT(st == 202);
      events.insert(id);
    }
    // 2 in flight and 2 in line at the stuck one; 4 retries waiting.
    const bool settled = co_await wait_for([&] {
      const relay::relay_stats s = r.svc->stats();
      return stuck.st->active.load() == 2 && s.delivery_retries == static_cast<std::uint64_t>(kEvents) &&
             s.in_flight == 2;
    });
    RELAY_CO_ASSERT(settled);

    relay::shutdown_report rep = co_await r.stop(100ms);
    EXPECT_FALSE(rep.drained);
    EXPECT_EQ(rep.dropped, static_cast<std::uint64_t>(2 * kEvents));
    EXPECT_EQ(rep.stats.deliveries_dropped, static_cast<std::uint64_t>(2 * kEvents));
    EXPECT_EQ(rep.stats.deliveries_delivered, 0u);
    EXPECT_EQ(rep.stats.deliveries_failed, 0u);
    EXPECT_EQ(rep.stats.outstanding, 0);
    EXPECT_EQ(rep.stats.queued, 0);
    EXPECT_EQ(rep.stats.in_flight, 0);

    // One "delivery dropped" line per delivery, naming its event and subscription.
    std::map<std::pair<std::string, std::string>, int> lines;
    std::multiset<int> stuck_attempts;
    for (const json& j : log_records(r, "delivery dropped")) {
      const std::string ev = j.value("event", std::string());
      const std::string sub = j.value("subscription", std::string());
      EXPECT_EQ(events.count(ev), 1u) << j.dump();
      EXPECT_TRUE(sub == stuck_id || sub == later_id) << j.dump();
      EXPECT_EQ(j.value("level", std::string()), "warn");
      ++lines[{ev, sub}];
      if (sub == stuck_id) stuck_attempts.insert(j.value("attempts", -1));
      if (sub == later_id) {
        EXPECT_EQ(j.value("attempts", -1), 1) << j.dump();  // dropped in its backoff
      }
    }
    EXPECT_EQ(lines.size(), static_cast<std::size_t>(2 * kEvents));
    for (const auto& ev : events) {
      EXPECT_EQ((lines[{ev, stuck_id}]), 1) << ev;
      EXPECT_EQ((lines[{ev, later_id}]), 1) << ev;
    }
    // Two were cut off in flight (1 attempt made), two never started.
    const std::multiset<int> want_attempts = {0, 0, 1, 1};
    EXPECT_EQ(stuck_attempts, want_attempts);

    const std::vector<json> summary = log_records(r, "deliveries dropped");
    RELAY_CO_ASSERT(summary.size() == 1u);
    EXPECT_NE(summary[0].value("msg", std::string()).find(std::to_string(2 * kEvents)), std::string::npos)
        << summary[0].dump();
    EXPECT_EQ(summary[0].value("dropped", -1), 2 * kEvents);
    EXPECT_EQ(summary[0].value("drained", true), false);
    EXPECT_EQ(summary[0].value("level", std::string()), "warn");

    co_await stuck.stop();
    co_await later.stop();
  });
}

TEST(RelayShutdown, NothingStuckDrainsEverything) {
  sl_test::run_checked([]() -> sluice::task<void> {
    test_relay r;
    subscriber sub([](const hit&, int nth) { return reply{.status = nth == 1 ? 500 : 200}; });
    http::client c;
    RELAY_CO_ASSERT(!(co_await subscribe(c, r, "t", sub.url("/a"))).empty());
    RELAY_CO_ASSERT(!(co_await subscribe(c, r, "t", sub.url("/b"))).empty());
    constexpr int kEvents = 20;
    for (int i = 0; i < kEvents; ++i) {
      auto [st, id] = co_await publish(c, r, "t", "{}");
      EXPECT_EQ(st, 202);
    }
    // No waiting first: the drain lets queued deliveries and their retries end.
    relay::shutdown_report rep = co_await r.stop(10s);
    EXPECT_TRUE(rep.drained);
    EXPECT_EQ(rep.dropped, 0u);
    EXPECT_EQ(rep.stats.deliveries_delivered, static_cast<std::uint64_t>(2 * kEvents));
    EXPECT_EQ(rep.stats.delivery_retries, static_cast<std::uint64_t>(2 * kEvents));
    EXPECT_EQ(rep.stats.outstanding, 0);
    EXPECT_TRUE(log_records(r, "delivery dropped").empty());
    const std::vector<json> summary = log_records(r, "deliveries dropped");
    RELAY_CO_ASSERT(summary.size() == 1u);
    EXPECT_EQ(summary[0].value("dropped", -1), 0);
    EXPECT_EQ(summary[0].value("drained", false), true);
    EXPECT_EQ(summary[0].value("level", std::string()), "info");
    EXPECT_EQ(sub.hit_count(), static_cast<std::size_t>(4 * kEvents));
    co_await sub.stop();
  });
}

}  // namespace
