// sluice-bench-http: the HTTP server of ../shared/peers/WORKLOADS.md.
//
//   sluice-bench-http --listen 127.0.0.1:8080 --mode hello|ratelimited|reject|sink
//
// GET /hello answers 200 "hello\n" (text/plain). Mode ratelimited puts the
// per-client-IP rate_limit middleware (limit 1e9/s, burst 1e9: never rejects)
// in front; mode reject uses limit 1/s, burst 1, so nearly every request is a
// 429 with Retry-After. Mode sink answers every POST with 200 and an empty
// body: the webhook subscriber of the relay benchmark (bench/relay/run.sh). The runtime gets one worker per CPU of this process's
// affinity mask (the harness pins the server to one CPU). SIGINT/SIGTERM shut
// down gracefully.
#include <sluice/http/middleware.hpp>
#include <sluice/http/router.hpp>
#include <sluice/http/server.hpp>
#include <sluice/runtime.hpp>

#include <CLI/CLI.hpp>

#include <sched.h>

#include <csignal>
#include <iostream>

namespace http = sluice::http;

namespace {

int affinity_cpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) != 0) return 1;
  const int n = CPU_COUNT(&set);
  return n > 0 ? n : 1;
}

sluice::task<void> hello(http::request&, http::response& res) {
  res.send(200, "hello\n", "text/plain");
  co_return;
}

sluice::task<void> sink(http::request&, http::response& res) {
  res.set_status(200);
  co_return;
}

sluice::task<int> serve(std::string listen, std::string mode) {
  http::router mux;
  mux.handle("GET /hello", hello);
  if (mode == "sink") mux.handle("POST /", sink);
  http::handler h = mux;
  if (mode == "ratelimited") {
    h = http::chain(h, {http::rate_limit({.limit = sluice::rate::limit(1e9), .burst = 1000000000})});
  } else if (mode == "reject") {
    h = http::chain(h, {http::rate_limit({.limit = sluice::rate::limit(1), .burst = 1})});
  }
  http::server srv(h);
  auto ln = sluice::net::tcp_listener::listen(listen);
  std::cerr << "sluice-bench-http: listening on " << ln.local_address() << " mode=" << mode
            << " workers=" << affinity_cpus() << "\n";
  auto [sig, stop] = sluice::signal_context(sluice::context::background(), {SIGINT, SIGTERM});
  auto serving = sluice::spawn([&]() -> sluice::task<std::error_code> { co_return co_await srv.serve(std::move(ln)); });
  co_await sig.done();
  stop();
  auto [ctx, cancel] = sluice::with_timeout(sluice::context::background(), std::chrono::seconds(10));
  const std::error_code ec = co_await srv.shutdown(ctx);
  cancel();
  co_await serving.join();
  co_return ec ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice HTTP benchmark server (WORKLOADS.md: http_hello, http_ratelimited, http_reject)"};
  std::string listen = "127.0.0.1:8080";
  std::string mode = "hello";
  app.add_option("--listen", listen, "HOST:PORT to listen on");
  app.add_option("--mode", mode, "hello | ratelimited | reject | sink")
      ->check(CLI::IsMember({"hello", "ratelimited", "reject", "sink"}));
  CLI11_PARSE(app, argc, argv);
  sluice::runtime_options opts;
  opts.workers = affinity_cpus();
  sluice::runtime rt(opts);
  try {
    return rt.run([&] { return serve(listen, mode); });
  } catch (const std::exception& e) {
    std::cerr << "sluice-bench-http: " << e.what() << "\n";
    return 1;
  }
}
