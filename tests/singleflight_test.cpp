// singleflight: x/sync's singleflight — one execution per key in flight, its
// value (or exception) for every waiter, `shared`, forget(), a finished key
// running again, and the context variant (a waiter leaves, the execution
// stays) — plus stress tests for overlap and for cancellation storms.
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/runtime.hpp>
#include <sluice/singleflight.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

using sl_test::tasks_in;
using sl_test::until_parked;
using group_t = sl::singleflight<std::string, int>;
using result_t = sl::singleflight_result<int>;
using wait_result_t = sl::singleflight_wait_result<int>;

// An exception that names its key by its type alone. The stress test below
// rethrows one exception object to waiters on several threads at once; a
// waiter reading the object's contents while another waiter's catch frees it
// is correct (libstdc++ counts the references atomically), but ThreadSanitizer
// cannot see that uninstrumented count and would report a race. Types are told
// apart without touching the object.
template <int K>
struct key_failure {};

[[noreturn]] void throw_key_failure(int k) {
  if (k == 0) throw key_failure<0>();
  if (k == 1) throw key_failure<1>();
  throw key_failure<2>();
}

}  // namespace

TEST(Singleflight, ConcurrentCallersShareOneExecution) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    sl::chan<int> gate;
    std::atomic<int> calls{0};
    auto fn = [&]() -> sl::task<int> {
      calls.fetch_add(1);
      co_await gate.recv();
      co_return 42;
    };
    auto caller = [&]() -> sl::task<result_t> { co_return co_await group.run("k", fn); };
    std::vector<sl::join_handle<result_t>> callers;
    for (int i = 0; i < 5; ++i) callers.push_back(sl::spawn(caller));
    // The leader waits on the gate, the four others on the leader's result.
    EXPECT_TRUE(co_await until_parked("chan receive", 5));
    EXPECT_EQ(calls.load(), 1);
    gate.close();
    for (auto& h : callers) {
      const result_t r = co_await h.join();
      EXPECT_EQ(r.value, 42);
      EXPECT_TRUE(r.shared);
    }
    EXPECT_EQ(calls.load(), 1);
  });
}

TEST(Singleflight, LoneCallerGetsAnUnsharedValue) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    auto fn = []() -> sl::task<int> { co_return 7; };
    const result_t r = co_await group.run("k", fn);
    EXPECT_EQ(r.value, 7);
    EXPECT_FALSE(r.shared);
  });
}

TEST(Singleflight, ExceptionReachesEveryWaiter) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    sl::chan<int> gate;
    std::atomic<int> calls{0};
    auto fn = [&]() -> sl::task<int> {
      calls.fetch_add(1);
      co_await gate.recv();
      throw std::runtime_error("backend down");
    };
    auto caller = [&]() -> sl::task<result_t> { co_return co_await group.run("k", fn); };
    std::vector<sl::join_handle<result_t>> callers;
    for (int i = 0; i < 4; ++i) callers.push_back(sl::spawn(caller));
    EXPECT_TRUE(co_await until_parked("chan receive", 4));
    gate.close();
    int caught = 0;
    const std::runtime_error* first = nullptr;
    for (auto& h : callers) {
      try {
        co_await h.join();
      } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "backend down");
        if (first == nullptr) first = &e;
        EXPECT_EQ(first, &e);  // one exception object, rethrown to each
        ++caught;
      }
    }
    EXPECT_EQ(caught, 4);
    EXPECT_EQ(calls.load(), 1);
  });
}

TEST(Singleflight, FinishedKeyRunsFnAgain) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    std::atomic<int> calls{0};
    auto fn = [&]() -> sl::task<int> { co_return calls.fetch_add(1) + 1; };
    const result_t a = co_await group.run("k", fn);
    const result_t b = co_await group.run("k", fn);
    EXPECT_EQ(a.value, 1);
    EXPECT_EQ(b.value, 2);  // not a cache: the second call ran fn
    EXPECT_EQ(calls.load(), 2);
  });
}

TEST(Singleflight, DifferentKeysRunIndependently) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    sl::chan<int> gate;
    auto slow = [&]() -> sl::task<int> {
      co_await gate.recv();
      co_return 1;
    };
    auto fast = []() -> sl::task<int> { co_return 2; };
    auto caller = [&]() -> sl::task<result_t> { co_return co_await group.run("a", slow); };
    auto h = sl::spawn(caller);
    EXPECT_TRUE(co_await until_parked("chan receive", 1));
    const result_t b = co_await group.run("b", fast);  // "a" in flight does not hold it up
    EXPECT_EQ(b.value, 2);
    gate.close();
    EXPECT_EQ((co_await h.join()).value, 1);
  });
}

TEST(Singleflight, ForgetMakesTheNextCallStartAnew) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    sl::chan<int> first_gate;
    std::atomic<int> calls{0};
    auto first = [&]() -> sl::task<int> {
      calls.fetch_add(1);
      co_await first_gate.recv();
      co_return 1;
    };
    auto second = [&]() -> sl::task<int> {
      calls.fetch_add(1);
      co_return 2;
    };
    auto caller = [&]() -> sl::task<result_t> { co_return co_await group.run("k", first); };
    auto h = sl::spawn(caller);
    EXPECT_TRUE(co_await until_parked("chan receive", 1));
    group.forget("k");
    const result_t r = co_await group.run("k", second);  // does not join `first`
    EXPECT_EQ(r.value, 2);
    EXPECT_FALSE(r.shared);
    first_gate.close();
    EXPECT_EQ((co_await h.join()).value, 1);  // the forgotten one still completes
    EXPECT_EQ(calls.load(), 2);
  });
}

TEST(Singleflight, ForgottenExecutionDoesNotReleaseItsSuccessor) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    sl::chan<int> gate1;
    sl::chan<int> gate2;
    std::atomic<int> calls{0};
    auto blocked_on = [&](sl::chan<int> gate, int v) -> sl::task<int> {
      calls.fetch_add(1);
      co_await gate.recv();
      co_return v;
    };
    auto fn1 = [&]() { return blocked_on(gate1, 1); };
    auto fn2 = [&]() { return blocked_on(gate2, 2); };
    auto caller = [&](int which) -> sl::task<result_t> {
      if (which == 1) co_return co_await group.run("k", fn1);
      co_return co_await group.run("k", fn2);
    };
    auto h1 = sl::spawn(caller, 1);
    EXPECT_TRUE(co_await until_parked("chan receive", 1));
    group.forget("k");
    auto h2 = sl::spawn(caller, 2);
    EXPECT_TRUE(co_await until_parked("chan receive", 2));
    gate1.close();
    EXPECT_EQ((co_await h1.join()).value, 1);
    // The first execution finished after it was forgotten: it must not have
    // removed the second one, so a new caller still joins the second.
    auto h3 = sl::spawn(caller, 1);
    EXPECT_TRUE(co_await until_parked("chan receive", 2));
    gate2.close();
    const result_t r2 = co_await h2.join();
    const result_t r3 = co_await h3.join();
    EXPECT_EQ(r2.value, 2);
    EXPECT_EQ(r3.value, 2);
    EXPECT_TRUE(r3.shared);
    EXPECT_EQ(calls.load(), 2);
  });
}

TEST(Singleflight, ContextWaiterGetsTheSharedValue) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    sl::chan<int> gate;
    std::atomic<int> calls{0};
    auto fn = [&]() -> sl::task<int> {
      calls.fetch_add(1);
      co_await gate.recv();
      co_return 5;
    };
    auto with_ctx = [&]() -> sl::task<wait_result_t> {
      co_return co_await group.run(sl::context::background(), "k", fn);
    };
    auto plain = [&]() -> sl::task<result_t> { co_return co_await group.run("k", fn); };
    auto h1 = sl::spawn(with_ctx);
    EXPECT_TRUE(co_await until_parked("chan receive", 1));  // the execution, in its own task
    auto h2 = sl::spawn(plain);
    EXPECT_TRUE(co_await until_parked("chan receive", 2));
    gate.close();
    const wait_result_t r1 = co_await h1.join();
    const result_t r2 = co_await h2.join();
    EXPECT_FALSE(r1.err);
    EXPECT_EQ(r1.value.value_or(-1), 5);
    EXPECT_TRUE(r1.shared);
    EXPECT_EQ(r2.value, 5);
    EXPECT_TRUE(r2.shared);
    EXPECT_EQ(calls.load(), 1);
  });
}

TEST(Singleflight, CancelledWaiterLeavesWithoutCancellingTheExecution) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    sl::chan<int> gate;
    std::atomic<int> calls{0};
    auto fn = [&]() -> sl::task<int> {
      calls.fetch_add(1);
      co_await gate.recv();
      co_return 9;
    };
    auto caller = [&](sl::context ctx) -> sl::task<wait_result_t> {
      co_return co_await group.run(ctx, "k", fn);
    };
    auto leaving = sl::with_cancel(sl::context::background());
    auto staying = sl::with_cancel(sl::context::background());
    auto h1 = sl::spawn(caller, leaving.ctx);  // starts the execution
    EXPECT_TRUE(co_await until_parked("chan receive", 1));
    auto h2 = sl::spawn(caller, staying.ctx);
    EXPECT_TRUE(co_await until_parked("select", 2));
    leaving.cancel();
    const wait_result_t r1 = co_await h1.join();
    EXPECT_EQ(r1.err, sl::errc::canceled);
    EXPECT_FALSE(r1.value.has_value());
    EXPECT_EQ(tasks_in("chan receive"), 1U);  // fn is still running
    gate.close();
    const wait_result_t r2 = co_await h2.join();
    EXPECT_FALSE(r2.err);
    EXPECT_EQ(r2.value.value_or(-1), 9);
    EXPECT_EQ(calls.load(), 1);
    staying.cancel();
  });
}

TEST(Singleflight, DeadlineEndsTheWait) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    sl::chan<int> gate;
    auto fn = [&]() -> sl::task<int> {
      co_await gate.recv();
      co_return 1;
    };
    auto [ctx, cancel] = sl::with_timeout(sl::context::background(), 1ms);
    const wait_result_t r = co_await group.run(ctx, "k", fn);
    EXPECT_EQ(r.err, sl::errc::deadline_exceeded);
    gate.close();  // lets the execution finish (run_checked waits for it)
    cancel();
  });
}

TEST(Singleflight, DoneContextReturnsAtOnceWithoutRunningFn) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    std::atomic<int> calls{0};
    auto fn = [&]() -> sl::task<int> {
      calls.fetch_add(1);
      co_return 1;
    };
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    cancel();
    const wait_result_t r = co_await group.run(ctx, "k", fn);
    EXPECT_EQ(r.err, sl::errc::canceled);
    EXPECT_EQ(calls.load(), 0);
  });
}

TEST(Singleflight, ContextVariantRethrowsFnsException) {
  sl_test::run_checked([]() -> sl::task<void> {
    group_t group;
    auto fn = []() -> sl::task<int> {
      throw std::runtime_error("bad");
      co_return 0;
    };
    bool caught = false;
    try {
      co_await group.run(sl::context::background(), "k", fn);
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "bad";
    }
    EXPECT_TRUE(caught);
  });
}

TEST(Singleflight, ExecutionOutlivesTheGroupItsWaitersLeft) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> gate;
    sl::chan<int> finished(1);
    auto fn = [gate, finished]() -> sl::task<int> {
      co_await gate.recv();
      co_await finished.send(1);
      co_return 3;
    };
    {
      group_t group;
      auto live = sl::with_cancel(sl::context::background());
      auto caller = [&]() -> sl::task<wait_result_t> {
        co_return co_await group.run(live.ctx, "k", fn);
      };
      auto h = sl::spawn(caller);
      EXPECT_TRUE(co_await until_parked("chan receive", 1));
      live.cancel();
      EXPECT_EQ((co_await h.join()).err, sl::errc::canceled);
    }  // the group is gone; its execution still runs
    gate.close();
    EXPECT_EQ(co_await finished.recv(), 1);
    // run_checked's leak check waits for the execution's task to end.
  });
}

TEST(Singleflight, WorksWithACustomHashAndNonTrivialValues) {
  sl_test::run_checked([]() -> sl::task<void> {
    struct mod_hash {
      std::size_t operator()(int k) const noexcept { return static_cast<std::size_t>(k % 3); }
    };
    sl::singleflight<int, std::string, mod_hash> group;
    auto fn = []() -> sl::task<std::string> { co_return std::string(100, 'x'); };
    const auto r = co_await group.run(4, fn);
    EXPECT_EQ(r.value.size(), 100U);
  });
}

// ---- stress ---------------------------------------------------------------------

// Many callers on four workers race on a few keys with random yields inside fn
// and between calls. Hunts: two executions of one key overlapping (a caller
// that missed the in-flight entry), a waiter woken before the value is
// published or given another key's value, `shared` false on a value that
// several callers received, a lost wake-up (hang).
TEST(SingleflightStress, RacingCallersNeverOverlapAnExecution) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        constexpr int keys = 4;
        constexpr int tasks = 48;
        constexpr int rounds = 40;
        group_t group;
        std::atomic<int> running[keys] = {};
        std::atomic<int> overlaps{0};
        std::atomic<int> wrong_key{0};
        std::atomic<int> next_exec{1};
        std::mutex mu;
        std::map<int, std::pair<int, int>> receivers;  // exec id -> (receivers, unshared ones)
        sl::wait_group wg;
        auto worker = [&](int id) -> sl::task<void> {
          std::minstd_rand rng(static_cast<unsigned>(id) * 7919U + 1U);
          for (int i = 0; i < rounds; ++i) {
            const int k = static_cast<int>(rng() % keys);
            const int yields = static_cast<int>(rng() % 4);
            auto fn = [&running, &overlaps, &next_exec, k, yields]() -> sl::task<int> {
              if (running[k].fetch_add(1) != 0) overlaps.fetch_add(1);
              for (int y = 0; y < yields; ++y) co_await sl::yield();
              const int exec = next_exec.fetch_add(1);
              running[k].fetch_sub(1);
              co_return k * 1'000'000 + exec;
            };
            const result_t r = co_await group.run(std::to_string(k), fn);
            if (r.value / 1'000'000 != k) wrong_key.fetch_add(1);
            {
              std::lock_guard<std::mutex> g(mu);
              auto& e = receivers[r.value % 1'000'000];
              ++e.first;
              if (!r.shared) ++e.second;
            }
            if (rng() % 2 == 0) co_await sl::yield();
          }
          wg.done();
        };
        wg.add(tasks);
        for (int t = 0; t < tasks; ++t) sl::go(worker, t);
        co_await wg.wait();
        EXPECT_EQ(overlaps.load(), 0);
        EXPECT_EQ(wrong_key.load(), 0);
        int total = 0;
        for (const auto& [exec, counts] : receivers) {
          total += counts.first;
          // An unshared value has exactly one receiver.
          if (counts.second > 0) {
            EXPECT_EQ(counts.first, 1) << "exec " << exec;
          }
        }
        EXPECT_EQ(total, tasks * rounds);
      },
      sl::runtime_options{.workers = 4});
}

// Waiters with contexts cancelled at random moments (by storm tasks and short
// timeouts) race executions that sometimes throw, plus forget() calls. Hunts:
// a waiter that gets neither a result nor its context's error, an error
// reported while the context is live, a value for another key, an exception
// lost on the way to a waiter, an execution that never finishes (leak).
TEST(SingleflightStress, CancellationStormNeverLosesOrMixesResults) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        constexpr int keys = 3;
        constexpr int tasks = 40;
        constexpr int rounds = 30;
        group_t group;
        std::atomic<int> started{0};
        std::atomic<int> finished{0};
        std::atomic<int> values{0};
        std::atomic<int> errors{0};
        std::atomic<int> exceptions{0};
        std::atomic<int> bad{0};
        sl::wait_group wg;
        auto worker = [&](int id) -> sl::task<void> {
          std::minstd_rand rng(static_cast<unsigned>(id) * 104729U + 3U);
          for (int i = 0; i < rounds; ++i) {
            const int k = static_cast<int>(rng() % keys);
            const int yields = static_cast<int>(rng() % 5);
            const bool throws = rng() % 6 == 0;
            auto fn = [&started, &finished, k, yields, throws]() -> sl::task<int> {
              started.fetch_add(1);
              for (int y = 0; y < yields; ++y) co_await sl::yield();
              finished.fetch_add(1);
              if (throws) throw_key_failure(k);
              co_return k;
            };
            auto [ctx, cancel] = rng() % 3 == 0
                                     ? sl::with_timeout(sl::context::background(),
                                                        std::chrono::microseconds(rng() % 200))
                                     : sl::with_cancel(sl::context::background());
            if (rng() % 3 == 0) {
              sl::go(
                  [](sl::cancel_func c, int n) -> sl::task<void> {
                    for (int y = 0; y < n; ++y) co_await sl::yield();
                    c();
                  },
                  cancel, static_cast<int>(rng() % 4));
            }
            if (rng() % 10 == 0) group.forget(std::to_string(k));
            try {
              const wait_result_t r = co_await group.run(ctx, std::to_string(k), fn);
              if (r.err) {
                errors.fetch_add(1);
                if (r.value.has_value() || r.err != ctx.err()) bad.fetch_add(1);
              } else {
                values.fetch_add(1);
                if (!r.value.has_value() || *r.value != k) bad.fetch_add(1);
              }
            } catch (const key_failure<0>&) {
              exceptions.fetch_add(1);
              if (k != 0) bad.fetch_add(1);
            } catch (const key_failure<1>&) {
              exceptions.fetch_add(1);
              if (k != 1) bad.fetch_add(1);
            } catch (const key_failure<2>&) {
              exceptions.fetch_add(1);
              if (k != 2) bad.fetch_add(1);
            }
            cancel();
            if (rng() % 2 == 0) co_await sl::yield();
          }
          wg.done();
        };
        wg.add(tasks);
        for (int t = 0; t < tasks; ++t) sl::go(worker, t);
        co_await wg.wait();
        EXPECT_EQ(bad.load(), 0);
        EXPECT_EQ(values.load() + errors.load() + exceptions.load(), tasks * rounds);
        EXPECT_GT(values.load(), 0);
        // Executions whose waiters all left finish on their own.
        const auto give_up = sl::clock::now() + 10s;
        while (finished.load() != started.load() && sl::clock::now() < give_up) {
          co_await sl::yield();
        }
        EXPECT_EQ(finished.load(), started.load());
      },
      sl::runtime_options{.workers = 4});
}
