// Fuzzed event bodies: thousands of generated and mutated JSON documents,
// hostile nesting, broken UTF-8, NULs and truncations posted to a live relay.
// Every answer must be 202 (valid JSON), 400 (not JSON) or 413 (too large),
// with a JSON body; accepted events are delivered byte for byte; the relay
// stays healthy. Seeded, so a failure replays (the seed is printed).
#include "relay_test_util.hpp"

#include "../http/json_gen.hpp"

#include <random>

namespace {

using namespace relay_test;
namespace http = sluice::http;

TEST(RelayFuzz, EventBodiesNeverCrashAndGetTheirStatus) {
  const std::uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  sl_test::run_checked([seed]() -> sluice::task<void> {
    // A subscriber that records the bodies it receives, by event id.
    auto got = std::make_shared<std::map<std::string, std::string>>();
    auto mu = std::make_shared<std::mutex>();
    sl_http::test_server sub([got, mu](http::request& req, http::response& res) -> sluice::task<void> {
      std::lock_guard lock(*mu);
      (*got)[std::string(req.header().get_or("x-sluice-event-id", ""))] = req.body();
      res.send(200, "ok");
      co_return;
    });
    relay::config cfg = test_config();
    cfg.max_body = 64 * 1024;
    cfg.queue = 100000;
    test_relay r(cfg);
    http::client c;
    const std::string hook = "http://" + sub.address + "/hook";
    (void)co_await subscribe(c, r, "fuzz", hook);

    sl_http::json_gen gen(seed);
    std::vector<std::pair<std::string, std::string>> accepted;  // event id, body
    int n202 = 0, n400 = 0, n413 = 0;
    auto post = [&](std::string body) -> sluice::task<void> {
      api_result res = co_await call(c, "POST", r.url("/v1/topics/fuzz/events"), body);
      const bool valid = body.find('\0') == std::string::npos && json::accept(body);  // see JsonValid
      if (res.status == 202) {
        ++n202;
        EXPECT_TRUE(valid) << "accepted invalid JSON: " << body.substr(0, 80);
        accepted.emplace_back(res.value.value("id", std::string()), std::move(body));
      } else if (res.status == 400) {
        ++n400;
        EXPECT_FALSE(valid) << "refused valid JSON: " << body.substr(0, 80);
      } else if (res.status == 413) {
        ++n413;
        EXPECT_GT(body.size(), 64u * 1024);
      } else {
        ADD_FAILURE() << "status " << res.status << " for " << body.substr(0, 80);
      }
      EXPECT_TRUE(res.value.is_object()) << res.body.substr(0, 80);
    };
    // Bodies are named before the co_await: g++ 12 destroys a temporary
    // argument of a coroutine call inside co_await twice (GCC PR 100611).
    for (int i = 0; i < 1500; ++i) {
      std::string doc = gen.document();
      if (i % 3 != 0) doc = gen.mutate(std::move(doc));
      co_await post(std::move(doc));
    }
    // Hostile shapes.
    std::vector<std::string> hostile = {
        std::string(60000, '['),                                      // deep, unclosed
        std::string(30000, '[') + std::string(30000, ']'),            // deep, closed
        std::string(20000, '{') + "\"a\":1" + std::string(20000, '}'),
        "\"" + std::string(60000, 'x') + "\"",                        // long string
        "\"" + std::string(1000, '\\'),                               // dangling escapes
        "[" + std::string(70000, '1') + "]",                          // over max_body
        "\"\\ud800\"",                                                // lone surrogate
        std::string("\0\0\0", 3),
    };
    for (auto& body : hostile) co_await post(std::move(body));

    EXPECT_GT(n202, 100);
    EXPECT_GT(n400, 100);
    EXPECT_EQ(n413, 1);
    // Every accepted event is delivered with its bytes unchanged.
    for (const auto& [id, body] : accepted) {
      json st = co_await until_final(c, r, id);
      EXPECT_EQ(st["deliveries"][0]["status"], "delivered") << id;
    }
    {
      std::lock_guard lock(*mu);
      for (const auto& [id, body] : accepted) {
        auto it = got->find(id);
        EXPECT_TRUE(it != got->end() && it->second == body) << id;
      }
    }
    EXPECT_EQ((co_await call(c, "GET", r.url("/healthz"))).status, 200);
    auto rep = co_await r.stop();
    EXPECT_EQ(rep.stats.deliveries_delivered, accepted.size());
    EXPECT_EQ(rep.dropped, 0u);
    co_await sub.stop();
  });
}

}  // namespace
