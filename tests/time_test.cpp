// sleep_for/sleep_until and ticker: durations are lower bounds, zero does not
// suspend, tickers tick/stop/reset and drop ticks for a slow reader; stress
// tests for many timers and for timers racing cancellation.
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/time.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

// A task that records that it ran; with one worker it can only run once the
// test's task suspends.
sl::task<void> mark(std::atomic<bool>* ran) {
  ran->store(true);
  co_return;
}

sl::task<void> let_run(const std::atomic<bool>* ran) {
  for (int i = 0; i < 100'000 && !ran->load(); ++i) co_await sl::yield();
}

}  // namespace

// ---- sleep ---------------------------------------------------------------------------

TEST(Sleep, SleepsAtLeastTheRequestedDuration) {
  sl_test::run_checked([]() -> sl::task<void> {
    for (const auto d : {1ms, 3ms, 10ms}) {
      const auto start = sl::clock::now();
      co_await sl::sleep_for(d);
      EXPECT_GE(sl::clock::now() - start, d);
    }
  });
}

TEST(Sleep, SleepUntilWakesNoEarlierThanTheTimePoint) {
  sl_test::run_checked([]() -> sl::task<void> {
    const auto when = sl::clock::now() + 4ms;
    co_await sl::sleep_until(when);
    EXPECT_GE(sl::clock::now(), when);
  });
}

TEST(Sleep, ZeroOrNegativeDurationDoesNotSuspend) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        std::atomic<bool> other_ran{false};
        sl::go(mark, &other_ran);
        co_await sl::sleep_for(0ms);
        co_await sl::sleep_for(-5ms);
        co_await sl::sleep_until(sl::clock::now() - 1s);
        EXPECT_FALSE(other_ran.load());
        co_await let_run(&other_ran);
        EXPECT_TRUE(other_ran.load());
      },
      sl::runtime_options{.workers = 1});
}

TEST(Sleep, PositiveDurationLetsOtherTasksRun) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        std::atomic<bool> other_ran{false};
        sl::go(mark, &other_ran);
        co_await sl::sleep_for(1ms);
        EXPECT_TRUE(other_ran.load());
      },
      sl::runtime_options{.workers = 1});
}

TEST(Sleep, ConcurrentSleepersWakeIndependently) {
  sl_test::run_checked([]() -> sl::task<void> {
    std::atomic<int> early{0};
    sl::wait_group wg;
    wg.add(100);
    for (int i = 0; i < 100; ++i) {
      sl::go([](std::chrono::microseconds d, std::atomic<int>* bad,
                sl::wait_group* w) -> sl::task<void> {
        const auto start = sl::clock::now();
        co_await sl::sleep_for(d);
        if (sl::clock::now() - start < d) bad->fetch_add(1);
        w->done();
      }, std::chrono::microseconds(100 * (i % 20)), &early, &wg);
    }
    co_await wg.wait();
    EXPECT_EQ(early.load(), 0);
  });
}

TEST(Sleep, AwaiterAwaitedTwiceIsRemovedWhenDestroyedInItsSecondSleep) {
  // The first sleep fires; the second is still pending when main returns, so
  // shutdown destroys the frame mid-sleep. Its timer must leave the heap then
  // (under ASan, a node left behind is a use-after-free when the heaps clear).
  static std::atomic<bool> destroyed{false};
  destroyed = false;
  struct sentinel {
    ~sentinel() { destroyed.store(true); }
  };
  sl::run([]() -> sl::task<void> {
    sl::chan<int> first_done(1);
    sl::go([](sl::chan<int> c) -> sl::task<void> {
      sentinel s;
      auto nap = sl::sleep_for(250ms);
      co_await nap;
      co_await c.send(1);
      co_await nap;  // the same awaiter again: 250 ms more, cut short by shutdown
      ADD_FAILURE() << "the second sleep was not cut short by the runtime's shutdown";
    }, first_done);
    EXPECT_EQ(co_await first_done.recv(), 1);
  });
  EXPECT_TRUE(destroyed.load());
}

// ---- ticker --------------------------------------------------------------------------

TEST(Ticker, TicksArriveNoEarlierThanEachPeriod) {
  sl_test::run_checked([]() -> sl::task<void> {
    const auto start = sl::clock::now();
    sl::ticker t(2ms);
    for (int k = 1; k <= 5; ++k) {
      const std::optional<sl::clock::time_point> tick = co_await t.channel().recv();
      EXPECT_TRUE(tick.has_value());
      if (tick) {
        EXPECT_GE(*tick, start + k * 2ms) << "tick " << k;
      }
    }
    EXPECT_GE(sl::clock::now() - start, 10ms);
    t.stop();
  });
}

TEST(Ticker, ChannelHoldsOneTick) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::ticker t(1ms);
    EXPECT_EQ(t.channel().capacity(), 1u);
    EXPECT_FALSE(t.channel().closed());
    t.stop();
    co_return;
  });
}

TEST(Ticker, SlowReaderMissesTicksInsteadOfQueuingThem) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::ticker t(1ms);
    int received = 0;
    for (int i = 0; i < 3; ++i) {
      co_await sl::sleep_for(15ms);  // ~15 periods without reading
      EXPECT_LE(t.channel().size(), 1u);
      const std::optional<sl::clock::time_point> tick = co_await t.channel().recv();
      if (tick) ++received;
    }
    EXPECT_EQ(received, 3);
    t.stop();
  });
}

TEST(Ticker, StopEndsTheTicks) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::ticker t(1ms);
    const std::optional<sl::clock::time_point> first = co_await t.channel().recv();
    EXPECT_TRUE(first.has_value());
    t.stop();
    (void)t.channel().try_recv();  // a tick sent before stop() returned
    co_await sl::sleep_for(10ms);  // ten periods
    EXPECT_EQ(t.channel().try_recv(), std::nullopt);
  });
}

TEST(Ticker, StopIsIdempotent) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::ticker t(1ms);
    t.stop();
    t.stop();
    co_return;
  });  // and the destructor stops once more
}

TEST(Ticker, ResetChangesThePeriod) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::ticker t(1h);
    const auto reset_at = sl::clock::now();
    t.reset(2ms);
    auto r = co_await sl::select(sl::recv(t.channel()), sl::after(10s));
    EXPECT_EQ(r.index(), 0u);
    if (r.index() == 0) {
      const std::optional<sl::clock::time_point> tick = r.get<0>();
      EXPECT_TRUE(tick.has_value());
      if (tick) {
        EXPECT_GE(*tick, reset_at + 2ms);
      }
    }
    t.stop();
  });
}

TEST(Ticker, ResetRestartsAStoppedTicker) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::ticker t(1ms);
    t.stop();
    (void)t.channel().try_recv();
    t.reset(1ms);
    auto r = co_await sl::select(sl::recv(t.channel()), sl::after(10s));
    EXPECT_EQ(r.index(), 0u);
    t.stop();
  });
}

TEST(Ticker, LongestPeriodDoesNotTick) {
  // now + duration::max() must not wrap around into the past.
  sl_test::run_checked([]() -> sl::task<void> {
    sl::ticker t(sl::clock::duration::max());
    auto r = co_await sl::select(sl::recv(t.channel()), sl::after(5ms));
    EXPECT_EQ(r.index(), 1u) << "a ticker with period duration::max() ticked";
    t.stop();
  });
}

TEST(Ticker, NonPositivePeriodIsRejected) {
  sl_test::run_checked([]() -> sl::task<void> {
    EXPECT_THROW(sl::ticker(0ms), std::invalid_argument);
    EXPECT_THROW(sl::ticker(-1ms), std::invalid_argument);
    sl::ticker t(1h);
    EXPECT_THROW(t.reset(0ms), std::invalid_argument);
    t.stop();
    co_return;
  });
}

TEST(Ticker, MustBeCreatedInsideARuntime) {
  EXPECT_THROW(sl::ticker(1ms), std::logic_error);
}

TEST(Ticker, MovedTickerKeepsTicking) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::ticker a(1ms);
    sl::ticker b(std::move(a));
    const std::optional<sl::clock::time_point> t1 = co_await b.channel().recv();
    EXPECT_TRUE(t1.has_value());
    sl::ticker c(1h);
    c = std::move(b);  // stops c's own ticker, takes b's
    const std::optional<sl::clock::time_point> t2 = co_await c.channel().recv();
    EXPECT_TRUE(t2.has_value());
    c.stop();
  });
}

TEST(Ticker, ChannelHandleOutlivesTheTicker) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<sl::clock::time_point> ch;
    {
      sl::ticker t(1ms);
      ch = t.channel();
      const std::optional<sl::clock::time_point> tick = co_await ch.recv();
      EXPECT_TRUE(tick.has_value());
    }
    (void)ch.try_recv();
    co_await sl::sleep_for(5ms);
    EXPECT_EQ(ch.try_recv(), std::nullopt);  // the destroyed ticker sends nothing
  });
}

TEST(Ticker, ResetFromAnotherWorkerTakesEffect) {
  // The ticker's timer lives on the heap of the worker that created it. When
  // reset() runs on the other worker while the home worker is idle, the home
  // worker must still wake for the new, earlier deadline.
  int late = 0;
  int tried = 0;
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        for (int attempt = 0; attempt < 20; ++attempt) {
          sl::ticker t(1h);
          const auto home = std::this_thread::get_id();
          auto h = sl::spawn([](sl::ticker* tk, std::thread::id home_thread) -> sl::task<int> {
            // Get onto the other worker.
            for (int i = 0; i < 10000 && std::this_thread::get_id() == home_thread; ++i) {
              co_await sl::yield();
            }
            if (std::this_thread::get_id() == home_thread) co_return -1;  // inconclusive
            tk->reset(1ms);
            auto r = co_await sl::select(sl::recv(tk->channel()), sl::after(500ms));
            co_return r.index() == 0 ? 0 : 1;
          }, &t, home);
          const int outcome = co_await h.join();
          if (outcome >= 0) ++tried;
          if (outcome == 1) ++late;
          t.stop();
        }
      },
      sl::runtime_options{.workers = 2});
  if (tried == 0) {
    // Which worker runs a task is the scheduler's choice; on a loaded machine the
    // helper may never land on the other worker. Nothing was tested then.
    GTEST_SKIP() << "inconclusive: the helper never ran on the other worker";
  }
  EXPECT_EQ(late, 0) << "BUG: in " << late << " of " << tried
                     << " attempts a 1 ms tick did not arrive within 500 ms after reset() on "
                        "another worker";
}

TEST(Ticker, RunningTickerCanBeDestroyedAfterItsRuntimeEnds) {
  std::optional<sl::ticker> t;
  sl_test::run_checked([&]() -> sl::task<void> {
    t.emplace(1ms);
    const std::optional<sl::clock::time_point> tick = co_await t->channel().recv();
    EXPECT_TRUE(tick.has_value());
  });
  t.reset();  // its timer was still armed when the runtime shut down
}

TEST(Ticker, StoppedTickerCanBeDestroyedAfterItsRuntimeEnds) {
  // stop() took the node off its heap; the destructor's stop() after the runtime
  // ended must not touch the heap of a worker that no longer exists (ASan sees a
  // heap-use-after-free if it does; release and TSan builds would not notice).
  std::optional<sl::ticker> t;
  sl_test::run_checked([&]() -> sl::task<void> {
    t.emplace(1ms);
    const std::optional<sl::clock::time_point> tick = co_await t->channel().recv();
    EXPECT_TRUE(tick.has_value());
    t->stop();
  });
  t.reset();  // stop() again, after the runtime's timer heaps are gone
}

// ---- stress ----------------------------------------------------------------------------

TEST(TimeStress, HundredThousandConcurrentSleeps) {
  constexpr int sleepers = 100'000;
  std::atomic<int> early{0};
  std::atomic<int> woke{0};
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        sl::wait_group wg;
        wg.add(sleepers);
        for (int i = 0; i < sleepers; ++i) {
          sl::go([](std::chrono::microseconds d, std::atomic<int>* bad, std::atomic<int>* ok,
                    sl::wait_group* w) -> sl::task<void> {
            const auto start = sl::clock::now();
            co_await sl::sleep_for(d);
            if (sl::clock::now() - start < d) bad->fetch_add(1);
            ok->fetch_add(1);
            w->done();
          }, std::chrono::microseconds((i * 7919) % 20000), &early, &woke, &wg);
        }
        co_await wg.wait();
      },
      sl::runtime_options{.workers = 2});
  EXPECT_EQ(woke.load(), sleepers);
  EXPECT_EQ(early.load(), 0);
}

TEST(TimeStress, AfterTimersRacingChannelWakeups) {
  // Hunts: an after() timer firing on one worker while a sender on another worker
  // claims the same select (the timer must lose cleanly and the select must not be
  // woken twice, or woken later through a stale timer). Each receiver selects
  // with a timeout of d while its partner sleeps d and then offers a value
  // without blocking. Values offered and taken must match exactly.
  constexpr int pairs = 1000;
  constexpr int rounds = 50;
  std::atomic<long> offered{0};
  std::atomic<long> taken{0};
  std::atomic<int> bad{0};
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        sl::wait_group wg;
        wg.add(2 * pairs);
        for (int p = 0; p < pairs; ++p) {
          sl::chan<int> c;
          sl::go([](sl::chan<int> in, unsigned seed, std::atomic<long>* got, std::atomic<int>* b,
                    sl::wait_group* w) -> sl::task<void> {
            std::minstd_rand rng(seed);
            for (int i = 0; i < rounds; ++i) {
              const auto d = std::chrono::microseconds(50 + rng() % 300);
              const auto start = sl::clock::now();
              auto r = co_await sl::select(sl::recv(in), sl::after(d));
              if (r.index() == 0) {
                const std::optional<int> v = r.get<0>();
                if (v) {
                  got->fetch_add(1);
                } else {
                  b->fetch_add(1);
                }
              } else if (r.index() == 1) {
                if (sl::clock::now() - start < d) b->fetch_add(1);
              } else {
                b->fetch_add(1);
              }
            }
            w->done();
          }, c, static_cast<unsigned>(p + 1), &taken, &bad, &wg);
          sl::go([](sl::chan<int> out, unsigned seed, std::atomic<long>* sent,
                    sl::wait_group* w) -> sl::task<void> {
            std::minstd_rand rng(seed);
            for (int i = 0; i < rounds; ++i) {
              co_await sl::sleep_for(std::chrono::microseconds(50 + rng() % 300));
              auto r = co_await sl::select(sl::send(out, i), sl::default_case());
              if (r.index() == 0) sent->fetch_add(1);
            }
            w->done();
          }, c, static_cast<unsigned>(p + 1), &offered, &wg);
        }
        co_await wg.wait();
      },
      sl::runtime_options{.workers = 2});
  EXPECT_EQ(bad.load(), 0);
  EXPECT_EQ(offered.load(), taken.load());
}

TEST(TimeStress, SleepsAndTimeoutsRacingContextCancellation) {
  // Hunts: a context's deadline timer, a select's after() timer and an explicit
  // cancel() all due at nearly the same instant; the deadline timer removed by
  // cancel() while it fires on the other worker.
  constexpr int tasks = 10000;
  std::atomic<int> bad{0};
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        sl::wait_group wg;
        wg.add(2 * tasks);
        for (int i = 0; i < tasks; ++i) {
          const auto d = std::chrono::microseconds(200 + (i * 37) % 400);
          auto [ctx, cancel] = sl::with_timeout(sl::context::background(), d);
          sl::go([](sl::context c, std::chrono::microseconds dd, std::atomic<int>* b,
                    sl::wait_group* w) -> sl::task<void> {
            const auto start = sl::clock::now();
            auto r = co_await sl::select(sl::done(c), sl::after(dd));
            if (r.index() == 0 && !c.err()) b->fetch_add(1);
            if (r.index() == 1 && sl::clock::now() - start < dd) b->fetch_add(1);
            w->done();
          }, ctx, d, &bad, &wg);
          sl::go([](sl::cancel_func cf, std::chrono::microseconds dd,
                    sl::wait_group* w) -> sl::task<void> {
            co_await sl::sleep_for(dd);
            cf();
            w->done();
          }, cancel, d, &wg);
        }
        co_await wg.wait();
      },
      sl::runtime_options{.workers = 2});
  EXPECT_EQ(bad.load(), 0);
}

TEST(TickerStress, ResetAndStopRacingTicks) {
  // Hunts: reset() re-arming the ticker while a tick that was already taken off
  // the heap is about to fire on the other worker (the tick then re-arms too, and
  // the node must not end up in the heap twice); stop() racing a tick.
  constexpr int tickers = 8;
  std::atomic<int> ticks_after_stop{0};
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        sl::wait_group wg;
        wg.add(tickers);
        for (int k = 0; k < tickers; ++k) {
          sl::go([](unsigned seed, std::atomic<int>* late, sl::wait_group* w) -> sl::task<void> {
            std::minstd_rand rng(seed);
            sl::ticker t(std::chrono::microseconds(20));
            for (int i = 0; i < 5000; ++i) {
              t.reset(std::chrono::microseconds(5 + rng() % 40));
              if (rng() % 2 == 0) (void)t.channel().try_recv();
              if (rng() % 16 == 0) t.stop();
              co_await sl::yield();
            }
            t.stop();
            (void)t.channel().try_recv();
            co_await sl::sleep_for(2ms);  // a hundred periods
            if (t.channel().try_recv().has_value()) late->fetch_add(1);
            w->done();
          }, static_cast<unsigned>(k + 1), &ticks_after_stop, &wg);
        }
        co_await wg.wait();
      },
      sl::runtime_options{.workers = 2});
  EXPECT_EQ(ticks_after_stop.load(), 0);
}

TEST(TickerStress, ResetRacingBatchedTicksOnTheOtherWorker) {
  // Hunts: a tick's callback runs after the heap lock is released; a reset() on
  // the other worker between the heap popping the node and the callback re-arms
  // the node, and the callback must then not re-arm it a second time (the node
  // would sit in the heap twice, and the ticker is freed while still in it).
  // Two firings of one ticker can also be in flight on two workers at once.
  // 64 tickers share one heap and tiny periods, so their ticks fire in batches,
  // which widens that window; four workers on fewer cores get preempted inside it.
  constexpr int tickers = 64;
  std::atomic<int> ticks_after_stop{0};
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        std::vector<std::unique_ptr<sl::ticker>> ts;
        for (int i = 0; i < tickers; ++i) ts.push_back(std::make_unique<sl::ticker>(5us));
        // A reader parked on every tick channel makes each tick's callback wake
        // a task (a futex syscall), which keeps the callbacks of a batch running
        // long enough for a reset() on another worker to land between them.
        auto [stop_readers, stop] = sl::with_cancel(sl::context::background());
        sl::wait_group readers;
        readers.add(tickers);
        for (auto& t : ts) {
          sl::go([](sl::chan<sl::clock::time_point> ch, sl::context c,
                    sl::wait_group* w) -> sl::task<void> {
            for (;;) {
              auto r = co_await sl::select(sl::recv(ch), sl::done(c));
              if (r.index() == 1) break;
            }
            w->done();
          }, t->channel(), stop_readers, &readers);
        }
        sl::wait_group wg;
        wg.add(4);
        for (int r = 0; r < 4; ++r) {
          sl::go([](std::vector<std::unique_ptr<sl::ticker>>* v, unsigned seed,
                    sl::wait_group* w) -> sl::task<void> {
            std::minstd_rand rng(seed);
            const auto end = sl::clock::now() + 300ms;
            while (sl::clock::now() < end) {
              (*v)[rng() % v->size()]->reset(std::chrono::microseconds(1 + rng() % 10));
              (void)(*v)[rng() % v->size()]->channel().try_recv();
              if (rng() % 4 == 0) co_await sl::yield();
            }
            w->done();
          }, &ts, static_cast<unsigned>(r + 1), &wg);
        }
        co_await wg.wait();
        stop();
        co_await readers.wait();
        for (auto& t : ts) {
          t->stop();
          (void)t->channel().try_recv();
        }
        co_await sl::sleep_for(2ms);  // dozens of periods
        for (auto& t : ts) {
          if (t->channel().try_recv().has_value()) ticks_after_stop.fetch_add(1);
        }
      },
      sl::runtime_options{.workers = 4});
  EXPECT_EQ(ticks_after_stop.load(), 0);
}
