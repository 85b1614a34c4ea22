// /metrics (Prometheus text 0.0.4), /debug/tasks and the JSON helpers.
#include "http_test_util.hpp"

#include <sluice/http/json.hpp>
#include <sluice/http/metrics.hpp>
#include <sluice/http/router.hpp>

using namespace std::chrono_literals;
using sl_http::fetch;
using sl_http::get;
using sl_http::test_server;
using sluice::task;
namespace http = sluice::http;

namespace {
bool has_line(const std::string& text, std::string_view line) {
  std::size_t pos = 0;
  while (pos < text.size()) {
    const std::size_t end = text.find('\n', pos);
    if (std::string_view(text).substr(pos, end - pos) == line) return true;
    if (end == std::string::npos) break;
    pos = end + 1;
  }
  return false;
}
}  // namespace

TEST(HttpMetrics, WriterEscapesLabelsAndFormatsNumbers) {
  http::prometheus_writer w;
  w.family("x_total", "counter", "Help with \\ and\nnewline.");
  w.sample("x_total", {{"path", "a\"b\\c\nd"}}, 3);
  w.sample("x_total", {}, 0.25);
  const std::string t = w.text();
  EXPECT_TRUE(has_line(t, "# HELP x_total Help with \\\\ and\\nnewline.")) << t;
  EXPECT_TRUE(has_line(t, "# TYPE x_total counter")) << t;
  EXPECT_TRUE(has_line(t, "x_total{path=\"a\\\"b\\\\c\\nd\"} 3")) << t;
  EXPECT_TRUE(has_line(t, "x_total 0.25")) << t;
}

TEST(HttpMetrics, HistogramBucketsAreCumulativeWithInf) {
  http::prometheus_writer w;
  sluice::duration_summary s;
  s.count = 3;
  s.sum = 2s;
  s.buckets[0] = 1;  // <= 100 us
  s.buckets[3] = 1;  // <= 1 ms
  s.buckets[16] = 1;  // > 10 s
  w.histogram("h_seconds", {{"route", "r"}}, s);
  const std::string t = w.text();
  EXPECT_TRUE(has_line(t, "h_seconds_bucket{route=\"r\",le=\"0.0001\"} 1")) << t;
  EXPECT_TRUE(has_line(t, "h_seconds_bucket{route=\"r\",le=\"0.001\"} 2")) << t;
  EXPECT_TRUE(has_line(t, "h_seconds_bucket{route=\"r\",le=\"10\"} 2")) << t;
  EXPECT_TRUE(has_line(t, "h_seconds_bucket{route=\"r\",le=\"+Inf\"} 3")) << t;
  EXPECT_TRUE(has_line(t, "h_seconds_sum{route=\"r\"} 2")) << t;
  EXPECT_TRUE(has_line(t, "h_seconds_count{route=\"r\"} 3")) << t;
}

TEST(HttpMetrics, MetricsEndpointReportsRuntimeServerAndRequestsByRoute) {
  sl_test::run_checked([]() -> task<void> {
    auto reg = std::make_shared<http::metrics_registry>();
    auto hm = std::make_shared<http::http_metrics>();
    http::add_runtime_metrics(*reg);
    reg->add([hm](http::prometheus_writer& w) { hm->collect(w); });
    http::router mux;
    mux.handle("GET /metrics", http::metrics_handler(reg));
    mux.handle("GET /items/{id}", [](http::request&, http::response& res) -> task<void> {
      res.send(200, "item");
      co_return;
    });
    auto srv = std::make_shared<test_server>(http::chain(mux, {hm->middleware()}));
    // The server's collector needs the server object: register it once it exists.
    reg->add([s = srv->srv.get()](http::prometheus_writer& w) {
      w.family("sluice_test_open", "gauge", "open");
      w.sample("sluice_test_open", {}, static_cast<double>(s->stats().connections_open));
    });
    for (int i = 0; i < 3; ++i) EXPECT_TRUE((co_await fetch(srv->address, get("/items/" + std::to_string(i)))).has_value());
    EXPECT_TRUE((co_await fetch(srv->address, get("/nope"))).has_value());
    // The server sees each finished client's close a moment later: wait for
    // it, so the scrape's own connection is the only one open.
    EXPECT_TRUE(co_await sl_test::until([&] { return srv->srv->stats().connections_open == 0; }));
    auto r = co_await fetch(srv->address, get("/metrics"));
    EXPECT_TRUE(r && r->status == 200);
    if (r) {
      EXPECT_EQ(r->header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
      const std::string& t = r->body;
      EXPECT_TRUE(has_line(t, "sluice_http_requests_total{route=\"GET /items/{id}\",method=\"GET\",code=\"200\"} 3")) << t;
      EXPECT_TRUE(has_line(t, "sluice_http_requests_total{route=\"unmatched\",method=\"GET\",code=\"404\"} 1")) << t;
      EXPECT_TRUE(has_line(t, "sluice_http_request_duration_seconds_count{route=\"GET /items/{id}\"} 3")) << t;
      EXPECT_TRUE(has_line(t, "sluice_http_requests_in_flight 1")) << t;  // the scrape itself
      EXPECT_TRUE(has_line(t, "# TYPE sluice_runtime_tasks gauge")) << t;
      EXPECT_NE(t.find("sluice_runtime_workers "), std::string::npos);
      EXPECT_NE(t.find("sluice_runtime_local_queue_length{worker=\"0\"}"), std::string::npos);
      EXPECT_TRUE(has_line(t, "sluice_test_open 1")) << t;
    }
    EXPECT_FALSE(co_await srv->stop());
  });
}

TEST(HttpMetrics, SeriesAreBounded) {
  http::http_metrics hm(2);
  hm.observe("a", "GET", 200, 1ms);
  hm.observe("b", "GET", 200, 1ms);
  hm.observe("c", "GET", 200, 1ms);
  hm.observe("d", "GET", 200, 1ms);
  http::prometheus_writer w;
  hm.collect(w);
  EXPECT_TRUE(has_line(w.text(), "sluice_http_requests_total{route=\"other\",method=\"other\",code=\"200\"} 2"))
      << w.text();
  EXPECT_THROW(http::http_metrics(0), std::invalid_argument);
}

TEST(HttpMetrics, RuntimeStatsCountTasksAndWorkers) {
  sl_test::run_checked([]() -> task<void> {
    const auto st = sluice::current_runtime_stats();
    EXPECT_EQ(st.workers, 2u);
    EXPECT_EQ(st.local_queues.size(), 2u);
    EXPECT_GE(st.tasks, 1u);
    co_return;
  }, {.workers = 2});
  EXPECT_EQ(sluice::current_runtime_stats().workers, 0u);
}

TEST(HttpMetrics, TasksHandlerDumpsLiveTasks) {
  sl_test::run_checked([]() -> task<void> {
    http::router mux;
    mux.handle("GET /debug/tasks", http::tasks_handler());
    test_server ts(mux);
    auto r = co_await fetch(ts.address, get("/debug/tasks"));
    EXPECT_TRUE(r && r->status == 200);
    if (r) {
      EXPECT_NE(r->body.find("task "), std::string::npos) << r->body;
      EXPECT_NE(r->body.find("connection_main"), std::string::npos) << r->body;
    }
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpJson, ReadJsonAnswers400ForInvalidOrEmptyBodies) {
  sl_test::run_checked([]() -> task<void> {
    test_server ts([](http::request& req, http::response& res) -> task<void> {
      auto v = http::read_json(req, res);
      if (!v) co_return;
      http::write_json(res, 201, {{"got", *v}});
    });
    auto ok = co_await fetch(ts.address, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\n\r\n{\"a\":[1]}");
    EXPECT_TRUE(ok && ok->status == 201 && ok->body == "{\"got\":{\"a\":[1]}}");
    if (ok) {
      EXPECT_EQ(ok->header("Content-Type"), "application/json");
    }
    auto bad = co_await fetch(ts.address, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n{\"a\":");
    EXPECT_TRUE(bad && bad->status == 400);
    if (bad) {
      const auto j = nlohmann::json::parse(bad->body);
      EXPECT_NE(j["error"].get<std::string>().find("invalid JSON"), std::string::npos);
    }
    auto empty = co_await fetch(ts.address, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    EXPECT_TRUE(empty && empty->status == 400);
    EXPECT_FALSE(co_await ts.stop());
  });
}

TEST(HttpJson, WriteJsonReplacesInvalidUtf8) {
  http::response res;
  http::write_json(res, 200, {{"s", std::string("a\xff" "b")}});
  EXPECT_EQ(res.body(), "{\"s\":\"a\xef\xbf\xbd" "b\"}");
  http::write_json_error(res, 404, "no such thing");
  EXPECT_EQ(res.status(), 404);
  EXPECT_EQ(res.body(), "{\"error\":\"no such thing\"}");
}
