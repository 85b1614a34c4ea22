// sluice-bench: runs the runtime workloads of ../shared/peers/WORKLOADS.md (all,
// or those named as arguments) and prints one RESULT line per measurement:
//
//   RESULT impl=sluice workload=chan_spsc value=21.3 unit=ns/item
//
// Each workload runs once at a tenth of its size (warm-up), then measured, on a
// runtime with the default worker count. Every workload checks its own result
// and exits 1 on a mismatch, so a broken runtime cannot report a fast number.
#include <sluice/sluice.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

using steady = std::chrono::steady_clock;

void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "sluice-bench: self-check failed: %s\n", what);
    std::exit(1);
  }
}

double per_item_ns(steady::duration d, long items) {
  return static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) /
         static_cast<double>(items);
}

long rss_bytes() {
  std::ifstream f("/proc/self/statm");
  long size = 0;
  long resident = 0;
  f >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

double cpu_ms() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e3 +
         static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e3;
}

// ---- spawn_join ------------------------------------------------------------------
double spawn_join(long n) {
  std::atomic<long> counter{0};
  const auto start = steady::now();
  sl::run([&]() -> sl::task<void> {
    sl::wait_group wg;
    wg.add(n);
    for (long i = 0; i < n; ++i) {
      sl::go([](std::atomic<long>* c, sl::wait_group* w) -> sl::task<void> {
        c->fetch_add(1, std::memory_order_relaxed);
        w->done();
        co_return;
      }, &counter, &wg);
    }
    co_await wg.wait();
  });
  const auto el = steady::now() - start;
  check(counter.load() == n, "spawn_join count");
  return per_item_ns(el, n);
}

// ---- park_memory ----------------------------------------------------------------
double park_memory(long n) {
  double result = 0;
  sl::run([&]() -> sl::task<void> {
    sl::chan<int> ch;  // unbuffered, nobody sends
    std::atomic<long> started{0};
    sl::wait_group exited;
    const long before = rss_bytes();
    exited.add(n);
    for (long i = 0; i < n; ++i) {
      sl::go([](sl::chan<int> c, std::atomic<long>* s, sl::wait_group* w) -> sl::task<void> {
        s->fetch_add(1, std::memory_order_relaxed);
        co_await c.recv();
        w->done();
      }, ch, &started, &exited);
    }
    while (started.load() < n) co_await sl::yield();
    co_await sl::sleep_for(10ms);  // as the Go peer: let the last few park
    const long after = rss_bytes();
    ch.close();
    co_await exited.wait();
    result = static_cast<double>(after - before) / static_cast<double>(n);
  });
  return result;
}

// ---- chan_pingpong ----------------------------------------------------------------
double chan_pingpong(long n) {
  return sl::run([&]() -> sl::task<double> {
    sl::chan<long> ping, pong;
    auto echo = sl::spawn([](sl::chan<long> in, sl::chan<long> out) -> sl::task<void> {
      while (auto v = co_await in.recv()) co_await out.send(*v + 1);
    }, ping, pong);
    const auto start = steady::now();
    long v = 0;
    for (long i = 0; i < n; ++i) {
      co_await ping.send(v);
      v = *(co_await pong.recv());
    }
    const auto el = steady::now() - start;
    ping.close();
    co_await echo.join();
    check(v == n, "chan_pingpong value");
    co_return per_item_ns(el, n);
  });
}

// ---- chan_spsc ---------------------------------------------------------------------
double chan_spsc(long n) {
  return sl::run([&]() -> sl::task<double> {
    sl::chan<long> ch(1024);
    const auto start = steady::now();
    sl::go([](sl::chan<long> c, long count) -> sl::task<void> {
      for (long i = 0; i < count; ++i) co_await c.send(i);
      c.close();
    }, ch, n);
    long sum = 0;
    while (auto v = co_await ch.recv()) sum += *v;
    const auto el = steady::now() - start;
    check(sum == n * (n - 1) / 2, "chan_spsc sum");
    co_return per_item_ns(el, n);
  });
}

// ---- chan_mpmc ---------------------------------------------------------------------
double chan_mpmc(long n) {
  return sl::run([&]() -> sl::task<double> {
    constexpr int producers = 4, consumers = 4;
    const long per = n / producers;
    sl::chan<long> ch(1024);
    std::atomic<long> total{0};
    sl::wait_group prod, cons;
    const auto start = steady::now();
    prod.add(producers);
    for (int p = 0; p < producers; ++p) {
      sl::go([](sl::chan<long> c, long base, long count, sl::wait_group* w) -> sl::task<void> {
        for (long i = 0; i < count; ++i) co_await c.send(base + i);
        w->done();
      }, ch, p * per, per, &prod);
    }
    cons.add(consumers);
    for (int c = 0; c < consumers; ++c) {
      sl::go([](sl::chan<long> in, std::atomic<long>* t, sl::wait_group* w) -> sl::task<void> {
        long s = 0;
        while (auto v = co_await in.recv()) s += *v;
        t->fetch_add(s);
        w->done();
      }, ch, &total, &cons);
    }
    co_await prod.wait();
    ch.close();
    co_await cons.wait();
    const auto el = steady::now() - start;
    const long m = per * producers;
    check(total.load() == m * (m - 1) / 2, "chan_mpmc sum");
    co_return per_item_ns(el, m);
  });
}

// ---- select2 -----------------------------------------------------------------------
double select2(long n) {
  return sl::run([&]() -> sl::task<double> {
    sl::chan<long> a(128), b(128);
    auto prod = [](sl::chan<long> c, long count) -> sl::task<void> {
      for (long i = 0; i < count; ++i) co_await c.send(i);
      c.close();
    };
    const auto start = steady::now();
    sl::go(prod, a, n);
    sl::go(prod, b, n);
    long sum = 0, cnt = 0;
    bool a_open = true, b_open = true;
    while (a_open && b_open) {
      auto r = co_await sl::select(sl::recv(a), sl::recv(b));
      if (r.index() == 0) {
        if (auto& v = r.get<0>()) {
          sum += *v;
          ++cnt;
        } else {
          a_open = false;
        }
      } else {
        if (auto& v = r.get<1>()) {
          sum += *v;
          ++cnt;
        } else {
          b_open = false;
        }
      }
    }
    // One side closed (Go sets it to nil): drain the other.
    const sl::chan<long>& rest = a_open ? a : b;
    if (a_open || b_open) {
      while (auto v = co_await rest.recv()) {
        sum += *v;
        ++cnt;
      }
    }
    const auto el = steady::now() - start;
    check(cnt == 2 * n && sum == n * (n - 1), "select2 count/sum");
    co_return per_item_ns(el, 2 * n);
  });
}

// ---- mutex_contended -----------------------------------------------------------------
double mutex_contended(long n) {
  return sl::run([&]() -> sl::task<double> {
    constexpr int tasks = 8;
    const long per = n / tasks;
    sl::mutex mu;
    long shared = 0;
    sl::wait_group wg;
    const auto start = steady::now();
    wg.add(tasks);
    for (int t = 0; t < tasks; ++t) {
      sl::go([](sl::mutex* m, long* s, long count, sl::wait_group* w) -> sl::task<void> {
        for (long i = 0; i < count; ++i) {
          auto g = co_await m->lock();
          ++*s;
        }
        w->done();
      }, &mu, &shared, per, &wg);
    }
    co_await wg.wait();
    const auto el = steady::now() - start;
    check(shared == per * tasks, "mutex_contended count");
    co_return per_item_ns(el, per * tasks);
  });
}

// ---- pipeline ------------------------------------------------------------------------
double pipeline(long n) {
  return sl::run([&]() -> sl::task<double> {
    const auto start = steady::now();
    sl::chan<long> gen, filt, sq;
    sl::go([](sl::chan<long> out, long count) -> sl::task<void> {
      for (long i = 1; i <= count; ++i) co_await out.send(i);
      out.close();
    }, gen, n);
    sl::go([](sl::chan<long> in, sl::chan<long> out) -> sl::task<void> {
      while (auto v = co_await in.recv()) {
        if (*v % 3 != 0) co_await out.send(*v);
      }
      out.close();
    }, gen, filt);
    sl::go([](sl::chan<long> in, sl::chan<long> out) -> sl::task<void> {
      while (auto v = co_await in.recv()) co_await out.send(*v * *v);
      out.close();
    }, filt, sq);
    long sum = 0;
    while (auto v = co_await sq.recv()) sum += *v;
    const auto el = steady::now() - start;
    long want = 0;
    for (long i = 1; i <= n; ++i) {
      if (i % 3 != 0) want += i * i;
    }
    check(sum == want, "pipeline sum");
    co_return per_item_ns(el, n);
  });
}

// ---- timers ---------------------------------------------------------------------------
double last_timers_cpu = 0;
double timers(long n) {
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<long> dist(1'000'000, 100'000'000);
  std::vector<std::chrono::nanoseconds> ds(static_cast<std::size_t>(n));
  for (auto& d : ds) d = std::chrono::nanoseconds(dist(rng));
  const double cpu0 = cpu_ms();
  const auto start = steady::now();
  sl::run([&]() -> sl::task<void> {
    sl::wait_group wg;
    wg.add(n);
    for (long i = 0; i < n; ++i) {
      sl::go([](std::chrono::nanoseconds d, sl::wait_group* w) -> sl::task<void> {
        co_await sl::sleep_for(d);
        w->done();
      }, ds[static_cast<std::size_t>(i)], &wg);
    }
    co_await wg.wait();
  });
  const auto el = steady::now() - start;
  last_timers_cpu = cpu_ms() - cpu0;
  return static_cast<double>(std::chrono::duration_cast<std::chrono::microseconds>(el).count()) /
         1e3;
}

// ---- pubsub ---------------------------------------------------------------------------
double pubsub(long n) {
  return sl::run([&]() -> sl::task<double> {
    constexpr int subscribers = 64;
    std::vector<sl::chan<long>> subs;
    std::atomic<long> total{0};
    sl::wait_group wg;
    const auto start = steady::now();
    wg.add(subscribers);
    for (int s = 0; s < subscribers; ++s) {
      subs.emplace_back(256);
      sl::go([](sl::chan<long> in, std::atomic<long>* t, sl::wait_group* w) -> sl::task<void> {
        long c = 0;
        while (auto v = co_await in.recv()) c += *v;
        t->fetch_add(c);
        w->done();
      }, subs.back(), &total, &wg);
    }
    for (long m = 0; m < n; ++m) {
      for (const auto& ch : subs) co_await ch.send(m);
    }
    for (const auto& ch : subs) ch.close();
    co_await wg.wait();
    const auto el = steady::now() - start;
    check(total.load() == subscribers * n * (n - 1) / 2, "pubsub total");
    co_return per_item_ns(el, n * subscribers);
  });
}

// ---- worker_pool -----------------------------------------------------------------
double worker_pool(long n) {
  return sl::run([&]() -> sl::task<double> {
    std::atomic<long> counter{0};
    const auto start = steady::now();
    sl::worker_pool pool({.workers = 4, .queue_capacity = 1024, .name = "bench"});
    auto job = [&counter](sl::context) -> sl::task<void> {
      counter.fetch_add(1, std::memory_order_relaxed);
      co_return;
    };
    for (long i = 0; i < n; ++i) co_await pool.submit(job);
    const auto s = co_await pool.shutdown(sl::context::background());
    const auto el = steady::now() - start;
    check(counter.load() == n && s.completed == static_cast<std::uint64_t>(n), "worker_pool counter");
    co_return per_item_ns(el, n);
  });
}

// ---- errgroup_limit ------------------------------------------------------------------
double errgroup_limit(long n) {
  return sl::run([&]() -> sl::task<double> {
    const auto start = steady::now();
    sl::errgroup g;
    g.set_limit(16);
    auto trivial = []() -> sl::task<void> { co_return; };
    for (long i = 0; i < n; ++i) co_await g.go(trivial);
    co_await g.wait();
    const auto el = steady::now() - start;
    co_return per_item_ns(el, n);
  });
}

// ---- rate_allow / rate_allow_parallel / rate_keyed -------------------------------------
double rate_allow(long n) {
  sl::rate::limiter lim(sl::rate::limit(1e9), 1'000'000'000);
  long ok = 0;
  const auto start = steady::now();
  for (long i = 0; i < n; ++i) ok += lim.allow() ? 1 : 0;
  const auto el = steady::now() - start;
  check(ok == n, "rate_allow allowed all");
  return per_item_ns(el, n);
}

double rate_allow_parallel(long n) {
  return sl::run([&]() -> sl::task<double> {
    constexpr int tasks = 2;
    const long per = n / tasks;
    sl::rate::limiter lim(sl::rate::limit(1e9), 1'000'000'000);
    std::atomic<long> ok{0};
    sl::wait_group wg;
    const auto start = steady::now();
    wg.add(tasks);
    auto caller = [&]() -> sl::task<void> {
      long c = 0;
      for (long i = 0; i < per; ++i) c += lim.allow() ? 1 : 0;
      ok.fetch_add(c);
      wg.done();
      co_return;
    };
    for (int t = 0; t < tasks; ++t) sl::go{caller};
    co_await wg.wait();
    const auto el = steady::now() - start;
    check(ok.load() == per * tasks, "rate_allow_parallel allowed all");
    co_return per_item_ns(el, per * tasks);
  });
}

std::vector<std::string> keyed_keys(long count) {
  std::vector<std::string> keys;
  keys.reserve(static_cast<std::size_t>(count));
  char buf[32];
  for (long i = 0; i < count; ++i) {
    std::snprintf(buf, sizeof buf, "10.%ld.%ld.%ld", (i >> 16) & 255, (i >> 8) & 255, i & 255);
    keys.emplace_back(buf);
  }
  return keys;
}

double rate_keyed(long n) {
  static const std::vector<std::string> keys = keyed_keys(100'000);
  sl::rate::keyed_limiter<std::string> kl(
      {.limit = sl::rate::limit(1e9), .burst = 1'000'000'000, .max_keys = 1'000'000});
  long ok = 0;
  std::size_t k = 0;
  const auto start = steady::now();
  for (long i = 0; i < n; ++i) {
    ok += kl.allow(keys[k]) ? 1 : 0;
    if (++k == keys.size()) k = 0;
  }
  const auto el = steady::now() - start;
  check(ok == n, "rate_keyed allowed all");
  return per_item_ns(el, n);
}

// Bytes of RSS per tracked key, 100,000 IPv4-style keys (keys prebuilt first,
// so only the limiter's own memory is measured).
double keyed_memory(long n) {
  const std::vector<std::string> keys = keyed_keys(n);
  const long before = rss_bytes();
  sl::rate::keyed_limiter<std::string> kl(
      {.limit = sl::rate::limit(10), .burst = 20, .max_keys = 1'000'000});
  const auto t = sl::clock::now();
  for (const auto& key : keys) (void)kl.allow_n(key, t, 1);
  const long after = rss_bytes();
  check(kl.size() == static_cast<std::size_t>(n), "keyed_memory tracks every key");
  return static_cast<double>(after - before) / static_cast<double>(n);
}

struct workload {
  const char* name;
  const char* unit;
  long n;
  std::function<double(long)> fn;
};

}  // namespace

int main(int argc, char** argv) {
  // park_memory first (as the Go peer): later workloads leave frames cached.
  const std::vector<workload> all = {
      {"park_memory", "bytes/task", 100'000, park_memory},
      {"spawn_join", "ns/task", 1'000'000, spawn_join},
      {"chan_pingpong", "ns/roundtrip", 1'000'000, chan_pingpong},
      {"chan_spsc", "ns/item", 10'000'000, chan_spsc},
      {"chan_mpmc", "ns/item", 10'000'000, chan_mpmc},
      {"select2", "ns/item", 1'000'000, select2},
      {"mutex_contended", "ns/op", 2'000'000, mutex_contended},
      {"pipeline", "ns/item", 1'000'000, pipeline},
      {"timers", "ms", 100'000, timers},
      {"pubsub", "ns/msg", 100'000, pubsub},
      {"worker_pool", "ns/job", 1'000'000, worker_pool},
      {"errgroup_limit", "ns/task", 1'000'000, errgroup_limit},
      {"rate_allow", "ns/op", 10'000'000, rate_allow},
      {"rate_allow_parallel", "ns/op", 10'000'000, rate_allow_parallel},
      {"rate_keyed", "ns/op", 10'000'000, rate_keyed},
      {"keyed_memory", "bytes/key", 100'000, keyed_memory},
  };
  std::vector<std::string> wanted(argv + 1, argv + argc);
  for (const std::string& w : wanted) {
    bool known = false;
    for (const auto& wl : all) known = known || w == wl.name;
    if (!known) {
      std::fprintf(stderr, "sluice-bench: unknown workload '%s'\n", w.c_str());
      return 2;
    }
  }
  std::fprintf(stderr, "# sluice-bench workers=%u\n", std::thread::hardware_concurrency());
  for (const auto& wl : all) {
    bool run = wanted.empty();
    for (const std::string& w : wanted) run = run || w == wl.name;
    if (!run) continue;
    const std::string name = wl.name;
    if (name != "park_memory" && name != "keyed_memory") wl.fn(wl.n / 10);  // warm-up
    const double v = wl.fn(wl.n);
    if (std::string(wl.name) == "timers") {
      std::printf("RESULT impl=sluice workload=timers_wall value=%.1f unit=ms\n", v);
      std::printf("RESULT impl=sluice workload=timers_cpu value=%.1f unit=ms\n", last_timers_cpu);
    } else {
      std::printf("RESULT impl=sluice workload=%s value=%.1f unit=%s\n", wl.name, v, wl.unit);
    }
    std::fflush(stdout);
  }
  return 0;
}
