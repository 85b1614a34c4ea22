// Middleware: each one over a real server (the rate limiter's keys come from
// the connection), plus chain order.
#include "http_test_util.hpp"

#include <sluice/http/middleware.hpp>
#include <sluice/http/router.hpp>

#include <nlohmann/json.hpp>

#include <atomic>

using namespace std::chrono_literals;
using sl_http::fetch;
using sl_http::get;
using sl_http::raw_client;
using sl_http::test_server;
using sluice::task;
namespace http = sluice::http;

namespace {

task<void> ok(http::request&, http::response& res) {
  res.send(200, "ok");
  co_return;
}

// Records the order middleware ran in.
http::middleware tag(std::string name, std::vector<std::string>& order) {
  return [name, &order](http::handler next) -> http::handler {
    return [name, &order, next](http::request& req, http::response& res) -> task<void> {
      order.push_back(name);
      co_await next(req, res);
    };
  };
}

}  // namespace

TEST(HttpMiddleware, ChainRunsTheFirstLayerOutermost) {
  sl_test::run_checked([]() -> task<void> {
    std::vector<std::string> order;
    test_server ts(http::chain(ok, {tag("a", order), tag("b", order), tag("c", order)}));
    auto r = co_await fetch(ts.address, get("/"));
    EXPECT_TRUE(r && r->status == 200);
    EXPECT_EQ(order, (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_FALSE(co_await ts.stop());
  });
  EXPECT_THROW(http::chain(ok, {http::middleware{}}), std::invalid_argument);
  EXPECT_THROW(http::chain(http::handler{}, {}), std::invalid_argument);
}

TEST(HttpMiddleware, RecoverTurnsAnExceptionInto500AndOneLogLineAndKeepsTheConnection) {
  sl_test::run_checked([]() -> task<void> {
    std::vector<std::string> lines;
    http::router mux;
    mux.handle("/boom", [](http::request&, http::response&) -> task<void> {
      throw std::runtime_error("kaput");
      co_return;
    });
    mux.handle("/fine", ok);
    test_server ts(http::chain(mux, {http::recover([&](std::string_view l) { lines.emplace_back(l); }),
                                     http::request_id()}));
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/boom", "X-Request-Id: abc-123\r\n") + get("/fine")));
    auto a = co_await c.read_response();
    EXPECT_TRUE(a && a->status == 500);
    auto b = co_await c.read_response();  // same connection: still usable
    EXPECT_TRUE(b && b->status == 200);
    c.close();
    EXPECT_FALSE(co_await ts.stop());
    EXPECT_EQ(lines.size(), 1u);
    if (!lines.empty()) {
      EXPECT_NE(lines[0].find("kaput"), std::string::npos);
      EXPECT_NE(lines[0].find("abc-123"), std::string::npos);
      EXPECT_NE(lines[0].find("\"target\":\"/boom\""), std::string::npos);
    }
  });
}

TEST(HttpMiddleware, RequestIdKeepsASaneClientIdAndReplacesAnInsaneOne) {
  sl_test::run_checked([]() -> task<void> {
    std::string seen;
    test_server ts(http::chain(
        [&](http::request& req, http::response& res) -> task<void> {
          seen = std::string(http::request_id(req));
          res.send(200, "ok");
          co_return;
        },
        {http::request_id()}));
    auto a = co_await fetch(ts.address, get("/", "X-Request-Id: client.id_1\r\n"));
    EXPECT_TRUE(a && a->header("X-Request-Id") == "client.id_1");
    EXPECT_EQ(seen, "client.id_1");
    auto b = co_await fetch(ts.address, get("/", "X-Request-Id: <script>\r\n"));
    EXPECT_TRUE(b.has_value());
    if (b) {
      const std::string id = b->header("X-Request-Id").value_or("");
      EXPECT_EQ(id.size(), 16u);
      EXPECT_EQ(id, seen);
    }
    const std::string previous = seen;
    auto c = co_await fetch(ts.address, get("/"));
    EXPECT_TRUE(c && c->header("X-Request-Id").has_value() && *c->header("X-Request-Id") != previous);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpMiddleware, AccessLogWritesOneJsonLinePerRequest) {
  sl_test::run_checked([]() -> task<void> {
    std::vector<std::string> lines;
    http::router mux;
    mux.handle("GET /items/{id}", ok);
    test_server ts(http::chain(mux, {http::access_log([&](std::string_view l) { lines.emplace_back(l); })}));
    EXPECT_TRUE((co_await fetch(ts.address, get("/items/9?x=\"q\""))).has_value());
    EXPECT_TRUE((co_await fetch(ts.address, get("/missing"))).has_value());
    EXPECT_FALSE(co_await ts.stop());
    EXPECT_EQ(lines.size(), 2u);
    if (lines.size() == 2) {
      const auto j = nlohmann::json::parse(lines[0]);
      EXPECT_EQ(j["method"], "GET");
      EXPECT_EQ(j["target"], "/items/9?x=\"q\"");
      EXPECT_EQ(j["pattern"], "GET /items/{id}");
      EXPECT_EQ(j["status"], 200);
      EXPECT_EQ(nlohmann::json::parse(lines[1])["status"], 404);
    }
  });
}

TEST(HttpMiddleware, TimeoutGivesTheHandlerADeadlineAndAnswers503) {
  sl_test::run_checked([]() -> task<void> {
    std::error_code seen;
    test_server ts(http::chain(
        [&](http::request& req, http::response& res) -> task<void> {
          co_await req.ctx().done();  // a handler that waits on its context
          seen = req.ctx().err();
          res.send(200, "late");
        },
        {http::timeout(50ms, "too slow")}));
    auto r = co_await fetch(ts.address, get("/"));
    EXPECT_TRUE(r && r->status == 503 && r->body == "too slow\n");
    EXPECT_EQ(seen, sluice::errc::deadline_exceeded);
    EXPECT_FALSE(co_await ts.stop());
  });
  EXPECT_THROW(http::timeout(0ms), std::invalid_argument);
}

TEST(HttpMiddleware, TimeoutLeavesAFastHandlerAlone) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(http::chain(ok, {http::timeout(10s)}));
    auto r = co_await fetch(ts.address, get("/"));
    EXPECT_TRUE(r && r->status == 200 && r->body == "ok");
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpMiddleware, RateLimitAnswers429WithRetryAfterAndRateLimitHeaders) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(http::chain(ok, {http::rate_limit({.limit = sluice::rate::limit(0.5), .burst = 3})}));
    auto c = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await c.send(get("/") + get("/") + get("/") + get("/")));
    for (int i = 0; i < 3; ++i) {
      auto r = co_await c.read_response();
      EXPECT_TRUE(r && r->status == 200) << i;
    }
    auto r = co_await c.read_response();
    EXPECT_TRUE(r && r->status == 429);
    if (r) {
      // One token every 2 s: Retry-After is 2 (or 1 if the clock moved on).
      const int retry = std::stoi(r->header("Retry-After").value_or("0"));
      EXPECT_GE(retry, 1);
      EXPECT_LE(retry, 2);
      EXPECT_EQ(r->header("RateLimit-Limit"), "3");
      EXPECT_EQ(r->header("RateLimit-Remaining"), "0");
      const int reset = std::stoi(r->header("RateLimit-Reset").value_or("0"));
      EXPECT_GE(reset, 5);  // ~6 s until three tokens are back
      EXPECT_LE(reset, 6);
    }
    c.close();
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpMiddleware, RateLimitCanAddHeadersToAllowedResponses) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts(http::chain(
        ok, {http::rate_limit({.limit = sluice::rate::limit(1), .burst = 5, .headers_on_success = true})}));
    auto r = co_await fetch(ts.address, get("/"));
    EXPECT_TRUE(r && r->status == 200);
    if (r) {
      EXPECT_EQ(r->header("RateLimit-Limit"), "5");
      EXPECT_EQ(r->header("RateLimit-Remaining"), "4");
    }
    EXPECT_FALSE(co_await ts.stop());
  });
}

namespace {
// A hand-made request (requests are not copyable: handed out by pointer).
std::unique_ptr<http::request> make_request(std::string_view remote,
                                            std::vector<std::pair<std::string, std::string>> hdrs = {}) {
  auto req = std::make_unique<http::request>("GET", "/");
  req->set_remote_address(remote);
  for (auto& [n, v] : hdrs) req->header().add(n, v);
  return req;
}
}  // namespace

TEST(HttpMiddleware, RateLimitKeysByPeerIpIgnoringForwardedForFromUntrustedPeers) {
  http::client_rate_limiter lim({.limit = sluice::rate::limit(1), .burst = 1});
  auto req = make_request("203.0.113.9:5555", {{"X-Forwarded-For", "1.2.3.4"}});
  EXPECT_EQ(lim.key_of(*req), "203.0.113.9");
  auto v6 = make_request("[2001:db8::1]:80");
  EXPECT_EQ(lim.key_of(*v6), "2001:db8::1");
}

TEST(HttpMiddleware, RateLimitBelievesForwardedForOnlyFromTrustedProxies) {
  http::client_rate_limiter lim(
      {.limit = sluice::rate::limit(1), .burst = 1, .trusted_proxies = {"10.0.0.0/8", "192.168.1.7"}});
  // The rightmost untrusted hop is the client; what it claims to its left is ignored.
  auto a = make_request("10.1.2.3:999", {{"X-Forwarded-For", "6.6.6.6, 198.51.100.4, 10.9.9.9"}});
  EXPECT_EQ(lim.key_of(*a), "198.51.100.4");
  auto b = make_request("192.168.1.7:1", {{"X-Forwarded-For", "198.51.100.5"}, {"X-Forwarded-For", "10.0.0.2"}});
  EXPECT_EQ(lim.key_of(*b), "198.51.100.5");
  auto untrusted = make_request("192.168.1.8:1", {{"X-Forwarded-For", "198.51.100.5"}});
  EXPECT_EQ(lim.key_of(*untrusted), "192.168.1.8");
  auto all_ours = make_request("10.0.0.1:1", {{"X-Forwarded-For", "10.0.0.5"}});
  EXPECT_EQ(lim.key_of(*all_ours), "10.0.0.5");
  auto none = make_request("10.0.0.1:1");
  EXPECT_EQ(lim.key_of(*none), "10.0.0.1");
}

TEST(HttpMiddleware, RateLimitByApiKeyFallsBackToTheClientIp) {
  http::client_rate_limiter lim({.limit = sluice::rate::limit(1), .burst = 1, .key = http::rate_key::api_key});
  EXPECT_EQ(lim.key_of(*make_request("1.1.1.1:1", {{"x-api-key", "k1"}})), "key:k1");
  EXPECT_EQ(lim.key_of(*make_request("1.1.1.1:1")), "1.1.1.1");
  // Two clients with one key share its bucket.
  const auto t = sluice::clock::now();
  EXPECT_TRUE(lim.check(*make_request("1.1.1.1:1", {{"X-API-Key", "shared"}}), t).allowed);
  EXPECT_FALSE(lim.check(*make_request("2.2.2.2:1", {{"X-API-Key", "shared"}}), t).allowed);
  EXPECT_EQ(lim.rejected(), 1u);
}

TEST(HttpMiddleware, RateLimitRejectsBadOptions) {
  EXPECT_THROW(http::client_rate_limiter({.limit = sluice::rate::limit(0), .burst = 1}), std::invalid_argument);
  EXPECT_THROW(http::client_rate_limiter({.limit = sluice::rate::limit(1), .burst = 0}), std::invalid_argument);
  EXPECT_THROW(http::client_rate_limiter({.limit = sluice::rate::limit(1), .burst = 1, .trusted_proxies = {"nope"}}),
               std::invalid_argument);
  EXPECT_THROW(http::client_rate_limiter({.limit = sluice::rate::limit(1), .burst = 1, .trusted_proxies = {"10.0.0.0/33"}}),
               std::invalid_argument);
}

TEST(HttpMiddleware, ConcurrencyLimitShedsWith503AndRetryAfter) {
  sl_test::run_checked([]() -> task<void> {
    sluice::chan<int> release(0);
    std::atomic<int> inside{0};
    auto limiter = std::make_shared<sluice::concurrency_limiter>(2);
    test_server ts(http::chain(
        [&](http::request&, http::response& res) -> task<void> {
          ++inside;
          co_await release.recv();
          res.send(200, "done");
        },
        {http::concurrency_limit(limiter, std::chrono::seconds(3))}));
    auto a = co_await raw_client::connect(ts.address);
    auto b = co_await raw_client::connect(ts.address);
    EXPECT_TRUE(co_await a.send(get("/")));
    EXPECT_TRUE(co_await b.send(get("/")));
    EXPECT_TRUE(co_await sl_test::until([&] { return inside.load() == 2; }));
    auto shed = co_await fetch(ts.address, get("/"));
    EXPECT_TRUE(shed && shed->status == 503);
    if (shed) {
      EXPECT_EQ(shed->header("Retry-After"), "3");
    }
    co_await release.send(1);
    co_await release.send(1);
    EXPECT_TRUE((co_await a.read_response()).has_value());
    EXPECT_TRUE((co_await b.read_response()).has_value());
    EXPECT_EQ(limiter->stats().rejected, 1u);
    a.close();
    b.close();
    EXPECT_FALSE(co_await ts.stop());
  });
  EXPECT_THROW(http::concurrency_limit(0), std::invalid_argument);
}
