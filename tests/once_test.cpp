// once: Go's sync.Once — f runs once, concurrent callers wait for it, an
// exception reaches the caller that ran f and still counts as done — plus a
// stress test with many racing callers.
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/errgroup.hpp>
#include <sluice/clock.hpp>
#include <sluice/introspection.hpp>
#include <sluice/once.hpp>
#include <sluice/runtime.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

using sl_test::tasks_in;
using sl_test::until_parked;

}  // namespace

TEST(Once, RunsTheFunctionOnlyOnce) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::once once;
    int calls = 0;
    EXPECT_FALSE(once.done());
    for (int i = 0; i < 3; ++i) {
      auto f = [&calls]() -> sl::task<void> {
        ++calls;
        co_return;
      };
      co_await once.call(f);
    }
    EXPECT_EQ(calls, 1);
    EXPECT_TRUE(once.done());
  });
}

TEST(Once, ConcurrentCallersWaitUntilTheFirstCallFinishes) {
  sl_test::run_checked([]() -> sl::task<void> {
    constexpr int callers = 8;
    sl::once once;
    sl::chan<int> gate;  // the first call blocks on it
    int value = 0;       // written by f, read by every caller after call()
    std::atomic<int> returned{0};
    std::atomic<int> saw_value{0};
    std::atomic<int> calls{0};
    sl::wait_group wg;
    for (int i = 0; i < callers; ++i) {
      wg.add(1);
      sl::go(
          [](sl::once* o, sl::chan<int> g, int* v, std::atomic<int>* ret, std::atomic<int>* saw,
             std::atomic<int>* n, sl::wait_group* w) -> sl::task<void> {
            auto init = [g, v, n]() -> sl::task<void> {
              n->fetch_add(1);
              co_await g.recv();  // until the gate closes
              *v = 42;
            };
            co_await o->call(init);
            ret->fetch_add(1);
            if (*v == 42) saw->fetch_add(1);
            w->done();
          },
          &once, gate, &value, &returned, &saw_value, &calls, &wg);
    }
    // One caller runs f (parked on the gate); the others park on the once.
    const bool running = co_await until_parked("chan receive", 1);
    const bool waiting = co_await until_parked("once", callers - 1);
    EXPECT_TRUE(running && waiting);
    EXPECT_EQ(returned.load(), 0);
    EXPECT_FALSE(once.done());
    gate.close();
    co_await wg.wait();
    EXPECT_EQ(calls.load(), 1);
    EXPECT_EQ(returned.load(), callers);
    EXPECT_EQ(saw_value.load(), callers);
    EXPECT_TRUE(once.done());
  });
}

TEST(Once, ExceptionReachesTheCallerThatRanItAndCountsAsDone) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::once once;
    int calls = 0;
    bool threw = false;
    try {
      auto f = [&calls]() -> sl::task<void> {
        ++calls;
        throw std::runtime_error("init failed");
        co_return;
      };
      co_await once.call(f);
    } catch (const std::runtime_error& e) {
      threw = std::string(e.what()) == "init failed";
    }
    EXPECT_TRUE(threw);
    EXPECT_TRUE(once.done());
    auto again = [&calls]() -> sl::task<void> {
      ++calls;
      co_return;
    };
    co_await once.call(again);  // Go: a panicking f still counts as done
    EXPECT_EQ(calls, 1);
  });
}

TEST(Once, WaitersReturnNormallyWhenTheFirstCallThrows) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::once once;
    sl::chan<int> gate;
    std::atomic<int> waiters_ok{0};
    sl::wait_group wg;
    wg.add(1);
    auto failing = sl::spawn(
        [](sl::once* o, sl::chan<int> g) -> sl::task<bool> {
          auto f = [g]() -> sl::task<void> {
            co_await g.recv();
            throw std::runtime_error("boom");
          };
          try {
            co_await o->call(f);
          } catch (const std::runtime_error&) {
            co_return true;
          }
          co_return false;
        },
        &once, gate);
    const bool running = co_await until_parked("chan receive", 1);
    EXPECT_TRUE(running);
    sl::go(
        [](sl::once* o, std::atomic<int>* ok, sl::wait_group* w) -> sl::task<void> {
          auto never = []() -> sl::task<void> { co_return; };
          co_await o->call(never);  // waits for the failing call, then returns
          ok->fetch_add(1);
          w->done();
        },
        &once, &waiters_ok, &wg);
    const bool waiting = co_await until_parked("once", 1);
    EXPECT_TRUE(waiting);
    gate.close();
    const bool caller_threw = co_await failing.join();
    EXPECT_TRUE(caller_threw);
    co_await wg.wait();
    EXPECT_EQ(waiters_ok.load(), 1);
  });
}

TEST(Once, CallableIsDecayCopiedIntoTheCall) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::once once;
    auto counter = std::make_shared<int>(0);
    {
      // The callable is gone before the call is awaited: the awaiter's copy runs.
      auto make_call = [&once, &counter]() {
        auto f = [c = counter]() -> sl::task<void> {
          co_await sl::yield();
          ++*c;
        };
        return once.call(f);
      };
      auto call = make_call();
      co_await call;
    }
    EXPECT_EQ(*counter, 1);
    EXPECT_EQ(counter.use_count(), 1);  // every copy was destroyed, once
  });
}

TEST(OnceStress, ManyRacingCallersRunItExactlyOnce) {
  // Hunts: a caller that parks after finish() collected the waiters (hang), a
  // second run of f, a caller that returns before f finished.
  sl_test::run_checked([]() -> sl::task<void> {
    for (int round = 0; round < 50; ++round) {
      constexpr int callers = 16;
      sl::once once;
      std::atomic<int> calls{0};
      std::atomic<bool> finished{false};
      std::atomic<int> early{0};
      // An errgroup, not a wait_group: its state is reference-counted, so this
      // round's locals may go away while the last caller is still signalling.
      sl::errgroup g;
      for (int i = 0; i < callers; ++i) {
        auto caller = [](sl::once* o, std::atomic<int>* n, std::atomic<bool>* fin,
                         std::atomic<int>* bad, int yields) -> sl::task<void> {
          for (int k = 0; k < yields; ++k) co_await sl::yield();
          auto f = [n, fin]() -> sl::task<void> {
            n->fetch_add(1);
            co_await sl::yield();
            fin->store(true);
          };
          co_await o->call(f);
          if (!fin->load()) bad->fetch_add(1);
        };
        EXPECT_TRUE(g.try_go(caller, &once, &calls, &finished, &early, i % 3));
      }
      co_await g.wait();
      EXPECT_EQ(calls.load(), 1);
      EXPECT_EQ(early.load(), 0);
    }
  });
}
