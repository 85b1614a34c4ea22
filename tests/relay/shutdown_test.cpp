// The real sluice-relay binary under signals: a load generator keeps posting
// while SIGTERM arrives; every accepted event's deliveries must end delivered
// or be reported dropped in the log, and the process must exit 0. Also the
// second SIGINT, and bad flags (exit code 2).
//
// The child's stdout and stderr go to a socketpair the test reads from a task
// (net::tcp_stream::from_fd), so the test learns the child's address from its
// "listening" line and never waits on a full pipe.
#include "relay_test_util.hpp"

#include <sluice/chan.hpp>

#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <map>
#include <set>

extern char** environ;

namespace {

using namespace relay_test;
namespace http = sluice::http;
namespace net = sluice::net;

// A child sluice-relay with its output captured line by line.
class relay_process {
 public:
  explicit relay_process(std::vector<std::string> args) {
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw std::runtime_error("socketpair");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);  // dup2 clears CLOEXEC
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDERR_FILENO);
    args.insert(args.begin(), SLUICE_RELAY_BIN);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, SLUICE_RELAY_BIN, &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      throw std::runtime_error("posix_spawn " SLUICE_RELAY_BIN ": " + std::string(strerror(rc)));
    }
    out_fd_ = fds[0];
  }
  ~relay_process() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_fd_ >= 0) ::close(out_fd_);
  }

  // Starts reading the output (inside the runtime). `listening` gets the
  // address from the "listening" line.
  void start_reading(sluice::chan<std::string> listening) {
    reader_.emplace(sluice::spawn(&read_lines, net::tcp_stream::from_fd(std::exchange(out_fd_, -1)),
                                  this, std::move(listening)));
  }
  // Waits until the child closed its output (it exited), then reaps it.
  // Returns the exit status (128 + signal for a signal).
  sluice::task<int> wait_exit() {
    co_await reader_->join();
    int status = 0;
    ::waitpid(pid_, &status, 0);  // it has exited: its output is closed
    reaped_ = true;
    co_return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  }
  void signal(int sig) const { ::kill(pid_, sig); }

  std::vector<std::string> lines() {
    std::lock_guard lock(mu_);
    return lines_;
  }
  std::vector<json> parsed_lines() {
    std::vector<json> out;
    for (const auto& l : lines()) out.push_back(json::parse(l, nullptr, false));
    return out;
  }

 private:
  static sluice::task<void> read_lines(net::tcp_stream s, relay_process* self,
                                       sluice::chan<std::string> listening) {
    std::string pending;
    char buf[4096];
    bool told = false;
    for (;;) {
      auto r = co_await s.read(sluice::context::background(), std::span<char>(buf, sizeof buf));
      if (r.bytes == 0) break;
      pending.append(buf, r.bytes);
      std::size_t nl;
      while ((nl = pending.find('\n')) != std::string::npos) {
        std::string line = pending.substr(0, nl);
        pending.erase(0, nl + 1);
        if (!told && line.find("\"msg\":\"listening\"") != std::string::npos) {
          json j = json::parse(line, nullptr, false);
          told = listening.try_send(j.value("address", std::string()));
        }
        std::lock_guard lock(self->mu_);
        self->lines_.push_back(std::move(line));
      }
    }
    if (!told) listening.close();  // it exited before listening
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  int out_fd_ = -1;
  std::mutex mu_;
  std::vector<std::string> lines_;
  std::optional<sluice::join_handle<void>> reader_;
};

sluice::task<std::string> listening_address(relay_process& p) {
  sluice::chan<std::string> ch(1);
  p.start_reading(ch);
  auto r = co_await sluice::select(sluice::recv(ch), sluice::after(std::chrono::seconds(20)));
  std::string addr;
  if (r.index() == 0 && r.get<0>()) addr = *r.get<0>();
  co_return addr;
}

// What the subscribers saw: (event id, path) pairs answered 200.
struct seen_log {
  std::mutex mu;
  std::set<std::pair<std::string, std::string>> answered;
  std::atomic<int> stuck{0};
};

// /fast answers 200 at once; /stuck holds every request until `release` ends.
http::handler subscriber(std::shared_ptr<seen_log> seen, sluice::context release) {
  return [seen, release](http::request& req, http::response& res) -> sluice::task<void> {
    const std::string path(req.raw_path());
    if (path == "/stuck") {
      seen->stuck.fetch_add(1);
      co_await sluice::select(sluice::done(release), sluice::done(req.ctx()));
      res.send(503, "released");
      co_return;
    }
    {
      std::lock_guard lock(seen->mu);
      seen->answered.emplace(std::string(req.header().get_or("x-sluice-event-id", "")), path);
    }
    res.send(200, "ok");
  };
}

struct load_result {
  std::vector<std::string> accepted;  // 202 event ids
  int refused_shutting_down = 0;      // 503 after SIGTERM
  int other = 0;
};

// Posts events until `stop` ends; 202 ids are recorded.
sluice::task<void> post_loop(std::string base, sluice::context stop, load_result* out, std::mutex* mu) {
  http::client c({.max_idle_per_host = 4, .max_conns_per_host = 4});
  int n = 0;
  while (!stop.err()) {
    http::client_request req;
    req.method = "POST";
    req.url = base + "/v1/topics/orders/events";
    req.body = "{\"n\":" + std::to_string(n++) + "}";
    req.header.add("Content-Type", "application/json");
    auto [ctx, cancel] = sluice::with_timeout(sluice::context::background(), std::chrono::seconds(10));
    http::client_result r = co_await c.send(ctx, std::move(req));
    cancel();
    std::lock_guard lock(*mu);
    if (!r.ok()) {
      ++out->other;  // the listener closed at the end of the drain
      if (stop.err()) break;
      continue;
    }
    if (r.response.status == 202) {
      json j = json::parse(r.response.body, nullptr, false);
      out->accepted.push_back(j.value("id", std::string()));
    } else if (r.response.status == 503 && r.response.body.find("shutting down") != std::string::npos) {
      ++out->refused_shutting_down;
    } else {
      ++out->other;
    }
  }
}

TEST(RelayShutdown, UnderLoadEveryAcceptedDeliveryIsDeliveredOrLoggedDropped) {
  sl_test::run_checked([]() -> sluice::task<void> {
    auto seen = std::make_shared<seen_log>();
    auto [release, release_all] = sluice::with_cancel(sluice::context::background());
    sl_http::test_server sub(subscriber(seen, release));

    relay_process p({"--listen", "127.0.0.1:0", "--workers", "8", "--queue", "100000",
                     "--per-subscriber-concurrency", "4", "--shutdown-timeout", "1s",
                     "--rate", "1000000", "--burst", "1000000", "--retry-base", "10ms",
                     "--retry-max", "50ms"});
    const std::string addr = co_await listening_address(p);
    RELAY_CO_ASSERT(!addr.empty());
    const std::string base = "http://" + addr;

    http::client c;
    std::map<std::string, std::string> path_of;  // subscription id -> path
    for (std::string path : {"/fast", "/stuck"}) {
      std::string body = "{\"url\": \"http://" + sub.address + path + "\"}";
      api_result r = co_await call(c, "POST", base + "/v1/topics/orders/subscriptions", std::move(body));
      RELAY_CO_ASSERT(r.status == 201);
      path_of[r.value.value("id", std::string())] = path;
    }

    // Load: four posters until told to stop.
    load_result load;
    std::mutex load_mu;
    auto [stop_load, stop_posting] = sluice::with_cancel(sluice::context::background());
    std::vector<sluice::join_handle<void>> posters;
    for (int i = 0; i < 4; ++i) posters.push_back(sluice::spawn(&post_loop, base, stop_load, &load, &load_mu));

    // SIGTERM once a few hundred events are in and /stuck holds its slots.
    EXPECT_TRUE(co_await sl_test::until([&] {
      std::lock_guard lock(load_mu);
      return load.accepted.size() >= 300 && seen->stuck.load() >= 4;
    }));
    p.signal(SIGTERM);
    const auto signalled = sluice::clock::now();

    // The drain: /readyz says 503 while the listener stays open, and posts
    // are refused with 503 "shutting down".
    bool saw_not_ready = false;
    for (int i = 0; i < 200 && !saw_not_ready; ++i) {
      auto [ctx, cancel] = sluice::with_timeout(sluice::context::background(), std::chrono::seconds(5));
      auto r = co_await c.get(ctx, base + "/readyz");
      cancel();
      if (!r.ok()) break;
      saw_not_ready = r.response.status == 503;
      if (!saw_not_ready) co_await sluice::yield();
    }
    EXPECT_TRUE(saw_not_ready);
    EXPECT_TRUE(co_await sl_test::until([&] {
      std::lock_guard lock(load_mu);
      return load.refused_shutting_down > 0;
    }));
    stop_posting();
    for (auto& h : posters) co_await h.join();

    const int code = co_await p.wait_exit();
    const auto took = sluice::clock::now() - signalled;
    release_all();
    co_await sub.stop();

    EXPECT_EQ(code, 0);
    // The deadline is 1 s; exiting is bounded by it plus closing (2 s at most).
    EXPECT_LT(took, std::chrono::seconds(15)) << "the drain did not end near its deadline";

    // Every accepted event's two deliveries: answered 200 (for /fast) or
    // reported dropped; /stuck never answered, so all of its are dropped.
    std::set<std::pair<std::string, std::string>> dropped;  // (event, subscription)
    std::uint64_t summary_dropped = 0;
    bool summary = false;
    for (const json& l : p.parsed_lines()) {
      const std::string msg = l.value("msg", std::string());
      if (msg == "delivery dropped") {
        const bool fresh = dropped.emplace(l.value("event", std::string()), l.value("subscription", std::string())).second;
        EXPECT_TRUE(fresh) << "dropped twice: " << l.dump();
      } else if (msg.find("deliveries dropped") != std::string::npos) {
        summary = true;
        summary_dropped = l.value("dropped", std::uint64_t{0});
      }
    }
    EXPECT_TRUE(summary);
    EXPECT_EQ(summary_dropped, dropped.size());
    std::lock_guard lock(load_mu);
    EXPECT_GE(load.accepted.size(), 300u);
    std::size_t delivered = 0, lost = 0;
    for (const auto& ev : load.accepted) {
      for (const auto& [sub_id, path] : path_of) {
        const bool was_dropped = dropped.count({ev, sub_id}) != 0;
        bool answered = false;
        {
          std::lock_guard seen_lock(seen->mu);
          answered = path == "/fast" && seen->answered.count({ev, path}) != 0;
        }
        if (path == "/stuck") {
          EXPECT_TRUE(was_dropped) << ev << " to /stuck was not reported dropped";
        }
        if (answered) ++delivered;
        if (!answered && !was_dropped) ++lost;
      }
    }
    EXPECT_EQ(lost, 0u) << "deliveries that neither arrived nor were reported dropped";
    EXPECT_GT(delivered, 0u);
    EXPECT_GT(dropped.size(), 0u);
  });
}

TEST(RelayShutdown, NothingStuckDrainsWithNothingDropped) {
  sl_test::run_checked([]() -> sluice::task<void> {
    auto seen = std::make_shared<seen_log>();
    auto [release, release_all] = sluice::with_cancel(sluice::context::background());
    sl_http::test_server sub(subscriber(seen, release));
    relay_process p({"--listen", "127.0.0.1:0", "--shutdown-timeout", "20s"});
    const std::string addr = co_await listening_address(p);
    RELAY_CO_ASSERT(!addr.empty());
    http::client c;
    std::string sub_body = "{\"url\": \"http://" + sub.address + "/fast\"}";
    RELAY_CO_ASSERT((co_await call(c, "POST", "http://" + addr + "/v1/topics/t/subscriptions",
                                   std::move(sub_body))).status == 201);
    std::vector<std::string> ids;
    for (int i = 0; i < 50; ++i) {
      std::string body = "{\"i\":" + std::to_string(i) + "}";
      api_result r = co_await call(c, "POST", "http://" + addr + "/v1/topics/t/events", std::move(body));
      RELAY_CO_ASSERT(r.status == 202);
      ids.push_back(r.value.value("id", std::string()));
    }
    c.close_idle();
    p.signal(SIGTERM);
    EXPECT_EQ(co_await p.wait_exit(), 0);
    release_all();
    co_await sub.stop();
    std::size_t drop_lines = 0;
    bool summary_zero = false;
    for (const json& l : p.parsed_lines()) {
      const std::string msg = l.value("msg", std::string());
      drop_lines += msg == "delivery dropped";
      if (msg.find("deliveries dropped") != std::string::npos) {
        summary_zero = l.value("dropped", -1) == 0 && l.value("drained", false);
      }
    }
    EXPECT_EQ(drop_lines, 0u);
    EXPECT_TRUE(summary_zero);
    std::lock_guard lock(seen->mu);
    for (const auto& id : ids) EXPECT_EQ(seen->answered.count({id, "/fast"}), 1u) << id;
  });
}

TEST(RelayShutdown, SecondInterruptExitsAtOnce) {
  sl_test::run_checked([]() -> sluice::task<void> {
    auto seen = std::make_shared<seen_log>();
    auto [release, release_all] = sluice::with_cancel(sluice::context::background());
    sl_http::test_server sub(subscriber(seen, release));
    relay_process p({"--listen", "127.0.0.1:0", "--shutdown-timeout", "10m"});
    const std::string addr = co_await listening_address(p);
    RELAY_CO_ASSERT(!addr.empty());
    http::client c;
    std::string sub_body = "{\"url\": \"http://" + sub.address + "/stuck\"}";
    RELAY_CO_ASSERT((co_await call(c, "POST", "http://" + addr + "/v1/topics/t/subscriptions",
                                   std::move(sub_body))).status == 201);
    RELAY_CO_ASSERT((co_await call(c, "POST", "http://" + addr + "/v1/topics/t/events", "{}")).status == 202);
    EXPECT_TRUE(co_await sl_test::until([&] { return seen->stuck.load() >= 1; }));
    c.close_idle();
    p.signal(SIGINT);
    // The drain has begun (a 10-minute one, held up by /stuck) ...
    EXPECT_TRUE(co_await sl_test::until([&] {
      for (const auto& l : p.lines()) {
        if (l.find("shutdown: draining") != std::string::npos) return true;
      }
      return false;
    }));
    p.signal(SIGINT);  // ... and the second interrupt ends it now.
    EXPECT_EQ(co_await p.wait_exit(), 130);
    release_all();
    co_await sub.stop();
    bool said = false;
    for (const auto& l : p.lines()) said = said || l.find("second interrupt") != std::string::npos;
    EXPECT_TRUE(said);
  });
}

TEST(RelayShutdown, BadFlagsExitWithCode2) {
  sl_test::run_checked([]() -> sluice::task<void> {
    for (std::vector<std::string> args :
         {std::vector<std::string>{"--workers", "0"}, {"--delivery-timeout", "fast"}, {"--bogus"}}) {
      relay_process p(args);
      sluice::chan<std::string> ignored(1);
      p.start_reading(ignored);
      EXPECT_EQ(co_await p.wait_exit(), 2) << args[0];
      bool explained = false;
      for (const auto& l : p.lines()) explained = explained || l.find("sluice-relay:") != std::string::npos;
      EXPECT_TRUE(explained) << args[0];
    }
  });
}

}  // namespace
