// fan: fan_in (every value once, per-input order, closes when all inputs close
// or ctx ends, no forwarder left behind), fan_out (N workers on one channel,
// the first failure stops them and is rethrown) and for_each (the limit, stop
// at the first exception, parent cancellation, owning ranges and views) — plus
// stress tests with random yields and cancellation storms.
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/fan.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <memory>
#include <random>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

using sl_test::tasks_in;
using sl_test::until_parked;

// Sends first, first+1, ..., first+n-1 on ch, then closes it.
sl::task<void> produce(sl::chan<int> ch, int first, int n) {
  for (int i = 0; i < n; ++i) co_await ch.send(first + i);
  ch.close();
}

// Yields until only `n` tasks are alive (the calling one included); false after 10 s.
sl::task<bool> until_tasks(std::size_t n) {
  const auto give_up = sl::clock::now() + 10s;
  while (sl::clock::now() < give_up) {
    if (sl::num_tasks() <= n) co_return true;
    co_await sl::yield();
  }
  co_return false;
}

void raise_max(std::atomic<int>& peak, int now) {
  int seen = peak.load();
  while (now > seen && !peak.compare_exchange_weak(seen, now)) {
  }
}

}  // namespace

// ---- fan_in ---------------------------------------------------------------------

TEST(FanIn, DeliversEveryValueOfEveryInputOnce) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::vector<sl::chan<int>> inputs;
    for (int i = 0; i < 3; ++i) inputs.emplace_back(i);  // capacities 0, 1, 2
    for (int i = 0; i < 3; ++i) sl::go(produce, inputs[static_cast<std::size_t>(i)], i * 100, 50);
    auto out = sl::fan_in(sl::context::background(), inputs, 4);
    std::vector<int> got;
    while (auto v = co_await out.recv()) got.push_back(*v);
    std::sort(got.begin(), got.end());
    std::vector<int> want;
    for (int i = 0; i < 3; ++i) {
      for (int k = 0; k < 50; ++k) want.push_back(i * 100 + k);
    }
    EXPECT_EQ(got, want);
  });
}

TEST(FanIn, KeepsTheOrderOfEachInput) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::vector<sl::chan<int>> inputs{sl::chan<int>(0), sl::chan<int>(3)};
    sl::go(produce, inputs[0], 0, 100);
    sl::go(produce, inputs[1], 1000, 100);
    auto out = sl::fan_in(sl::context::background(), inputs, 0);
    int last_a = -1;
    int last_b = 999;
    bool ordered = true;
    while (auto v = co_await out.recv()) {
      int& last = *v < 1000 ? last_a : last_b;
      ordered = ordered && *v == last + 1;
      last = *v;
    }
    EXPECT_TRUE(ordered);
    EXPECT_EQ(last_a, 99);
    EXPECT_EQ(last_b, 1099);
  });
}

TEST(FanIn, ClosesOutputWhenAllInputsClose) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::vector<sl::chan<int>> inputs{sl::chan<int>(1), sl::chan<int>(1), sl::chan<int>(1)};
    auto out = sl::fan_in(sl::context::background(), inputs, 8);
    inputs[0].close();
    inputs[1].close();
    // Two forwarders have ended; the third still waits on its open input.
    EXPECT_TRUE(co_await until_tasks(2));
    EXPECT_FALSE(out.closed());
    co_await inputs[2].send(5);
    EXPECT_EQ(co_await out.recv(), 5);
    inputs[2].close();
    EXPECT_EQ(co_await out.recv(), std::nullopt);
    EXPECT_TRUE(out.closed());
  });
}

TEST(FanIn, NoInputsGivesAClosedOutput) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto out = sl::fan_in(sl::context::background(), std::vector<sl::chan<int>>{}, 2);
    EXPECT_TRUE(out.closed());
    EXPECT_EQ(out.capacity(), 2U);
    EXPECT_EQ(co_await out.recv(), std::nullopt);
  });
}

TEST(FanIn, ContextCancelEndsForwardersWithoutLeak) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    std::vector<sl::chan<int>> inputs{sl::chan<int>(0), sl::chan<int>(0), sl::chan<int>(0)};
    auto out = sl::fan_in(ctx, inputs, 1);
    EXPECT_TRUE(co_await until_parked("select", 3));  // every forwarder waits on its input
    cancel();
    EXPECT_EQ(co_await out.recv(), std::nullopt);  // closed, although no input was
    EXPECT_FALSE(inputs[0].closed());
    // run_checked verifies that the three forwarders have ended.
  });
}

TEST(FanIn, ContextCancelEndsAForwarderBlockedOnTheOutput) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    std::vector<sl::chan<int>> inputs{sl::chan<int>(4)};
    for (int i = 1; i <= 4; ++i) EXPECT_TRUE(inputs[0].try_send(i));
    auto out = sl::fan_in(ctx, inputs, 1);
    // One value fills the output; the forwarder holds the next one, unsent.
    EXPECT_TRUE(co_await until_parked("select", 1));
    EXPECT_EQ(out.size(), 1U);
    cancel();
    EXPECT_EQ(co_await out.recv(), 1);  // buffered before the cancel: still delivered
    EXPECT_EQ(co_await out.recv(), std::nullopt);
    EXPECT_EQ(inputs[0].size(), 2U);  // 2 was dropped in flight; 3 and 4 stay in the input
  });
}

TEST(FanIn, DoneContextClosesTheOutputPromptly) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    cancel();
    std::vector<sl::chan<int>> inputs{sl::chan<int>(4)};
    EXPECT_TRUE(inputs[0].try_send(1));
    auto out = sl::fan_in(ctx, inputs, 4);
    EXPECT_EQ(co_await out.recv(), std::nullopt);  // forwards nothing once ctx is done
    EXPECT_EQ(inputs[0].size(), 1U);
  });
}

TEST(FanIn, RejectsAnOutputCapacityOverTheChannelMaximum) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::vector<sl::chan<int>> inputs{sl::chan<int>(0)};
    bool threw = false;
    try {
      sl::fan_in(sl::context::background(), inputs, std::size_t{1} << 31);
    } catch (const std::invalid_argument& e) {
      threw = std::string(e.what()).find("out_capacity") != std::string::npos;
    }
    EXPECT_TRUE(threw);
    EXPECT_EQ(sl::num_tasks(), 1U);  // nothing was started
    co_return;
  });
}

// ---- fan_out --------------------------------------------------------------------

TEST(FanOut, EveryValueIsHandledOnce) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> jobs(8);
    std::vector<std::atomic<int>> seen(200);
    auto handle = [&seen](sl::context, int v) -> sl::task<void> {
      seen[static_cast<std::size_t>(v)].fetch_add(1);
      co_await sl::yield();
    };
    auto workers = sl::fan_out(sl::context::background(), jobs, 4, handle);
    sl::go(produce, jobs, 0, 200);
    co_await workers.wait();
    int wrong = 0;
    for (auto& s : seen) wrong += s.load() == 1 ? 0 : 1;
    EXPECT_EQ(wrong, 0);
  });
}

TEST(FanOut, RunsAtMostWorkersHandlersAtOnce) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> jobs(16);
    for (int i = 0; i < 10; ++i) EXPECT_TRUE(jobs.try_send(i));
    jobs.close();
    sl::chan<int> gate;
    std::atomic<int> inside{0};
    std::atomic<int> peak{0};
    auto handle = [&](sl::context, int) -> sl::task<void> {
      raise_max(peak, inside.fetch_add(1) + 1);
      co_await gate.recv();
      inside.fetch_sub(1);
    };
    auto workers = sl::fan_out(sl::context::background(), jobs, 3, handle);
    EXPECT_TRUE(co_await until_parked("chan receive", 3));
    EXPECT_EQ(inside.load(), 3);
    gate.close();
    co_await workers.wait();
    EXPECT_EQ(peak.load(), 3);
  });
}

TEST(FanOut, FirstExceptionStopsTheWorkersAndIsRethrown) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> jobs(64);
    for (int i = 0; i < 64; ++i) EXPECT_TRUE(jobs.try_send(i));
    std::atomic<int> handled{0};
    auto handle = [&](sl::context ctx, int v) -> sl::task<void> {
      if (v == 2) throw std::runtime_error("job 2 failed");
      if (v < 2) co_await ctx.done();  // holds two workers until the failure
      handled.fetch_add(1);
    };
    auto workers = sl::fan_out(sl::context::background(), jobs, 3, handle);
    std::string what;
    try {
      co_await workers.wait();
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    EXPECT_EQ(what, "job 2 failed");
    EXPECT_EQ(workers.ctx().err(), sl::errc::canceled);
    EXPECT_EQ(handled.load(), 2);  // jobs 0 and 1, released by the cancel
    EXPECT_EQ(jobs.size(), 61U);   // nothing else was taken
  });
}

TEST(FanOut, ParentCancellationStopsIdleWorkers) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    sl::chan<int> jobs;
    auto handle = [](sl::context, int) -> sl::task<void> { co_return; };
    auto workers = sl::fan_out(ctx, jobs, 2, handle);
    EXPECT_TRUE(co_await until_parked("select", 2));
    cancel();
    co_await workers.wait();
    EXPECT_FALSE(jobs.closed());
  });
}

TEST(FanOut, RejectsFewerThanOneWorker) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> jobs;
    auto handle = [](sl::context, int) -> sl::task<void> { co_return; };
    bool threw = false;
    try {
      sl::fan_out(sl::context::background(), jobs, 0, handle);
    } catch (const std::invalid_argument& e) {
      threw = std::string(e.what()).find("workers") != std::string::npos;
    }
    EXPECT_TRUE(threw);
    co_return;
  });
}

// ---- for_each -------------------------------------------------------------------

TEST(ForEach, RunsFnForEveryItem) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::vector<int> items(100);
    for (int i = 0; i < 100; ++i) items[static_cast<std::size_t>(i)] = i;
    std::atomic<int> sum{0};
    auto add = [&sum](sl::context, int v) -> sl::task<void> {
      sum.fetch_add(v);
      co_return;
    };
    const std::error_code ec = co_await sl::for_each(sl::context::background(), items, 8, add);
    EXPECT_FALSE(ec);
    EXPECT_EQ(sum.load(), 4950);
  });
}

TEST(ForEach, NeverExceedsLimit) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        std::atomic<int> inside{0};
        std::atomic<int> peak{0};
        auto work = [&](sl::context, int v) -> sl::task<void> {
          raise_max(peak, inside.fetch_add(1) + 1);
          for (int y = 0; y < v % 4; ++y) co_await sl::yield();
          inside.fetch_sub(1);
        };
        std::vector<int> items(200);
        for (int i = 0; i < 200; ++i) items[static_cast<std::size_t>(i)] = i;
        const std::error_code ec =
            co_await sl::for_each(sl::context::background(), std::move(items), 3, work);
        EXPECT_FALSE(ec);
        EXPECT_LE(peak.load(), 3);
        EXPECT_GE(peak.load(), 1);
      },
      sl::runtime_options{.workers = 4});
}

TEST(ForEach, StopsAtFirstErrorAndRethrows) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::vector<int> started;
    auto work = [&started](sl::context, int v) -> sl::task<void> {
      started.push_back(v);  // limit 1: one at a time, no race
      if (v == 3) throw std::runtime_error("item 3");
      co_return;
    };
    // Named: g++ 12 rejects an initializer list inside a co_await expression.
    std::vector<int> items{0, 1, 2, 3, 4, 5, 6};
    std::string what;
    try {
      co_await sl::for_each(sl::context::background(), std::move(items), 1, work);
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    EXPECT_EQ(what, "item 3");
    EXPECT_EQ(started, (std::vector<int>{0, 1, 2, 3}));
  });
}

TEST(ForEach, FirstErrorCancelsTheRunningOnesAndWaitsForThem) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::atomic<int> stopped{0};
    auto work = [&stopped](sl::context ctx, int v) -> sl::task<void> {
      if (v == 2) {
        co_await sl::yield();
        throw std::runtime_error("item 2");
      }
      co_await ctx.done();  // only the failure ends this
      co_await sl::yield();
      stopped.fetch_add(1);
    };
    std::vector<int> items{0, 1, 2, 3, 4};
    bool threw = false;
    try {
      co_await sl::for_each(sl::context::background(), std::move(items), 3, work);
    } catch (const std::runtime_error&) {
      threw = true;
    }
    EXPECT_TRUE(threw);
    EXPECT_EQ(stopped.load(), 2);  // 0 and 1 finished before for_each returned; 3, 4 never ran
  });
}

TEST(ForEach, ParentCancellationSkipsTheRestAndReturnsItsError) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto parent = sl::with_cancel(sl::context::background());
    std::vector<int> started;
    auto work = [&started, &parent](sl::context, int v) -> sl::task<void> {
      started.push_back(v);
      if (v == 2) parent.cancel();
      co_return;
    };
    std::vector<int> items{0, 1, 2, 3, 4};
    const std::error_code ec = co_await sl::for_each(parent.ctx, std::move(items), 1, work);
    EXPECT_EQ(ec, sl::errc::canceled);
    EXPECT_EQ(started, (std::vector<int>{0, 1, 2}));
  });
}

TEST(ForEach, EmptyRangeReturnsAtOnce) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto work = [](sl::context, int) -> sl::task<void> { co_return; };
    EXPECT_FALSE(co_await sl::for_each(sl::context::background(), std::vector<int>{}, 2, work));
  });
}

TEST(ForEach, MovesTheElementsOfAnOwningRange) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::vector<std::unique_ptr<int>> items;
    for (int i = 1; i <= 4; ++i) items.push_back(std::make_unique<int>(i));
    std::atomic<int> sum{0};
    auto work = [&sum](sl::context, std::unique_ptr<int> p) -> sl::task<void> {
      sum.fetch_add(*p);
      co_return;
    };
    EXPECT_FALSE(co_await sl::for_each(sl::context::background(), std::move(items), 2, work));
    EXPECT_EQ(sum.load(), 10);
  });
}

TEST(ForEach, CopiesTheElementsOfAView) {
  sl_test::run_checked([]() -> sl::task<void> {
    const std::vector<std::string> names{"a", "bb", "ccc"};
    std::atomic<std::size_t> total{0};
    auto work = [&total](sl::context, std::string s) -> sl::task<void> {
      total.fetch_add(s.size());
      co_return;
    };
    const std::span<const std::string> view(names);
    EXPECT_FALSE(co_await sl::for_each(sl::context::background(), view, 2, work));
    EXPECT_EQ(total.load(), 6U);
    EXPECT_EQ(names[2], "ccc");  // the caller's elements were not moved from
  });
}

// An item whose copy throws for one value.
struct fragile {
  int v;
  explicit fragile(int x) : v(x) {}
  fragile(const fragile& o) : v(o.v) {
    if (v == 2) throw std::runtime_error("cannot copy item 2");
  }
};

TEST(ForEach, FailureToStartAnItemStopsTheRunningOnesAndIsRethrown) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::vector<fragile> items;
    for (int i = 0; i < 4; ++i) items.emplace_back(i);
    std::atomic<int> started{0};
    std::atomic<int> stopped{0};
    auto work = [&started, &stopped](sl::context ctx, fragile) -> sl::task<void> {
      started.fetch_add(1);
      co_await ctx.done();  // only for_each giving up ends this
      stopped.fetch_add(1);
    };
    std::string what;
    try {
      co_await sl::for_each(sl::context::background(), std::span<const fragile>(items), 4, work);
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    EXPECT_EQ(what, "cannot copy item 2");
    // Items 0 and 1 were started; whichever got to run fn was cancelled and
    // waited for (the others found the context done and skipped fn).
    EXPECT_LE(started.load(), 2);
    EXPECT_EQ(stopped.load(), started.load());
  });
}

TEST(ForEach, RejectsALimitBelowOneAtTheCall) {
  auto work = [](sl::context, int) -> sl::task<void> { co_return; };
  // Thrown by the call itself, before any task or runtime is involved.
  EXPECT_THROW((void)sl::for_each(sl::context::background(), std::vector<int>{1}, 0, work),
               std::invalid_argument);
  EXPECT_THROW((void)sl::for_each(sl::context::background(), std::vector<int>{1}, -3, work),
               std::invalid_argument);
}

// ---- stress ---------------------------------------------------------------------

// Many producers with random yields feed fan_in on four workers while the
// consumer also yields at random. Hunts: a value lost or duplicated between
// a forwarder's receive and send, the output closed before the last
// forwarder's final send (channel_closed in a forwarder, a lost value).
TEST(FanInStress, ManyProducersLoseAndDuplicateNothing) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        constexpr int inputs_n = 16;
        constexpr int per_input = 200;
        std::vector<sl::chan<int>> inputs;
        for (int i = 0; i < inputs_n; ++i) inputs.emplace_back(i % 3);
        auto producer = [](sl::chan<int> ch, int base, unsigned seed) -> sl::task<void> {
          std::minstd_rand rng(seed);
          for (int k = 0; k < per_input; ++k) {
            co_await ch.send(base + k);
            if (rng() % 3 == 0) co_await sl::yield();
          }
          ch.close();
        };
        for (int i = 0; i < inputs_n; ++i) {
          sl::go(producer, inputs[static_cast<std::size_t>(i)], i * per_input,
                 static_cast<unsigned>(i) + 1U);
        }
        auto out = sl::fan_in(sl::context::background(), inputs, 3);
        std::vector<int> count(inputs_n * per_input);
        std::minstd_rand rng(99);
        while (auto v = co_await out.recv()) {
          ++count[static_cast<std::size_t>(*v)];
          if (rng() % 5 == 0) co_await sl::yield();
        }
        int wrong = 0;
        for (int c : count) wrong += c == 1 ? 0 : 1;
        EXPECT_EQ(wrong, 0);
      },
      sl::runtime_options{.workers = 4});
}

// Rounds of fan_in whose context is cancelled at a random moment by a storm
// task, while producers (selecting on the same context) send and a consumer
// drains. Hunts: the output never closed (a forwarder that missed the cancel,
// a count that is off), a value delivered twice, a forwarder or producer left
// parked (leak check).
TEST(FanInStress, CancellationStormAlwaysClosesAndNeverDuplicates) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        constexpr int rounds = 40;
        constexpr int inputs_n = 6;
        constexpr int per_input = 40;
        std::minstd_rand rng(7);
        int delivered_total = 0;
        for (int round = 0; round < rounds; ++round) {
          auto [ctx, cancel] = sl::with_cancel(sl::context::background());
          std::vector<sl::chan<int>> inputs;
          for (int i = 0; i < inputs_n; ++i) inputs.emplace_back(static_cast<int>(rng() % 3));
          sl::wait_group producers;
          producers.add(inputs_n);
          auto producer = [](sl::context c, sl::chan<int> ch, int base, unsigned seed,
                             sl::wait_group* wg) -> sl::task<void> {
            std::minstd_rand r(seed);
            for (int k = 0; k < per_input; ++k) {
              auto s = co_await sl::select(sl::send(ch, base + k), sl::done(c));
              if (s.index() == 1) break;
              if (r() % 3 == 0) co_await sl::yield();
            }
            ch.close();
            wg->done();
          };
          for (int i = 0; i < inputs_n; ++i) {
            sl::go(producer, ctx, inputs[static_cast<std::size_t>(i)], i * per_input,
                   static_cast<unsigned>(rng()), &producers);
          }
          sl::go(
              [](sl::cancel_func c, int n) -> sl::task<void> {
                for (int y = 0; y < n; ++y) co_await sl::yield();
                c();
              },
              cancel, static_cast<int>(rng() % 40));
          auto out = sl::fan_in(ctx, inputs, static_cast<std::size_t>(rng() % 4));
          std::set<int> seen;
          int dups = 0;
          while (auto v = co_await out.recv()) {
            if (!seen.insert(*v).second) ++dups;
            if (rng() % 4 == 0) co_await sl::yield();
          }
          EXPECT_EQ(dups, 0);
          EXPECT_TRUE(seen.empty() || *seen.rbegin() < inputs_n * per_input);
          delivered_total += static_cast<int>(seen.size());
          co_await producers.wait();
          cancel();
        }
        EXPECT_GT(delivered_total, 0);
      },
      sl::runtime_options{.workers = 4});
}

// for_each over many items with random yields, where some items throw and
// some rounds have their parent cancelled by a storm task. Hunts: more than
// `limit` running at once, fn started after the failure was recorded and the
// running ones were waited for, for_each returning while one of its tasks
// still runs, a lost exception.
TEST(ForEachStress, LimitAndStopHoldUnderFailuresAndCancellation) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        constexpr int rounds = 60;
        std::minstd_rand rng(11);
        std::vector<int> items(50);  // viewed through a std::span: copied, not moved
        for (int i = 0; i < 50; ++i) items[static_cast<std::size_t>(i)] = i;
        for (int round = 0; round < rounds; ++round) {
          const int limit = 1 + static_cast<int>(rng() % 4);
          const int failing = static_cast<int>(rng() % 80);  // >= 50: nothing fails
          auto [ctx, cancel] = sl::with_cancel(sl::context::background());
          if (rng() % 3 == 0) {
            sl::go(
                [](sl::cancel_func c, int n) -> sl::task<void> {
                  for (int y = 0; y < n; ++y) co_await sl::yield();
                  c();
                },
                cancel, static_cast<int>(rng() % 30));
          }
          std::atomic<int> inside{0};
          std::atomic<int> peak{0};
          std::atomic<int> running_after_return{0};
          auto work = [&inside, &peak, failing](sl::context, int v) -> sl::task<void> {
            raise_max(peak, inside.fetch_add(1) + 1);
            for (int y = 0; y < v % 3; ++y) co_await sl::yield();
            inside.fetch_sub(1);
            if (v == failing) throw std::runtime_error("fail");
          };
          bool threw = false;
          std::error_code ec;
          try {
            ec = co_await sl::for_each(ctx, std::span<const int>(items), limit, work);
          } catch (const std::runtime_error&) {
            threw = true;
          }
          running_after_return.store(inside.load());
          EXPECT_EQ(running_after_return.load(), 0);
          EXPECT_LE(peak.load(), limit);
          if (threw) {
            EXPECT_LT(failing, 50);
          } else if (ec) {
            EXPECT_EQ(ec, sl::errc::canceled);
          } else if (failing < 50) {
            // Not thrown and not cut short: the failing item must have run and thrown,
            // unless the parent was cancelled first (then ec would be set).
            ADD_FAILURE() << "the exception of item " << failing << " was lost";
          }
          cancel();
        }
      },
      sl::runtime_options{.workers = 4});
}
