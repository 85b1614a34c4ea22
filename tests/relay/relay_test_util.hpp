// Helpers for the relay tests: a relay service on a loopback port with its
// log captured, subscriber servers written with sluice's own server, and a
// JSON client for the API.
#pragma once

#include "../http/http_test_util.hpp"

#include "config.hpp"
#include "service.hpp"

#include <sluice/http/client.hpp>
#include <sluice/http/router.hpp>

#include <nlohmann/json.hpp>

#include <mutex>
#include <string>
#include <vector>

// ASSERT_* for coroutines (gtest's return from the function; a coroutine
// must co_return): fails the test and ends the coroutine.
#define RELAY_CO_ASSERT(cond)                              \
  do {                                                     \
    if (!(cond)) {                                         \
      ADD_FAILURE() << "assertion failed: " #cond;         \
      co_return;                                           \
    }                                                      \
  } while (0)

namespace relay_test {

using namespace std::chrono_literals;
using json = nlohmann::json;

// The relay's log lines, kept for assertions.
struct captured_log {
  std::mutex mu;
  std::vector<std::string> lines;

  relay::log_sink sink() {
    return [this](std::string_view line) {
      std::lock_guard lock(mu);
      lines.emplace_back(line);
    };
  }
  // Lines containing every one of `words`.
  std::vector<std::string> matching(std::initializer_list<std::string_view> words) {
    std::lock_guard lock(mu);
    std::vector<std::string> out;
    for (const auto& l : lines) {
      bool all = true;
      for (auto w : words) all = all && l.find(w) != std::string::npos;
      if (all) out.push_back(l);
    }
    return out;
  }
};

// Test-friendly defaults: fast retries, a short drain.
inline relay::config test_config() {
  relay::config c;
  c.listen = "127.0.0.1:0";
  c.workers = 8;
  c.queue = 1000;
  c.rate = 1e6;
  c.burst = 1000000;
  c.retry_base = 5ms;
  c.retry_max = 50ms;
  c.delivery_timeout = 2s;
  c.shutdown_timeout = 5s;
  return c;
}

// A relay service serving on 127.0.0.1:<free port> from a task.
struct test_relay {
  captured_log log;
  std::unique_ptr<relay::service> svc;
  std::string address;
  std::optional<sluice::join_handle<std::error_code>> serving;

  static sluice::task<std::error_code> serve_task(relay::service* s, sluice::net::tcp_listener ln) {
    co_return co_await s->serve(std::move(ln));
  }

  explicit test_relay(relay::config c = test_config()) {
    svc = std::make_unique<relay::service>(std::move(c), log.sink());
    auto ln = sluice::net::tcp_listener::listen("127.0.0.1:0");
    address = ln.local_address();
    serving.emplace(sluice::spawn(&serve_task, svc.get(), std::move(ln)));
  }

  std::string url(std::string_view path) const { return "http://" + address + std::string(path); }

  // Shuts the relay down with `drain` for the drain; checks serve() ended.
  sluice::task<relay::shutdown_report> stop(sluice::clock::duration drain = 5s) {
    auto [ctx, cancel] = sluice::with_timeout(sluice::context::background(), drain);
    relay::shutdown_report r = co_await svc->shutdown(ctx);
    cancel();
    const std::error_code served = co_await serving->join();
    EXPECT_EQ(served, sluice::errc::closed);
    co_return r;
  }
};

// A JSON API client: status, headers and parsed body (null if not JSON).
struct api_result {
  int status = 0;
  sluice::http::headers header;
  std::string body;
  json value;
};

inline sluice::task<api_result> call(sluice::http::client& c, std::string method, std::string url,
                                     std::string body = {}) {
  sluice::http::client_request req;
  req.method = std::move(method);
  req.url = std::move(url);
  req.body = std::move(body);
  if (!req.body.empty()) req.header.add("Content-Type", "application/json");
  auto [ctx, cancel] = sluice::with_timeout(sluice::context::background(), 10s);
  sluice::http::client_result r = co_await c.send(ctx, std::move(req));
  cancel();
  api_result out;
  EXPECT_TRUE(r.ok()) << r.error_message;
  if (!r.ok()) co_return out;
  out.status = r.response.status;
  out.header = std::move(r.response.header);
  out.body = std::move(r.response.body);
  out.value = json::parse(out.body, nullptr, false);
  co_return out;
}

// Subscribes `target` to `topic`; returns the subscription id ("" on failure).
inline sluice::task<std::string> subscribe(sluice::http::client& c, const test_relay& r,
                                           std::string topic, std::string target) {
  // Named first: g++ 12 miscompiles braced temporaries inside a co_await.
  json body;
  body["url"] = target;
  api_result res = co_await call(c, "POST", r.url("/v1/topics/" + topic + "/subscriptions"), body.dump());
  EXPECT_EQ(res.status, 201) << res.body;
  std::string id;
  if (res.status == 201) id = res.value.value("id", std::string());
  co_return id;
}

// Posts an event; returns {status, event id or ""}.
inline sluice::task<std::pair<int, std::string>> publish(sluice::http::client& c, const test_relay& r,
                                                         std::string topic, std::string body) {
  api_result res = co_await call(c, "POST", r.url("/v1/topics/" + topic + "/events"), std::move(body));
  std::pair<int, std::string> out{res.status, std::string()};
  if (res.status == 202) out.second = res.value.value("id", std::string());
  co_return out;
}

// Polls GET /v1/events/{id} (yielding between polls) until every delivery is
// in a final state or 10 s pass; returns the last answer.
inline sluice::task<json> until_final(sluice::http::client& c, const test_relay& r, std::string id) {
  const auto give_up = sluice::clock::now() + 10s;
  json last;
  while (sluice::clock::now() < give_up) {
    api_result res = co_await call(c, "GET", r.url("/v1/events/" + id));
    last = res.value;
    bool final = res.status == 200;
    if (final) {
      for (const auto& d : last["deliveries"]) {
        const auto s = d.value("status", std::string());
        final = final && (s == "delivered" || s == "failed" || s == "dropped");
      }
    }
    if (final) co_return last;
    co_await sluice::yield();
  }
  co_return last;
}

}  // namespace relay_test
