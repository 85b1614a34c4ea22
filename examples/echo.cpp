// example-echo: a TCP echo server on the netpoller, and a load test of it.
//
//   example-echo                         # self-test: server + 64 clients, prints the rate
//   example-echo --serve --listen 127.0.0.1:7000   # serve until Ctrl-C / SIGTERM
//
// One task per connection, no thread per connection; every wait takes the
// server's context, so Ctrl-C (signal_context) stops accepting, and closing the
// connections ends their tasks: shutdown is boring.
#include <sluice/net.hpp>
#include <sluice/sluice.hpp>

#include <CLI/CLI.hpp>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <string>

namespace sl = sluice;
namespace net = sluice::net;
using namespace std::chrono_literals;

namespace {

sl::task<void> serve_conn(net::tcp_stream conn, sl::context ctx) {
  char buf[16384];
  for (;;) {
    const net::io_result r = co_await conn.read(ctx, buf);
    if (r.error || r.bytes == 0) co_return;
    const net::io_result w = co_await conn.write(ctx, std::string_view(buf, r.bytes));
    if (w.error) co_return;
  }
}

sl::task<void> serve(net::tcp_listener* ln, sl::context ctx) {
  sl::wait_group conns;
  for (;;) {
    auto a = co_await ln->accept(ctx);
    if (a.error) break;
    conns.add(1);
    sl::go([](net::tcp_stream c, sl::context x, sl::wait_group* wg) -> sl::task<void> {
      co_await serve_conn(std::move(c), x);
      wg->done();
    }, std::move(a.stream), ctx, &conns);
  }
  co_await conns.wait();  // every connection task sees ctx cancelled and ends
}

sl::task<long> client(std::string addr, int rounds, std::size_t size) {
  auto c = co_await net::tcp_stream::connect(sl::context::background(), addr);
  if (c.error) co_return -1;
  const std::string msg(size, 'x');
  std::string buf(size, '\0');
  long done = 0;
  for (int i = 0; i < rounds; ++i) {
    const auto w = co_await c.stream.write(sl::context::background(), msg);
    if (w.error) co_return -1;
    std::size_t got = 0;
    while (got < size) {
      const auto r = co_await c.stream.read(sl::context::background(),
                                            std::span<char>(buf.data() + got, size - got));
      if (r.error || r.bytes == 0) co_return -1;
      got += r.bytes;
    }
    ++done;
  }
  co_return done;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice TCP echo server and load test"};
  std::string listen = "127.0.0.1:0";
  bool serve_only = false;
  int clients = 64;
  int rounds = 2000;
  std::size_t size = 64;
  app.add_option("--listen", listen, "address to listen on (host:port)");
  app.add_flag("--serve", serve_only, "only serve, until SIGINT/SIGTERM");
  app.add_option("--clients", clients, "load test: concurrent clients")->check(CLI::Range(1, 10000));
  app.add_option("--rounds", rounds, "load test: round trips per client")->check(CLI::Range(1, 10000000));
  app.add_option("--size", size, "load test: message bytes")->check(CLI::Range(1, 1 << 20));
  CLI11_PARSE(app, argc, argv);

  return sl::run([&]() -> sl::task<int> {
    auto [ctx, stop] = sl::signal_context(sl::context::background(), {SIGINT, SIGTERM});
    net::tcp_listener ln;
    try {
      ln = net::tcp_listener::listen(listen);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "example-echo: %s\n", e.what());
      co_return 2;
    }
    std::fprintf(stderr, "example-echo: listening on %s\n", ln.local_address().c_str());
    auto [server_ctx, stop_server] = sl::with_cancel(ctx);
    auto server = sl::spawn(serve, &ln, server_ctx);
    int rc = 0;
    if (serve_only) {
      co_await ctx.done();
      std::fprintf(stderr, "example-echo: shutting down\n");
    } else {
      const auto start = sl::clock::now();
      std::vector<sl::join_handle<long>> hs;
      for (int i = 0; i < clients; ++i) hs.push_back(sl::spawn(client, ln.local_address(), rounds, size));
      long total = 0;
      for (auto& h : hs) {
        const long n = co_await h.join();
        if (n < 0) rc = 1;
        total += n < 0 ? 0 : n;
      }
      const double secs = std::chrono::duration<double>(sl::clock::now() - start).count();
      std::printf("example-echo: %d clients x %d round trips of %zu bytes: %ld round trips in %.3f s (%.0f/s)\n",
                  clients, rounds, size, total, secs, static_cast<double>(total) / secs);
    }
    stop_server();
    co_await server.join();
    stop();
    co_return rc;
  });
}
