// errgroup: x/sync's errgroup — wait for all, rethrow the first exception,
// cancel the group's context on the first failure and at wait(), the limit
// (go suspends, try_go refuses), set_limit's rules, decay-copied arguments —
// and a stress test for the slot accounting.
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/errgroup.hpp>
#include <sluice/clock.hpp>
#include <sluice/introspection.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/time.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

using sl_test::tasks_in;
using sl_test::until_parked;

sl::task<void> recv_once(sl::chan<int> c) { co_await c.recv(); }

}  // namespace

TEST(Errgroup, WaitReturnsOnceEveryTaskHasFinished) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::errgroup g;
    std::atomic<int> finished{0};
    for (int i = 0; i < 10; ++i) {
      auto f = [](int n, std::atomic<int>* done) -> sl::task<void> {
        for (int k = 0; k < n; ++k) co_await sl::yield();
        done->fetch_add(1);
      };
      co_await g.go(f, i, &finished);
    }
    co_await g.wait();
    EXPECT_EQ(finished.load(), 10);
  });
}

TEST(Errgroup, WaitWithoutTasksReturnsAtOnce) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::errgroup g;
    co_await g.wait();
    co_await g.wait();
  });
}

TEST(Errgroup, WaitRethrowsTheFirstException) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [g, ctx] = sl::errgroup::with_context(sl::context::background());
    // The second task throws only after the first failure cancelled the context.
    auto first = []() -> sl::task<void> {
      throw std::runtime_error("first");
      co_return;
    };
    auto second = [](sl::context c) -> sl::task<void> {
      co_await c.done();
      throw std::runtime_error("second");
    };
    co_await g.go(second, ctx);
    co_await g.go(first);
    std::string what;
    try {
      co_await g.wait();
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    EXPECT_EQ(what, "first");
    std::string again;
    try {
      co_await g.wait();  // Go: Wait keeps returning the first error
    } catch (const std::runtime_error& e) {
      again = e.what();
    }
    EXPECT_EQ(again, "first");
  });
}

TEST(Errgroup, FirstExceptionCancelsTheGroupContext) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [g, ctx] = sl::errgroup::with_context(sl::context::background());
    std::atomic<int> stopped{0};
    for (int i = 0; i < 4; ++i) {
      auto sibling = [](sl::context c, std::atomic<int>* n) -> sl::task<void> {
        co_await c.done();  // only the failure below ends this wait
        n->fetch_add(1);
      };
      co_await g.go(sibling, ctx, &stopped);
    }
    EXPECT_FALSE(ctx.err());
    auto failing = []() -> sl::task<void> {
      co_await sl::yield();
      throw std::runtime_error("boom");
    };
    co_await g.go(failing);
    bool threw = false;
    try {
      co_await g.wait();
    } catch (const std::runtime_error&) {
      threw = true;
    }
    EXPECT_TRUE(threw);
    EXPECT_EQ(ctx.err(), sl::errc::canceled);
    EXPECT_EQ(stopped.load(), 4);
  });
}

TEST(Errgroup, WaitCancelsTheContextEvenWithoutFailures) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [g, ctx] = sl::errgroup::with_context(sl::context::background());
    auto ok = []() -> sl::task<void> { co_return; };
    co_await g.go(ok);
    co_await g.wait();
    EXPECT_EQ(ctx.err(), sl::errc::canceled);  // Go: Wait cancels it to release it
  });
}

TEST(Errgroup, ParentCancellationReachesTheGroupContext) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [parent, cancel] = sl::with_cancel(sl::context::background());
    auto [g, ctx] = sl::errgroup::with_context(parent);
    auto waits = [](sl::context c) -> sl::task<void> { co_await c.done(); };
    co_await g.go(waits, ctx);
    cancel();
    co_await g.wait();
    EXPECT_EQ(ctx.err(), sl::errc::canceled);
  });
}

TEST(Errgroup, GoSuspendsWhileTheLimitIsReached) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::errgroup g;
    g.set_limit(2);
    sl::chan<int> gate;
    std::atomic<int> started{0};
    auto blocked = [](sl::chan<int> c, std::atomic<int>* n) -> sl::task<void> {
      n->fetch_add(1);
      co_await c.recv();
    };
    co_await g.go(blocked, gate, &started);
    co_await g.go(blocked, gate, &started);
    // A third go() must wait for a slot: run it from another task.
    auto third = sl::spawn(
        [](sl::errgroup* grp, sl::chan<int> c, std::atomic<int>* n) -> sl::task<void> {
          auto f = [](sl::chan<int> ch, std::atomic<int>* count) -> sl::task<void> {
            count->fetch_add(1);
            co_await ch.recv();
          };
          co_await grp->go(f, c, n);
        },
        &g, gate, &started);
    const bool parked = co_await until_parked("errgroup", 1);
    EXPECT_TRUE(parked);
    EXPECT_FALSE(third.done());
    const bool running = co_await until_parked("chan receive", 2);
    EXPECT_TRUE(running);
    EXPECT_EQ(started.load(), 2);
    gate.close();  // slots free up; the third starts and finishes too
    co_await third.join();
    co_await g.wait();
    EXPECT_EQ(started.load(), 3);
  });
}

TEST(Errgroup, TryGoRespectsTheLimit) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::errgroup g;
    g.set_limit(1);
    sl::chan<int> gate;
    EXPECT_TRUE(g.try_go(recv_once, gate));
    auto quick = []() -> sl::task<void> { co_return; };
    EXPECT_FALSE(g.try_go(quick));
    gate.close();
    co_await g.wait();
    EXPECT_TRUE(g.try_go(quick));  // the slot is free again
    co_await g.wait();
  });
}

TEST(Errgroup, NegativeLimitMeansNoLimit) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::errgroup g;
    g.set_limit(1);
    g.set_limit(-1);
    sl::chan<int> gate;
    for (int i = 0; i < 50; ++i) EXPECT_TRUE(g.try_go(recv_once, gate));
    gate.close();
    co_await g.wait();
  });
}

TEST(Errgroup, SetLimitRules) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::errgroup g;
    EXPECT_THROW(g.set_limit(0), std::invalid_argument);
    sl::chan<int> gate;
    EXPECT_TRUE(g.try_go(recv_once, gate));
    EXPECT_THROW(g.set_limit(4), std::logic_error);  // Go panics: tasks are active
    gate.close();
    co_await g.wait();
    g.set_limit(4);  // fine once the group is idle
  });
}

TEST(Errgroup, GoDecayCopiesTheCallableAndItsArguments) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::errgroup g;
    auto seen = std::make_shared<std::string>();
    sl::chan<int> gate;
    {
      std::string text = "copied";
      auto keep = std::make_shared<int>(7);
      // The lambda and `text` go out of scope before the task runs its body.
      auto f = [keep](std::string s, std::shared_ptr<std::string> out,
                      sl::chan<int> c) -> sl::task<void> {
        co_await c.recv();
        *out = s + std::to_string(*keep);
      };
      co_await g.go(f, text, seen, gate);
      text = "changed";
    }
    gate.close();
    co_await g.wait();
    EXPECT_EQ(*seen, "copied7");
  });
}

TEST(Errgroup, IsMovableWithItsTasks) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::errgroup a;
    sl::chan<int> gate;
    EXPECT_TRUE(a.try_go(recv_once, gate));
    sl::errgroup b = std::move(a);
    gate.close();
    co_await b.wait();
  });
}

TEST(Errgroup, DroppedGroupLetsItsTasksFinish) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> gate;
    {
      sl::errgroup g;
      EXPECT_TRUE(g.try_go(recv_once, gate));
    }  // not waited for: the task keeps the group's state alive
    gate.close();  // leak_check (run_checked) sees it finish
    co_return;
  });
}

// The API contract's use (shared/contract/core_test.cpp).
TEST(Errgroup, ContractFirstErrorCancelsTheGroupAndIsRethrown) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [g, ctx] = sl::errgroup::with_context(sl::context::background());
    g.set_limit(4);
    for (int i = 0; i < 20; ++i) {
      co_await g.go(  // suspends while 4 are running
          [](int n, sl::context c) -> sl::task<void> {
            if (n == 3) throw std::runtime_error("boom");
            co_await sl::select(sl::done(c), sl::after(10s));
          },
          i, ctx);
    }
    bool threw = false;
    try {
      co_await g.wait();
    } catch (const std::runtime_error& e) {
      threw = std::string(e.what()) == "boom";
    }
    EXPECT_TRUE(threw);
    EXPECT_EQ(ctx.err(), sl::errc::canceled);
  });
}

TEST(ErrgroupStress, LimitIsNeverExceededAndEveryTaskIsCounted) {
  // Hunts: a slot handed to a go() caller and also freed (over the limit), a
  // slot lost (go() or wait() hangs), wait() returning before the last task.
  sl_test::run_checked([]() -> sl::task<void> {
    for (int round = 0; round < 10; ++round) {
      constexpr int limit = 3;
      constexpr int tasks = 100;
      sl::errgroup g;
      g.set_limit(limit);
      std::atomic<int> running{0};
      std::atomic<int> over{0};
      std::atomic<int> finished{0};
      // Several producers call go()/try_go() at once.
      sl::errgroup producers;
      for (int p = 0; p < 4; ++p) {
        auto produce = [](int id, sl::errgroup* grp, std::atomic<int>* run,
                          std::atomic<int>* bad, std::atomic<int>* fin) -> sl::task<void> {
          std::minstd_rand rng(static_cast<std::uint32_t>(id * 7919 + 1));
          for (int i = 0; i < tasks / 4; ++i) {
            auto body = [](int yields, bool fail, std::atomic<int>* r, std::atomic<int>* b,
                           std::atomic<int>* f) -> sl::task<void> {
              if (r->fetch_add(1) >= limit) b->fetch_add(1);
              for (int k = 0; k < yields; ++k) co_await sl::yield();
              r->fetch_sub(1);
              f->fetch_add(1);
              if (fail) throw std::runtime_error("task failed");
            };
            const int yields = static_cast<int>(rng() % 4);
            const bool fail = rng() % 10 == 0;
            if (!(rng() % 3 == 0 && grp->try_go(body, yields, fail, run, bad, fin))) {
              co_await grp->go(body, yields, fail, run, bad, fin);
            }
          }
        };
        co_await producers.go(produce, round * 10 + p, &g, &running, &over, &finished);
      }
      co_await producers.wait();
      try {
        co_await g.wait();
      } catch (const std::runtime_error&) {
      }
      EXPECT_EQ(over.load(), 0);
      EXPECT_EQ(finished.load(), tasks);
      EXPECT_EQ(running.load(), 0);
    }
  });
}
