// example-downloader: fetch URLs concurrently with sluice::http::client.
//
//   example-downloader http://127.0.0.1:8080/a http://127.0.0.1:8080/b
//   example-downloader --concurrency 8 --timeout 2s --overall-timeout 10s URL...
//   example-downloader                 # self-demo against a local sluice server
//
// At most --concurrency requests are in flight (an errgroup with a limit);
// each has --timeout, all of them --overall-timeout. One line per URL, in the
// order given: status, body bytes, time, or the error. Ctrl-C cancels what is
// left. Exit status: 0 if every URL answered below 400, 1 if any failed, 2
// for a bad command line (unknown flag, bad duration, malformed URL).
//
// With no URL it starts a sluice server on 127.0.0.1:0 and downloads from it
// a few files, a missing page, a page that never answers (with a 300ms
// timeout unless --timeout is given) and a port nobody listens on; it exits
// 0 when each of them ends the way it should.
#include "downloader.hpp"
#include "duration_flag.hpp"

#include <sluice/http/router.hpp>
#include <sluice/http/server.hpp>
#include <sluice/net.hpp>
#include <sluice/select.hpp>
#include <sluice/sluice.hpp>

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdio>
#include <optional>
#include <string>
#include <vector>

namespace sl = sluice;
namespace http = sluice::http;
using namespace std::chrono_literals;

namespace {

// Prints the lines and a summary; returns the exit status.
int report(const std::vector<downloader::outcome>& results, sl::clock::duration took) {
  std::size_t failed = 0;
  std::size_t bytes = 0;
  for (const auto& r : results) {
    std::printf("%s\n", downloader::format_line(r).c_str());
    failed += r.failed() ? 1 : 0;
    bytes += r.bytes;
  }
  std::printf("example-downloader: %zu URL(s), %zu failed, %zu bytes in %.3f s\n", results.size(),
              failed, bytes, std::chrono::duration<double>(took).count());
  return failed == 0 ? 0 : 1;
}

sl::task<std::error_code> serve(http::server* srv, sl::net::tcp_listener ln) {
  co_return co_await srv->serve(std::move(ln));
}

sl::task<void> file(http::request& req, http::response& res) {
  const std::string n(req.path_value("kib"));
  std::size_t kib = 0;
  for (char ch : n) {
    if (ch < '0' || ch > '9' || kib > 4096) {
      res.error(400, "size in KiB, at most 4096");
      co_return;
    }
    kib = kib * 10 + static_cast<std::size_t>(ch - '0');
  }
  res.send(200, std::string(kib * 1024, 'x'), "application/octet-stream");
}

// Answers only after 10 s, or never if the client gives up first.
sl::task<void> slow(http::request& req, http::response& res) {
  co_await sl::select(sl::done(req.ctx()), sl::after(10s));
  res.send(200, "finally\n");
}

sl::task<int> self_demo(const sl::context& ctx, downloader::options opts) {
  http::router mux;
  mux.handle("GET /files/{kib}", file);
  mux.handle("GET /slow", slow);
  http::server srv(mux, {.error_log = [](std::string_view line) {
                      std::fprintf(stderr, "example-downloader: server: %.*s\n",
                                   static_cast<int>(line.size()), line.data());
                    }});
  auto ln = sl::net::tcp_listener::listen("127.0.0.1:0");
  const std::string base = "http://" + ln.local_address();
  std::string refused;
  {
    auto closed = sl::net::tcp_listener::listen("127.0.0.1:0");
    refused = "http://" + closed.local_address() + "/";
  }  // nobody listens there any more
  auto serving = sl::spawn(serve, &srv, std::move(ln));
  std::printf("example-downloader: self-demo against %s (concurrency %lld, timeout %s)\n",
              base.c_str(), static_cast<long long>(opts.concurrency),
              downloader::describe(opts.timeout).c_str());

  struct expectation {
    std::string url;
    int status;              // expected status, or 0 for an error
    std::error_code error;   // expected error
  };
  const std::vector<expectation> plan = {
      {base + "/files/1", 200, {}},
      {base + "/files/64", 200, {}},
      {base + "/files/256", 200, {}},
      {base + "/files/1024", 200, {}},
      {base + "/missing", 404, {}},
      {base + "/slow", 0, make_error_code(sl::errc::deadline_exceeded)},
      {refused, 0, std::make_error_code(std::errc::connection_refused)},
  };
  std::vector<std::string> urls;
  for (const auto& e : plan) urls.push_back(e.url);

  const auto start = sl::clock::now();
  std::vector<downloader::outcome> results;
  {
    http::client c;
    results = co_await downloader::fetch_all(ctx, &c, urls, opts);
  }
  report(results, sl::clock::now() - start);

  auto [stop_ctx, stop_cancel] = sl::with_timeout(sl::context::background(), 5s);
  co_await srv.shutdown(stop_ctx);
  stop_cancel();
  co_await serving.join();

  int unexpected = 0;
  for (std::size_t i = 0; i < plan.size(); ++i) {
    const bool as_planned = plan[i].error ? results[i].error == plan[i].error
                                          : !results[i].error && results[i].status == plan[i].status;
    if (!as_planned) {
      ++unexpected;
      std::printf("example-downloader: unexpected outcome for %s\n", plan[i].url.c_str());
    }
  }
  if (unexpected == 0) {
    std::printf("example-downloader: self-demo: every URL ended as expected (3 of them fail on purpose)\n");
  }
  co_return unexpected == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice HTTP downloader: fetch URLs concurrently, with timeouts"};
  std::vector<std::string> urls;
  downloader::options opts;
  app.add_option("urls", urls, "URLs to fetch (http://host[:port][/path][?query]); none: self-demo");
  app.add_option("--concurrency,-c", opts.concurrency, "requests in flight at most (default 4)")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{10000}));
  CLI::Option* timeout_flag =
      examples::add_duration_option(app, "--timeout", &opts.timeout, "per request (default 30s; 0s: none)");
  examples::add_duration_option(app, "--overall-timeout", &opts.overall_timeout,
                                "for all requests together (default: none)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int code = app.exit(e);  // prints help, or the error and a hint
    return code == 0 ? 0 : 2;
  }
  for (const auto& u : urls) {
    try {
      (void)http::url::parse(u);
    } catch (const std::invalid_argument& e) {
      std::fprintf(stderr, "example-downloader: %s\n", e.what());
      return 2;
    }
  }

  return sl::run([&]() -> sl::task<int> {
    auto sig = sl::signal_context(sl::context::background(), {SIGINT, SIGTERM});
    int rc = 0;
    if (urls.empty()) {
      if (timeout_flag->count() == 0) opts.timeout = 300ms;
      rc = co_await self_demo(sig.ctx, opts);
    } else {
      const auto start = sl::clock::now();
      std::vector<downloader::outcome> results;
      {
        http::client c;
        results = co_await downloader::fetch_all(sig.ctx, &c, urls, opts);
      }
      rc = report(results, sl::clock::now() - start);
      if (sig.ctx.err()) std::fprintf(stderr, "example-downloader: interrupted\n");
    }
    sig.cancel();
    co_return rc;
  });
}
