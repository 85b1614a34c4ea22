// TCP on the netpoller: accept/connect/read/write/shutdown/close, context
// cancellation and deadlines on every wait, and an echo load test.
#include "test_util.hpp"

#include <sluice/context.hpp>
#include <sluice/net.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <sys/socket.h>
#include <unistd.h>

#include <string>

using namespace std::chrono_literals;
namespace sl = sluice;
namespace net = sluice::net;

namespace {

sl::task<void> echo_conn(net::tcp_stream conn) {
  char buf[4096];
  const auto ctx = sl::context::background();
  for (;;) {
    const net::io_result r = co_await conn.read(ctx, buf);
    if (r.error || r.bytes == 0) co_return;
    const net::io_result w = co_await conn.write(ctx, std::string_view(buf, r.bytes));
    if (w.error) co_return;
  }
}

sl::task<void> echo_server(net::tcp_listener* ln, sl::context ctx) {
  sl::wait_group conns;
  for (;;) {
    auto accepted = co_await ln->accept(ctx);
    if (accepted.error) break;
    conns.add(1);
    sl::go([](net::tcp_stream c, sl::wait_group* wg) -> sl::task<void> {
      co_await echo_conn(std::move(c));
      wg->done();
    }, std::move(accepted.stream), &conns);
  }
  co_await conns.wait();
}

sl::task<std::string> read_exactly(net::tcp_stream& s, std::size_t n) {
  std::string out;
  char buf[1024];
  while (out.size() < n) {
    const auto r = co_await s.read(sl::context::background(), buf);
    if (r.error || r.bytes == 0) break;
    out.append(buf, r.bytes);
  }
  co_return out;
}

}  // namespace

TEST(Net, EchoRoundTrip) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto ln = net::tcp_listener::listen("127.0.0.1:0");
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    auto server = sl::spawn(echo_server, &ln, ctx);
    auto conn = co_await net::tcp_stream::connect(sl::context::background(), ln.local_address());
    EXPECT_FALSE(conn.error);
    const auto w = co_await conn.stream.write(sl::context::background(), "hello, sluice");
    EXPECT_EQ(w.bytes, 13u);
    const std::string back = co_await read_exactly(conn.stream, 13);
    EXPECT_EQ(back, "hello, sluice");
    EXPECT_FALSE(conn.stream.remote_address().empty());
    conn.stream.close();
    cancel();
    co_await server.join();
  });
}

TEST(Net, FromFdAdoptsASocketpairEnd) {
  sl_test::run_checked([]() -> sl::task<void> {
    int fds[2];
    EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
    auto a = net::tcp_stream::from_fd(fds[0]);
    auto b = net::tcp_stream::from_fd(fds[1]);
    // b reads before anything is written: the read parks on the netpoller.
    auto reader = sl::spawn([](net::tcp_stream* s) -> sl::task<std::string> {
      co_return co_await read_exactly(*s, 5);
    }, &b);
    const auto w = co_await a.write(sl::context::background(), "hello");
    EXPECT_EQ(w.bytes, 5u);
    EXPECT_EQ(co_await reader.join(), "hello");
    a.close();
    char buf[4];
    const auto eof = co_await b.read(sl::context::background(), std::span<char>(buf, sizeof buf));
    EXPECT_EQ(eof.bytes, 0u);
    EXPECT_FALSE(eof.error);
  });
  EXPECT_THROW(net::tcp_stream::from_fd(-1), std::invalid_argument);
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  EXPECT_THROW(net::tcp_stream::from_fd(p[0]), std::invalid_argument);  // not a socket; closed
  ::close(p[1]);
}

TEST(Net, ShutdownWriteGivesPeerEndOfStream) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto ln = net::tcp_listener::listen("127.0.0.1:0");
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    auto server = sl::spawn(echo_server, &ln, ctx);
    auto conn = co_await net::tcp_stream::connect(sl::context::background(), ln.local_address());
    co_await conn.stream.write(sl::context::background(), "abc");
    EXPECT_FALSE(conn.stream.shutdown_write());
    const std::string back = co_await read_exactly(conn.stream, 100);  // echo then EOF
    EXPECT_EQ(back, "abc");
    cancel();
    co_await server.join();
  });
}

TEST(Net, ReadWaitEndsWhenContextIsCancelled) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto ln = net::tcp_listener::listen("127.0.0.1:0");
    auto client = co_await net::tcp_stream::connect(sl::context::background(), ln.local_address());
    auto accepted = co_await ln.accept(sl::context::background());
    EXPECT_FALSE(accepted.error);
    auto [ctx, cancel] = sl::with_timeout(sl::context::background(), 5ms);
    char buf[16];
    const auto r = co_await accepted.stream.read(ctx, buf);  // the client never writes
    EXPECT_EQ(r.error, sl::errc::deadline_exceeded);
    cancel();
  });
}

TEST(Net, AcceptWaitEndsWhenContextIsCancelled) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto ln = net::tcp_listener::listen("127.0.0.1:0");
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    auto h = sl::spawn([](net::tcp_listener* l, sl::context c) -> sl::task<std::error_code> {
      auto a = co_await l->accept(c);
      co_return a.error;
    }, &ln, ctx);
    cancel();
    const std::error_code ec = co_await h.join();
    EXPECT_EQ(ec, sl::errc::canceled);
  });
}

TEST(Net, ConnectRefusedIsAnError) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::string addr;
    {
      auto ln = net::tcp_listener::listen("127.0.0.1:0");
      addr = ln.local_address();
    }  // closed: nobody listens there now
    auto c = co_await net::tcp_stream::connect(sl::context::background(), addr);
    EXPECT_EQ(c.error, std::errc::connection_refused);
    EXPECT_FALSE(c.stream.is_open());
  });
}

TEST(Net, BadAddressesAreRejected) {
  sl_test::run_checked([]() -> sl::task<void> {
    EXPECT_THROW(net::tcp_listener::listen("127.0.0.1"), std::invalid_argument);
    EXPECT_THROW(net::tcp_listener::listen("127.0.0.1:99999"), std::invalid_argument);
    EXPECT_THROW(net::tcp_listener::listen("not-an-ip:80"), std::invalid_argument);
    EXPECT_THROW(net::tcp_listener::listen("127.0.0.1:0", 0), std::invalid_argument);
    co_return;
  });
}

TEST(NetStress, ManyConcurrentEchoClients) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto ln = net::tcp_listener::listen("127.0.0.1:0");
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    auto server = sl::spawn(echo_server, &ln, ctx);
    const std::string addr = ln.local_address();
    std::atomic<int> ok{0};
    sl::wait_group wg;
    constexpr int clients = 200;
    constexpr int rounds = 50;
    wg.add(clients);
    for (int c = 0; c < clients; ++c) {
      sl::go([](std::string a, int id, std::atomic<int>* okc, sl::wait_group* w) -> sl::task<void> {
        auto conn = co_await net::tcp_stream::connect(sl::context::background(), a);
        bool good = !conn.error;
        for (int i = 0; good && i < rounds; ++i) {
          const std::string msg = "client " + std::to_string(id) + " round " + std::to_string(i);
          const auto wr = co_await conn.stream.write(sl::context::background(), msg);
          good = !wr.error && co_await read_exactly(conn.stream, msg.size()) == msg;
        }
        if (good) okc->fetch_add(1);
        w->done();
      }, addr, c, &ok, &wg);
    }
    co_await wg.wait();
    EXPECT_EQ(ok.load(), clients);
    cancel();
    co_await server.join();
  });
}
