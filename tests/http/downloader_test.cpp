// example-downloader's core (examples/downloader.hpp) against a local server:
// the concurrency limit, per-request and overall timeouts, and how each kind
// of failure is reported.
#include "http_test_util.hpp"

#include "../../examples/downloader.hpp"

#include <sluice/http/router.hpp>
#include <sluice/select.hpp>
#include <sluice/time.hpp>

#include <algorithm>
#include <atomic>

using namespace std::chrono_literals;
using sl_http::test_server;
using sluice::task;
namespace http = sluice::http;

namespace {

// /n/<k>: "body-<k>" after a few scheduling rounds, counting requests in
// flight; /slow: answers only when the client goes away; /missing: 404.
struct download_server {
  std::atomic<int> in_flight{0};
  std::atomic<int> max_in_flight{0};
  test_server ts;

  download_server()
      : ts([this](http::request& req, http::response& res) -> task<void> {
          const std::string_view t = req.target();
          if (t == "/slow") {
            co_await req.ctx().done();
            res.send(200, "late");
            co_return;
          }
          if (!t.starts_with("/n/")) {
            res.error(404, "not found");
            co_return;
          }
          const int now = ++in_flight;
          int seen = max_in_flight.load();
          while (now > seen && !max_in_flight.compare_exchange_weak(seen, now)) {
          }
          for (int i = 0; i < 20; ++i) co_await sluice::yield();
          --in_flight;
          res.send(200, "body-" + std::string(t.substr(3)));
        }) {}

  std::string url(std::string_view path) const { return "http://" + ts.address + std::string(path); }
};

sluice::context bg() { return sluice::context::background(); }

}  // namespace

TEST(Downloader, FetchesEveryUrlInOrderWithinTheLimit) {
  sl_test::run_checked([]() -> task<void> {
    download_server ds;
    {
      http::client c;
      std::vector<std::string> urls;
      for (int i = 0; i < 12; ++i) urls.push_back(ds.url("/n/" + std::to_string(i)));
      auto results = co_await downloader::fetch_all(bg(), &c, urls, {.concurrency = 3, .timeout = 10s});
      EXPECT_EQ(results.size(), urls.size());
      for (std::size_t i = 0; i < results.size(); ++i) {
        EXPECT_EQ(results[i].url, urls[i]);
        EXPECT_FALSE(results[i].failed()) << results[i].error_message;
        EXPECT_EQ(results[i].status, 200);
        EXPECT_EQ(results[i].bytes, ("body-" + std::to_string(i)).size());
        EXPECT_EQ(downloader::format_line(results[i]).find("200"), 0u);
      }
      EXPECT_LE(ds.max_in_flight.load(), 3);
      EXPECT_GE(ds.max_in_flight.load(), 1);
      EXPECT_LE(c.stats().connections_dialed, 3u);  // one connection per slot, reused
    }
    EXPECT_FALSE(co_await ds.ts.stop());
  });
}

TEST(Downloader, ReportsEachKindOfFailure) {
  sl_test::run_checked([]() -> task<void> {
    download_server ds;
    std::string refused;
    {
      auto ln = sluice::net::tcp_listener::listen("127.0.0.1:0");
      refused = "http://" + ln.local_address() + "/";
    }
    {
      http::client c;
      const std::vector<std::string> urls = {ds.url("/n/1"), ds.url("/slow"), refused, ds.url("/missing"),
                                             "not a url"};
      auto r = co_await downloader::fetch_all(bg(), &c, urls, {.concurrency = 5, .timeout = 100ms});
      EXPECT_EQ(r.size(), 5u);
      if (r.size() == 5) {
        EXPECT_FALSE(r[0].failed()) << r[0].error_message;
        EXPECT_EQ(r[1].error, sluice::errc::deadline_exceeded) << r[1].error_message;
        EXPECT_EQ(r[1].error_message.find("timed out after 100ms"), 0u) << r[1].error_message;
        EXPECT_EQ(r[2].error, std::errc::connection_refused) << r[2].error_message;
        EXPECT_EQ(r[2].error_message.find("connect "), 0u) << r[2].error_message;  // the URL is not repeated
        EXPECT_FALSE(r[3].error);
        EXPECT_EQ(r[3].status, 404);
        EXPECT_TRUE(r[3].failed());
        EXPECT_EQ(r[4].error, std::errc::invalid_argument);
        const std::string line = downloader::format_line(r[1]);
        EXPECT_EQ(line.find("ERR"), 0u) << line;
        EXPECT_NE(line.find(urls[1]), std::string::npos) << line;
      }
    }
    EXPECT_FALSE(co_await ds.ts.stop());
  });
}

TEST(Downloader, OverallTimeoutFailsWhatIsLeft) {
  sl_test::run_checked([]() -> task<void> {
    download_server ds;
    {
      http::client c;
      const std::vector<std::string> urls = {ds.url("/slow"), ds.url("/n/1"), ds.url("/n/2")};
      auto r = co_await downloader::fetch_all(
          bg(), &c, urls, {.concurrency = 1, .timeout = 1h, .overall_timeout = 100ms});
      EXPECT_EQ(r.size(), 3u);
      for (const auto& o : r) {
        EXPECT_EQ(o.error, sluice::errc::deadline_exceeded) << o.url << ": " << o.error_message;
        EXPECT_EQ(o.error_message.find("overall timeout"), 0u) << o.error_message;
      }
      EXPECT_EQ(ds.ts.srv->stats().requests, 1u);  // the two behind /slow never went out
    }
    EXPECT_FALSE(co_await ds.ts.stop());
  });
}

TEST(Downloader, CancelledParentCancelsEveryRequest) {
  sl_test::run_checked([]() -> task<void> {
    http::client c;
    auto [ctx, cancel] = sluice::with_cancel(bg());
    cancel();
    std::vector<std::string> urls{"http://127.0.0.1:1/a", "http://127.0.0.1:1/b"};
    auto r = co_await downloader::fetch_all(ctx, &c, urls, {});
    EXPECT_EQ(r.size(), 2u);
    for (const auto& o : r) EXPECT_EQ(o.error, sluice::errc::canceled) << o.error_message;
  });
}

TEST(Downloader, ConcurrencyBelowOneThrows) {
  sl_test::run_checked([]() -> task<void> {
    http::client c;
    bool thrown = false;
    try {
      (void)co_await downloader::fetch_all(bg(), &c, std::vector<std::string>(), {.concurrency = 0});
    } catch (const std::invalid_argument&) {
      thrown = true;
    }
    EXPECT_TRUE(thrown);
  });
}
