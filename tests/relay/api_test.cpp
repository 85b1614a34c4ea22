// The relay's HTTP API: each endpoint's answers, and every kind of bad input
// answered with its status code and a JSON error.
#include "relay_test_util.hpp"

namespace {

using namespace relay_test;
namespace http = sluice::http;

// A subscriber that answers 200 and counts what it received.
struct counting_subscriber {
  std::shared_ptr<std::atomic<int>> received = std::make_shared<std::atomic<int>>(0);
  std::shared_ptr<std::mutex> mu = std::make_shared<std::mutex>();
  std::shared_ptr<std::vector<std::string>> bodies = std::make_shared<std::vector<std::string>>();
  std::unique_ptr<sl_http::test_server> server;

  counting_subscriber() {
    auto n = received;
    auto m = mu;
    auto b = bodies;
    server = std::make_unique<sl_http::test_server>(
        [n, m, b](http::request& req, http::response& res) -> sluice::task<void> {
          {
            std::lock_guard lock(*m);
            b->push_back(req.body());
          }
          n->fetch_add(1);
          res.send(200, "ok");
          co_return;
        });
  }
  std::string url() const { return "http://" + server->address + "/hook"; }
};

TEST(RelayApi, SubscribeListPublishStatusDelete) {
  sl_test::run_checked([]() -> sluice::task<void> {
    test_relay r;
    counting_subscriber sub;
    http::client c;

    const std::string id = co_await subscribe(c, r, "orders", sub.url());
    EXPECT_EQ(id.rfind("sub_", 0), 0u) << id;

    api_result list = co_await call(c, "GET", r.url("/v1/topics/orders/subscriptions"));
    EXPECT_EQ(list.status, 200);
    RELAY_CO_ASSERT(list.value.is_array());
    RELAY_CO_ASSERT(list.value.size() == 1u);
    EXPECT_EQ(list.value[0]["id"], id);
    EXPECT_EQ(list.value[0]["url"], sub.url());

    const std::string payload = R"({"order": 42, "note": "caf\u00e9"})";
    api_result posted = co_await call(c, "POST", r.url("/v1/topics/orders/events"), payload);
    EXPECT_EQ(posted.status, 202) << posted.body;
    EXPECT_EQ(posted.value["deliveries"], 1);
    const std::string ev = posted.value.value("id", std::string());
    json status = co_await until_final(c, r, ev);
    EXPECT_EQ(status["id"], ev);
    EXPECT_EQ(status["topic"], "orders");
    RELAY_CO_ASSERT(status["deliveries"].size() == 1u);
    EXPECT_EQ(status["deliveries"][0]["status"], "delivered");
    EXPECT_EQ(status["deliveries"][0]["subscription"], id);
    EXPECT_EQ(status["deliveries"][0]["url"], sub.url());
    EXPECT_EQ(status["deliveries"][0]["attempts"], 1);
    EXPECT_EQ(status["deliveries"][0]["last_status"], 200);
    {
      std::lock_guard lock(*sub.mu);
      EXPECT_EQ(sub.bodies->size(), 1u);
      if (!sub.bodies->empty()) {
        EXPECT_EQ(sub.bodies->front(), payload);  // byte for byte
      }
    }

    api_result del = co_await call(c, "DELETE", r.url("/v1/subscriptions/" + id));
    EXPECT_EQ(del.status, 204);
    api_result again = co_await call(c, "DELETE", r.url("/v1/subscriptions/" + id));
    EXPECT_EQ(again.status, 404);
    EXPECT_TRUE(again.value.contains("error")) << again.body;

    // No subscribers: accepted with 0 deliveries.
    auto [st, ev2] = co_await publish(c, r, "orders", "[1,2,3]");
    EXPECT_EQ(st, 202);
    json s2 = co_await until_final(c, r, ev2);
    EXPECT_TRUE(s2["deliveries"].empty());

    auto rep = co_await r.stop();
    EXPECT_TRUE(rep.drained);
    EXPECT_EQ(rep.dropped, 0u);
    co_await sub.server->stop();
  });
}

TEST(RelayApi, BadInputGetsItsStatusAndAJsonError) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.max_body = 1000;
    test_relay r(cfg);
    http::client c;
    struct bad_case {
      const char* method;
      std::string path;
      std::string body;
      int status;
    };
    const std::vector<bad_case> cases = {
        {"POST", "/v1/topics/t/subscriptions", "", 400},
        {"POST", "/v1/topics/t/subscriptions", "{", 400},
        {"POST", "/v1/topics/t/subscriptions", "[]", 400},
        {"POST", "/v1/topics/t/subscriptions", R"({"url": 5})", 400},
        {"POST", "/v1/topics/t/subscriptions", R"({"url": "ftp://127.0.0.1/x"})", 400},
        {"POST", "/v1/topics/t/subscriptions", R"({"url": "https://127.0.0.1/x"})", 400},
        {"POST", "/v1/topics/t/subscriptions", R"({"url": "http://127.0.0.1:99999/x"})", 400},
        {"POST", "/v1/topics/t/subscriptions", R"({"url": "http://127.0.0.1/x?q=1"})", 400},
        {"POST", "/v1/topics/t/subscriptions", R"({"url": "http://example.com/x"})", 400},
        {"POST", "/v1/topics/t/subscriptions", R"({"url": "http:///x"})", 400},
        {"POST", "/v1/topics/t/subscriptions", R"({"url": "http://user@127.0.0.1/x"})", 400},
        {"POST", "/v1/topics/bad%20topic/subscriptions", R"({"url": "http://127.0.0.1/x"})", 400},
        {"POST", "/v1/topics/t/events", "", 400},
        {"POST", "/v1/topics/t/events", "{\"a\":", 400},
        {"POST", "/v1/topics/t/events", "{} {}", 400},
        {"POST", "/v1/topics/t/events", "\"\xff\xfe\"", 400},
        {"POST", "/v1/topics/t/events", std::string(1001, '1'), 413},
        {"GET", "/v1/events/evt_0000000000000000", "", 404},
        {"DELETE", "/v1/subscriptions/nope", "", 404},
        {"GET", "/v1/nothing-here", "", 404},
        {"PUT", "/v1/topics/t/events", "{}", 405},
    };
    for (const auto& bc : cases) {
      api_result res = co_await call(c, bc.method, r.url(bc.path), bc.body);
      EXPECT_EQ(res.status, bc.status) << bc.method << " " << bc.path << " " << bc.body.substr(0, 40);
      EXPECT_TRUE(res.value.is_object() && res.value["error"].is_string())
          << bc.method << " " << bc.path << ": " << res.body;
      EXPECT_EQ(res.header.get_or("content-type", ""), "application/json") << bc.path;
    }
    co_await r.stop();
  });
}

TEST(RelayApi, HealthReadinessMetricsAndTasks) {
  sl_test::run_checked([]() -> sluice::task<void> {
    test_relay r;
    http::client c;
    EXPECT_EQ((co_await call(c, "GET", r.url("/healthz"))).status, 200);
    EXPECT_EQ((co_await call(c, "GET", r.url("/readyz"))).status, 200);
    api_result m = co_await call(c, "GET", r.url("/metrics"));
    EXPECT_EQ(m.status, 200);
    for (const char* name :
         {"sluice_relay_deliveries_total{result=\"delivered\"}", "sluice_relay_deliveries_total{result=\"failed\"}",
          "sluice_relay_deliveries_total{result=\"dropped\"}", "sluice_relay_queue_depth",
          "sluice_pool_queued", "sluice_http_requests_total", "sluice_runtime_tasks"}) {
      EXPECT_NE(m.body.find(name), std::string::npos) << name;
    }
    api_result t = co_await call(c, "GET", r.url("/debug/tasks"));
    EXPECT_EQ(t.status, 200);
    EXPECT_FALSE(t.body.empty());

    r.svc->begin_shutdown();
    api_result ready = co_await call(c, "GET", r.url("/readyz"));
    EXPECT_EQ(ready.status, 503);
    EXPECT_EQ((co_await call(c, "GET", r.url("/healthz"))).status, 200);  // still alive
    auto refused = co_await call(c, "POST", r.url("/v1/topics/t/events"), "{}");
    EXPECT_EQ(refused.status, 503);
    EXPECT_TRUE(refused.header.has("retry-after"));
    EXPECT_EQ((co_await call(c, "GET", r.url("/metrics"))).status, 200);  // readable in the drain
    co_await r.stop();
  });
}

TEST(RelayConfig, RefusesBadValuesWithExitCode2) {
  const std::vector<std::vector<const char*>> bad = {
      {"--workers", "0"},         {"--workers", "x"},          {"--queue", "0"},
      {"--rate", "0"},            {"--rate", "-1"},            {"--burst", "0"},
      {"--max-body", "0"},        {"--delivery-timeout", "0s"}, {"--delivery-timeout", "5"},
      {"--delivery-timeout", "-1s"}, {"--max-attempts", "0"},  {"--retry-base", "0ms"},
      {"--retry-base", "2s", "--retry-max", "1s"},              {"--per-subscriber-concurrency", "0"},
      {"--max-connections", "0"}, {"--retain-events", "0"},    {"--listen", "nope"},
      {"--listen", "127.0.0.1:70000"}, {"--no-such-flag"},    {"--shutdown-timeout", "soon"},
  };
  for (const auto& args : bad) {
    std::vector<const char*> argv = {"sluice-relay"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::ostringstream out, err;
    int code = -1;
    auto cfg = relay::parse_command_line(static_cast<int>(argv.size()), argv.data(), out, err, &code);
    EXPECT_FALSE(cfg.has_value()) << args[0];
    EXPECT_EQ(code, 2) << args[0];
    EXPECT_FALSE(err.str().empty()) << args[0];
  }
  {
    const char* argv[] = {"sluice-relay", "--help"};
    std::ostringstream out, err;
    int code = -1;
    EXPECT_FALSE(relay::parse_command_line(2, argv, out, err, &code).has_value());
    EXPECT_EQ(code, 0);
    for (const char* flag : {"--listen", "--workers", "--queue", "--rate", "--burst", "--max-body",
                             "--delivery-timeout", "--max-attempts", "--retry-base", "--retry-max",
                             "--per-subscriber-concurrency", "--max-connections", "--shutdown-timeout",
                             "--retain-events"}) {
      EXPECT_NE(out.str().find(flag), std::string::npos) << flag;
    }
  }
  {
    const char* argv[] = {"sluice-relay", "--delivery-timeout", "250ms", "--retry-max", "2m",
                          "--listen", "127.0.0.1:0"};
    std::ostringstream out, err;
    int code = -1;
    auto cfg = relay::parse_command_line(7, argv, out, err, &code);
    ASSERT_TRUE(cfg.has_value()) << err.str();
    EXPECT_EQ(cfg->delivery_timeout, std::chrono::milliseconds(250));
    EXPECT_EQ(cfg->retry_max, std::chrono::minutes(2));
    EXPECT_EQ(cfg->workers, 64);
    EXPECT_EQ(cfg->queue, 10000);
  }
}

}  // namespace

namespace {

TEST(RelayApi, KeepsTheNewestRetainedEvents) {
  sl_test::run_checked([]() -> sluice::task<void> {
    relay::config cfg = test_config();
    cfg.retain_events = 3;
    test_relay r(cfg);
    sluice::http::client c;
    std::vector<std::string> ids;
    for (int i = 0; i < 7; ++i) {
      auto [st, id] = co_await publish(c, r, "t", "{}");
      EXPECT_EQ(st, 202);
      ids.push_back(id);
    }
    for (int i = 0; i < 7; ++i) {
      api_result res = co_await call(c, "GET", r.url("/v1/events/" + ids[static_cast<std::size_t>(i)]));
      EXPECT_EQ(res.status, i < 4 ? 404 : 200) << i;
      if (res.status == 200) {
        EXPECT_EQ(res.value["id"], ids[static_cast<std::size_t>(i)]);
      }
    }
    // Well-formed ids that were never issued, and malformed ones.
    for (std::string bad : {"evt_0000000000000000", "evt_ffffffffffffffff", "evt_123", "EVT_0000000000000000",
                            "evt_000000000000000g", "sub_0000000000000000"}) {
      EXPECT_EQ((co_await call(c, "GET", r.url("/v1/events/" + bad))).status, 404) << bad;
    }
    EXPECT_EQ(r.svc->stats().events_retained, 3u);
    co_await r.stop();
  });
}

}  // namespace
