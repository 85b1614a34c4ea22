// dump_tasks / list_tasks / num_tasks / leak_check: every live task shows its
// id, what it waits on, its entry function and where it was started.
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/introspection.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/testing.hpp>
#include <sluice/time.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

sl::task<void> parked_on_recv(sl::chan<int> ch) { co_await ch.recv(); }

sl::task<void> parked_on_send(sl::chan<int> ch) {
  try {
    co_await ch.send(1);
  } catch (const sl::channel_closed&) {
  }
}

sl::task<void> parked_in_select(sl::chan<int> a, sl::chan<int> b) {
  co_await sl::select(sl::recv(a), sl::recv(b));
}

sl::task<void> parked_in_sleep(sl::chan<int> wake) {
  // Sleeps in a select so the test can end it early.
  co_await sl::select(sl::recv(wake), sl::after(1h));
}

sl::task<void> parked_on_done(sl::context ctx) { co_await ctx.done(); }

sl::task<void> parked_on_wait_group(sl::wait_group* wg) { co_await wg->wait(); }

// The live task whose origin mentions `entry`, if exactly one does.
std::optional<sl::task_info> find_task(std::string_view entry) {
  std::optional<sl::task_info> found;
  int hits = 0;
  for (const sl::task_info& t : sl::list_tasks()) {
    if (t.origin.find(entry) != std::string::npos) {
      found = t;
      ++hits;
    }
  }
  return hits == 1 ? found : std::nullopt;
}

// Yields until the task started from `entry` waits in `state`.
sl::task<std::optional<sl::task_info>> until_state(std::string_view entry, std::string_view state) {
  for (int i = 0; i < 200'000; ++i) {
    const std::optional<sl::task_info> t = find_task(entry);
    if (t && t->state == state) co_return t;
    co_await sl::yield();
  }
  co_return std::nullopt;
}

std::string dump() {
  std::ostringstream out;
  sl::dump_tasks(out);
  return out.str();
}

}  // namespace

TEST(Introspection, DumpShowsIdWaitStateAndEntryOfAParkedTask) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch;
    sl::go(parked_on_recv, ch);
    const std::optional<sl::task_info> t = co_await until_state("parked_on_recv", "chan receive");
    EXPECT_TRUE(t.has_value());
    if (t) {
      const std::string text = dump();
      const std::string header = "task " + std::to_string(t->id) + " [chan receive]:";
      EXPECT_NE(text.find(header), std::string::npos) << text;
      EXPECT_NE(text.find("entry: (anonymous namespace)::parked_on_recv"), std::string::npos)
          << text;
    }
    ch.close();
  });
}

TEST(Introspection, WaitStatesNameWhatTheTaskWaitsOn) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> recv_ch;
    sl::chan<int> send_ch;
    sl::chan<int> a;
    sl::chan<int> b;
    sl::chan<int> wake;
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    sl::wait_group wg;
    wg.add(1);
    sl::go(parked_on_recv, recv_ch);
    sl::go(parked_on_send, send_ch);
    sl::go(parked_in_select, a, b);
    sl::go(parked_in_sleep, wake);
    sl::go(parked_on_done, ctx);
    sl::go(parked_on_wait_group, &wg);
    const struct {
      const char* entry;
      const char* state;
    } expected[] = {
        {"parked_on_recv", "chan receive"},   {"parked_on_send", "chan send"},
        {"parked_in_select", "select"},       {"parked_in_sleep", "select"},
        {"parked_on_done", "context done"},   {"parked_on_wait_group", "wait_group wait"},
    };
    for (const auto& e : expected) {
      const std::optional<sl::task_info> t = co_await until_state(e.entry, e.state);
      EXPECT_TRUE(t.has_value()) << e.entry << " never showed [" << e.state << "]; dump:\n"
                                 << dump();
    }
    recv_ch.close();
    send_ch.close();
    a.close();
    wake.close();
    cancel();
    wg.done();
  });
}

TEST(Introspection, SleepingTaskShowsSleep) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::go([]() -> sl::task<void> { co_await sl::sleep_for(20ms); });
    bool seen = false;
    for (int i = 0; i < 200'000 && !seen; ++i) {
      for (const sl::task_info& t : sl::list_tasks()) seen = seen || t.state == "sleep";
      if (!seen) co_await sl::yield();
    }
    EXPECT_TRUE(seen) << dump();
  });
}

TEST(Introspection, DumpShowsWhereATaskWasStarted) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch;
    sl::go(parked_on_recv, ch);
    const std::optional<sl::task_info> t = co_await until_state("parked_on_recv", "chan receive");
    EXPECT_TRUE(t.has_value());
    if (t) {
      EXPECT_NE(t->origin.find("created by go at"), std::string::npos) << t->origin;
      EXPECT_NE(t->origin.find("introspection_test.cpp:"), std::string::npos) << t->origin;
    }
    ch.close();
  });
}

TEST(Introspection, SpawnedTasksSayTheyWereSpawned) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch;
    auto h = sl::spawn(parked_on_recv, ch);
    const std::optional<sl::task_info> t = co_await until_state("parked_on_recv", "chan receive");
    EXPECT_TRUE(t.has_value());
    if (t) {
      EXPECT_NE(t->origin.find("created by spawn at"), std::string::npos) << t->origin;
    }
    ch.close();
    co_await h.join();
  });
}

TEST(Introspection, ListTasksGivesEveryLiveTaskAUniqueId) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        sl::chan<int> ch;
        for (int i = 0; i < 50; ++i) sl::go(parked_on_recv, ch);
        std::vector<sl::task_info> tasks;
        for (int i = 0; i < 200'000; ++i) {
          tasks = sl::list_tasks();
          const auto parked = std::count_if(tasks.begin(), tasks.end(), [](const sl::task_info& t) {
            return t.state == "chan receive";
          });
          if (parked == 50) break;
          co_await sl::yield();
        }
        std::set<std::uint64_t> ids;
        for (const auto& t : tasks) {
          EXPECT_NE(t.id, 0u);
          ids.insert(t.id);
        }
        EXPECT_EQ(ids.size(), tasks.size());
        EXPECT_GE(tasks.size(), 51u);  // the 50 plus the test's own task(s)
        EXPECT_TRUE(std::is_sorted(tasks.begin(), tasks.end(),
                                   [](const sl::task_info& x, const sl::task_info& y) {
                                     return x.id < y.id;
                                   }));
        ch.close();
      },
      sl::runtime_options{.workers = 2});
}

TEST(Introspection, NumTasksCountsLiveTasks) {
  sl_test::run_checked([]() -> sl::task<void> {
    const std::size_t before = sl::num_tasks();
    EXPECT_GE(before, 1u);
    sl::chan<int> ch;
    for (int i = 0; i < 10; ++i) sl::go(parked_on_recv, ch);
    EXPECT_EQ(sl::num_tasks(), before + 10);
    ch.close();
    for (int i = 0; i < 200'000 && sl::num_tasks() != before; ++i) co_await sl::yield();
    EXPECT_EQ(sl::num_tasks(), before);
  });
}

TEST(Introspection, LeakCheckReportsAParkedTaskThenNoneAfterItEnds) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch;
    sl::testing::leak_check lc;
    sl::go(parked_on_recv, ch);
    // Wait until it is parked (not merely queued), then ask with no grace period.
    const std::optional<sl::task_info> parked = co_await until_state("parked_on_recv", "chan receive");
    EXPECT_TRUE(parked.has_value());
    const std::vector<sl::task_info> leaked = co_await lc.verify(0ms);
    EXPECT_EQ(leaked.size(), 1u);
    if (leaked.size() == 1) {
      EXPECT_EQ(leaked[0].state, "chan receive");
      EXPECT_NE(leaked[0].origin.find("parked_on_recv"), std::string::npos);
    }
    ch.close();
    const std::vector<sl::task_info> after = co_await lc.verify(5s);
    EXPECT_TRUE(after.empty());
  });
}

TEST(Introspection, LeakCheckIgnoresTasksThatExistedBefore) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch;
    sl::go(parked_on_recv, ch);
    const std::optional<sl::task_info> t = co_await until_state("parked_on_recv", "chan receive");
    EXPECT_TRUE(t.has_value());
    sl::testing::leak_check lc;
    EXPECT_TRUE(lc.leaked_now().empty());
    ch.close();
  });
}

TEST(Introspection, NothingToReportOutsideARuntime) {
  EXPECT_TRUE(sl::list_tasks().empty());
  EXPECT_EQ(sl::num_tasks(), 0u);
  EXPECT_EQ(dump(), "");
  EXPECT_THROW(sl::testing::leak_check(), std::logic_error);
}

// The registry under churn: tasks spawned on every worker finish on others
// (unlinking themselves from their spawner's lists) while a reader lists and
// counts them, and thousands stay parked meanwhile. Every parked task must be
// listed exactly once, and the count must come back to where it started.
TEST(Introspection, RegistryStaysExactUnderChurn) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        const std::size_t before = sl::num_tasks();
        constexpr int spawners = 4;
        constexpr int parked_each = 1500;
        constexpr int short_each = 20'000;
        sl::chan<int> gate;
        sl::wait_group spawned;
        spawned.add(spawners);
        std::atomic<long> short_done{0};
        for (int s = 0; s < spawners; ++s) {
          sl::go(
              [](sl::chan<int> gate, sl::wait_group* spawned, std::atomic<long>* done, int seed)
                  -> sl::task<void> {
                std::uint64_t x = static_cast<std::uint64_t>(seed) * 0x9E3779B97F4A7C15ULL + 1;
                int parked = 0;
                for (int i = 0; i < short_each + parked_each; ++i) {
                  x ^= x << 13;
                  x ^= x >> 7;
                  x ^= x << 17;
                  const bool park = parked < parked_each &&
                                    (x % (short_each + parked_each) < parked_each ||
                                     short_each + parked_each - i <= parked_each - parked);
                  if (park) {
                    ++parked;
                    sl::go(parked_on_recv, gate);
                  } else {
                    sl::go([](std::atomic<long>* d) -> sl::task<void> {
                      d->fetch_add(1, std::memory_order_relaxed);
                      co_return;
                    }, done);
                  }
                  if (x % 64 == 0) co_await sl::yield();
                }
                spawned->done();
              },
              gate, &spawned, &short_done, s + 1);
        }
        // Read while the churn goes on (at least once, even if this task was
        // descheduled until the short tasks were all done).
        do {
          const std::vector<sl::task_info> tasks = sl::list_tasks();
          std::set<std::uint64_t> ids;
          for (const auto& t : tasks) ids.insert(t.id);
          EXPECT_EQ(ids.size(), tasks.size());
          EXPECT_GE(sl::num_tasks(), before);
          co_await sl::yield();
        } while (short_done.load() < static_cast<long>(spawners) * short_each);
        co_await spawned.wait();
        EXPECT_TRUE(co_await sl_test::until_parked("chan receive", spawners * parked_each));
        EXPECT_EQ(sl_test::tasks_in("chan receive"), static_cast<std::size_t>(spawners * parked_each));
        gate.close();
        EXPECT_TRUE(co_await sl_test::until([&] { return sl::num_tasks() == before; }));
        EXPECT_EQ(sl::list_tasks().size(), before);
      },
      sl::runtime_options{.workers = 4});
}
