// Server stress: thousands of idle keep-alive connections beside active
// traffic, and a storm of clients that vanish mid-request while a shutdown
// races them. Each hunts a different interleaving; see the test comments.
#include "http_test_util.hpp"

#include <sluice/errgroup.hpp>

#include <sys/resource.h>
#include <sys/socket.h>

#include <atomic>
#include <random>

using namespace std::chrono_literals;
using sl_http::get;
using sl_http::raw_client;
using sl_http::test_server;
using sluice::task;
namespace http = sluice::http;

namespace {

// Raises the soft descriptor limit towards `want` (never above the hard one);
// returns the limit now in force.
rlim_t raise_fd_limit(rlim_t want) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur < want) {
    rl.rlim_cur = std::min(want, rl.rlim_max);
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
  }
  return rl.rlim_cur;
}

task<void> hello(http::request&, http::response& res) {
  res.send(200, "hello\n");
  co_return;
}

}  // namespace

// 5,000 keep-alive connections that each made one request and then stay idle
// (both ends live in this process: 10,000 descriptors) while fresh clients
// are served normally. Then a graceful shutdown closes all the idle ones.
TEST(HttpServerStress, FiveThousandIdleConnectionsDoNotDisturbActiveOnes) {
  static constexpr int idle_n = 5000;
  const rlim_t limit = raise_fd_limit(2 * idle_n + 512);
  ASSERT_GE(limit, static_cast<rlim_t>(2 * idle_n + 256)) << "cannot raise the descriptor limit";
  sl_test::run_checked([]() -> task<void> {
    test_server ts(hello, {.max_connections = 20000});
    std::vector<raw_client> idle;
    idle.reserve(idle_n);
    for (int i = 0; i < idle_n; ++i) {
      idle.push_back(co_await raw_client::connect(ts.address));
      EXPECT_TRUE(co_await idle.back().send(get("/hello")));
      auto r = co_await idle.back().read_response();
      if (!r || r->status != 200) {
        ADD_FAILURE() << "idle client " << i << " got no answer";
        break;
      }
    }
    EXPECT_TRUE(co_await sl_test::until([&] { return ts.srv->stats().connections_idle == idle_n; }))
        << ts.srv->stats().connections_idle;
    // Active traffic beside them: 8 clients x 50 keep-alive requests.
    sluice::errgroup g;
    std::atomic<int> served{0};
    auto client = [&]() -> task<void> {
      auto c = co_await raw_client::connect(ts.address);
      for (int i = 0; i < 50; ++i) {
        if (!co_await c.send(get("/hello"))) co_return;
        auto r = co_await c.read_response();
        if (r && r->status == 200) ++served;
      }
    };
    for (int k = 0; k < 8; ++k) co_await g.go(client);
    co_await g.wait();
    EXPECT_EQ(served.load(), 400);
    // The active clients are gone (the server notices each close soon after).
    EXPECT_TRUE(co_await sl_test::until([&] { return ts.srv->stats().connections_open == idle_n; }))
        << ts.srv->stats().connections_open;
    // Shutdown closes every idle connection: each client sees end of stream.
    auto stopping = sluice::spawn([&]() -> task<std::error_code> { co_return co_await ts.stop(30s); });
    int closed = 0;
    for (auto& c : idle) closed += (co_await c.closed_by_server()) ? 1 : 0;
    EXPECT_EQ(closed, idle_n);
    EXPECT_FALSE(co_await stopping.join());
  });
}

// Clients that send part of a request, a whole one, or a request whose
// handler waits for the client to go away, and then vanish (close or reset)
// at random moments; halfway through, a graceful shutdown with a short
// deadline starts. Hunts: a handler context cancelled while the connection
// tears down, hangup watches outliving their request, shutdown scanning a
// registry that connections leave, and leaks of connection tasks.
TEST(HttpServerStress, VanishingClientsAndShutdownLeaveNothingBehind) {
  raise_fd_limit(4096);
  sl_test::run_checked([]() -> task<void> {
    std::atomic<int> handled{0};
    test_server ts([&](http::request& req, http::response& res) -> task<void> {
      ++handled;
      if (req.raw_path() == "/wait") {
        co_await req.ctx().done();
      } else if (req.raw_path() == "/stream") {
        for (int i = 0; i < 20; ++i) {
          res.write("chunk");
          if (co_await res.flush()) co_return;
          co_await sluice::yield();
        }
      }
      res.send(200, "done");
    }, {.read_header_timeout = 2s, .idle_timeout = 2s});
    sluice::errgroup g;
    g.set_limit(64);
    std::mt19937 rng(20261201);
    for (int i = 0; i < 600; ++i) {
      const unsigned kind = rng() % 5;
      const unsigned seed = rng();
      if (i == 300) {
        // The shutdown races the rest of the clients (they may be refused).
        auto stopper = [&]() -> task<void> {
          const std::error_code ec = co_await ts.stop(200ms);
          EXPECT_TRUE(!ec || ec == sluice::errc::deadline_exceeded) << ec.message();
        };
        co_await g.go(stopper);
      }
      auto vanish = [&, kind, seed]() -> task<void> {
        auto [s, ec] = co_await sluice::net::tcp_stream::connect(sluice::context::background(), ts.address);
        if (ec) co_return;  // refused after shutdown began
        std::mt19937 r(seed);
        std::string req;
        switch (kind) {
          case 0: req = "GET /partial HTTP/1.1\r\nHost: x\r\nX-Long: aaaa"; break;
          case 1: req = get("/ok") + get("/ok"); break;
          case 2: req = get("/wait"); break;
          case 3: req = get("/stream"); break;
          default: req = "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part"; break;
        }
        co_await s.write(sluice::context::background(), req);
        for (unsigned k = r() % 4; k > 0; --k) co_await sluice::yield();
        if (r() % 2 == 0) {
          char buf[256];
          co_await s.read(sluice::context::background(), buf, sluice::clock::now() + 50ms);
        }
        if (r() % 3 == 0) {
          // A reset instead of a close.
          linger lg{1, 0};
          setsockopt(s.native_handle(), SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        s.close();
      };
      co_await g.go(vanish);
    }
    co_await g.wait();
    if (!ts.srv->shutting_down()) ADD_FAILURE() << "shutdown never ran";
    EXPECT_EQ(ts.srv->stats().connections_open, 0u);
    EXPECT_GT(handled.load(), 0);
  });
}
