// mutex and rw_mutex: Go's sync.Mutex (barging in normal mode, hand-off in
// starvation mode, LIFO re-queue of a woken waiter that lost) and sync.RWMutex
// (shared readers, writer preference, queued readers admitted together), plus
// stress tests that hunt lost wake-ups and broken exclusion.
//
// Tests that depend on who runs between two statements use one worker, where
// a woken task cannot run until the current one suspends.
#include "test_util.hpp"

#include <sluice/clock.hpp>
#include <sluice/introspection.hpp>
#include <sluice/mutex.hpp>
#include <sluice/runtime.hpp>
#include <sluice/time.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <random>
#include <stdexcept>
#include <string_view>
#include <utility>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

sl::runtime_options one_worker() {
  sl::runtime_options o;
  o.workers = 1;
  return o;
}

std::size_t tasks_in(std::string_view state) {
  std::size_t n = 0;
  for (const sl::task_info& t : sl::list_tasks()) n += t.state == state ? 1 : 0;
  return n;
}

// Yields until at least n tasks wait in `state`: how a test knows a task is
// parked without sleeping. False if that never happens.
sl::task<bool> until_parked(std::string_view state, std::size_t n) {
  const auto give_up = sl::clock::now() + std::chrono::seconds(10);
  while (sl::clock::now() < give_up) {
    if (tasks_in(state) >= n) co_return true;
    co_await sl::yield();
  }
  co_return false;
}

// Locks m, appends id to order, unlocks, and signals wg.
sl::task<void> lock_and_record(sl::mutex* m, int id, std::vector<int>* order, sl::wait_group* wg) {
  {
    auto g = co_await m->lock();
    order->push_back(id);
  }
  wg->done();
}

std::uint32_t seed_for(int i) { return 0x9e3779b9u * static_cast<std::uint32_t>(i + 1); }

}  // namespace

// ---- mutex: basic rules -----------------------------------------------------------

TEST(Mutex, TryLockFailsWhileHeldAndSucceedsAfterUnlock) {
  sl::mutex m;  // try_lock and unlock work outside a runtime too
  auto g = m.try_lock();
  ASSERT_TRUE(g.has_value());
  EXPECT_TRUE(g->owns_lock());
  EXPECT_FALSE(m.try_lock().has_value());
  g->unlock();
  EXPECT_FALSE(g->owns_lock());
  EXPECT_TRUE(m.try_lock().has_value());  // and its guard unlocks at once
  EXPECT_TRUE(m.try_lock().has_value());
}

TEST(Mutex, GuardUnlocksOnDestructionAndMovesOwnership) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::mutex m;
    {
      auto g = co_await m.lock();
      EXPECT_TRUE(g.owns_lock());
      sl::mutex::guard moved = std::move(g);
      EXPECT_FALSE(g.owns_lock());
      EXPECT_TRUE(moved.owns_lock());
      EXPECT_FALSE(m.try_lock().has_value());
    }
    EXPECT_TRUE(m.try_lock().has_value());
  });
}

TEST(Mutex, ReleasedGuardLeavesUnlockToTheCaller) {
  sl::mutex m;
  sl::mutex* released = nullptr;
  {
    auto g = m.try_lock();
    ASSERT_TRUE(g.has_value());
    released = g->release();
  }
  EXPECT_EQ(released, &m);
  EXPECT_FALSE(m.try_lock().has_value());
  m.unlock();
  EXPECT_TRUE(m.try_lock().has_value());
}

TEST(Mutex, UnlockOfUnlockedMutexThrowsLogicError) {
  sl::mutex m;
  EXPECT_THROW(m.unlock(), std::logic_error);
  sl::mutex::guard empty;
  EXPECT_THROW(empty.unlock(), std::logic_error);
  auto g = m.try_lock();
  ASSERT_TRUE(g.has_value());  // the state survived the failed unlocks above
  g->release()->unlock();
  EXPECT_THROW(m.unlock(), std::logic_error);
}

TEST(Mutex, LockSuspendsUntilTheHolderUnlocks) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::mutex m;
    std::atomic<bool> got{false};
    sl::wait_group wg;
    auto g = co_await m.lock();
    wg.add(1);
    sl::go(
        [](sl::mutex* mu, std::atomic<bool>* flag, sl::wait_group* w) -> sl::task<void> {
          auto guard = co_await mu->lock();
          flag->store(true);
          w->done();
        },
        &m, &got, &wg);
    const bool parked = co_await until_parked("mutex lock", 1);
    EXPECT_TRUE(parked);
    EXPECT_FALSE(got.load());
    g.unlock();
    co_await wg.wait();
    EXPECT_TRUE(got.load());
  });
}

TEST(Mutex, UnlockByAnotherTaskIsAllowed) {
  // As in Go, a lock is not tied to the task that took it.
  sl_test::run_checked([]() -> sl::task<void> {
    sl::mutex m;
    auto g = co_await m.lock();
    sl::mutex* raw = g.release();
    auto h = sl::spawn([](sl::mutex* mu) -> sl::task<void> {
      mu->unlock();
      co_return;
    }, raw);
    co_await h.join();
    EXPECT_TRUE(m.try_lock().has_value());
  });
}

// ---- mutex: Go's fairness rules ------------------------------------------------

TEST(Mutex, RunningTaskBargesPastAWokenWaiterInNormalMode) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        sl::mutex m;
        std::vector<int> order;
        sl::wait_group wg;
        auto g = co_await m.lock();
        wg.add(1);
        sl::go(lock_and_record, &m, 1, &order, &wg);
        const bool parked = co_await until_parked("mutex lock", 1);
        EXPECT_TRUE(parked);
        g.unlock();  // wakes the waiter, which cannot run before we suspend
        auto again = m.try_lock();
        EXPECT_TRUE(again.has_value());  // normal mode: the running task wins
        again.reset();
        co_await wg.wait();
        EXPECT_EQ(order, std::vector<int>{1});
      },
      one_worker());
}

TEST(Mutex, WokenWaiterThatLosesTheRaceRequeuesAtTheFront) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        sl::mutex m;
        std::vector<int> order;
        sl::wait_group wg;
        auto g = co_await m.lock();
        wg.add(2);
        sl::go(lock_and_record, &m, 1, &order, &wg);
        const bool first = co_await until_parked("mutex lock", 1);
        sl::go(lock_and_record, &m, 2, &order, &wg);
        const bool second = co_await until_parked("mutex lock", 2);
        EXPECT_TRUE(first && second);
        g.unlock();                  // wakes waiter 1
        auto barged = m.try_lock();  // ... which then loses to us
        EXPECT_TRUE(barged.has_value());
        const bool requeued = co_await until_parked("mutex lock", 2);  // 1 is back in line
        EXPECT_TRUE(requeued);
        barged.reset();  // must wake 1 again (head of the queue), not 2
        co_await wg.wait();
        EXPECT_EQ(order, (std::vector<int>{1, 2}));
      },
      one_worker());
}

TEST(Mutex, UnlockHandsOffToLongWaiterInStarvationMode) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        sl::mutex m;
        std::vector<int> order;
        sl::wait_group wg;
        auto g = co_await m.lock();
        wg.add(1);
        sl::go(lock_and_record, &m, 1, &order, &wg);
        const bool parked = co_await until_parked("mutex lock", 1);
        EXPECT_TRUE(parked);
        // The waiter's wait grows past the 1 ms threshold while we hold the lock.
        co_await sl::sleep_for(2 * sl::mutex::starvation_threshold);
        g.unlock();
        auto barged = m.try_lock();  // still normal mode: we barge ...
        EXPECT_TRUE(barged.has_value());
        // ... the waiter runs, loses, and switches the mutex to starvation mode.
        const bool requeued = co_await until_parked("mutex lock", 1);
        EXPECT_TRUE(requeued);
        barged.reset();  // hands the lock to the waiter, which has not run yet
        EXPECT_FALSE(m.try_lock().has_value());  // so a newcomer cannot barge
        co_await wg.wait();
        EXPECT_EQ(order, std::vector<int>{1});
      },
      one_worker());
}

TEST(Mutex, StarvationModeHandsOffUntilTheQueueEmpties) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        sl::mutex m;
        std::vector<int> order;
        std::vector<bool> could_barge;  // what each waiter's try_lock saw right after its unlock
        sl::wait_group wg;
        auto g = co_await m.lock();
        wg.add(2);
        auto waiter = [](sl::mutex* mu, int id, std::vector<int>* ord, std::vector<bool>* barge,
                         sl::wait_group* w) -> sl::task<void> {
          {
            auto guard = co_await mu->lock();
            ord->push_back(id);
          }
          barge->push_back(mu->try_lock().has_value());
          w->done();
        };
        sl::go(waiter, &m, 1, &order, &could_barge, &wg);
        const bool first = co_await until_parked("mutex lock", 1);
        sl::go(waiter, &m, 2, &order, &could_barge, &wg);
        const bool second = co_await until_parked("mutex lock", 2);
        EXPECT_TRUE(first && second);
        co_await sl::sleep_for(2 * sl::mutex::starvation_threshold);
        g.unlock();
        auto barged = m.try_lock();
        EXPECT_TRUE(barged.has_value());
        const bool requeued = co_await until_parked("mutex lock", 2);  // starvation mode now
        EXPECT_TRUE(requeued);
        barged.reset();  // hand-off to 1; 2 still waits long: the mode stays
        co_await wg.wait();
        EXPECT_EQ(order, (std::vector<int>{1, 2}));
        // 1 handed the lock straight to 2 (no barging); 2 was the last waiter,
        // so its hand-off ended starvation mode and its own try_lock succeeded.
        EXPECT_EQ(could_barge, (std::vector<bool>{false, true}));
        EXPECT_TRUE(m.try_lock().has_value());
      },
      one_worker());
}

// ---- mutex: stress ------------------------------------------------------------------

TEST(MutexStress, ExclusionHoldsWithRandomYieldsInsideAndOutside) {
  // Hunts: a lost wake-up (the test hangs), two holders at once (inside > 1),
  // and a lost update (the total).
  sl_test::run_checked([]() -> sl::task<void> {
    constexpr int tasks = 32;
    constexpr int rounds = 300;
    sl::mutex m;
    long total = 0;
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
    sl::wait_group wg;
    for (int t = 0; t < tasks; ++t) {
      wg.add(1);
      sl::go(
          [](int id, sl::mutex* mu, long* sum, std::atomic<int>* in, std::atomic<int>* bad,
             sl::wait_group* w) -> sl::task<void> {
            std::minstd_rand rng(seed_for(id));
            for (int i = 0; i < rounds; ++i) {
              std::optional<sl::mutex::guard> g;
              if (rng() % 4 == 0) g = mu->try_lock();
              if (!g) g.emplace(co_await mu->lock());
              if (in->fetch_add(1) != 0) bad->fetch_add(1);
              ++*sum;
              if (rng() % 3 == 0) co_await sl::yield();
              in->fetch_sub(1);
              g.reset();
              if (rng() % 2 == 0) co_await sl::yield();
            }
            w->done();
          },
          t, &m, &total, &inside, &overlaps, &wg);
    }
    co_await wg.wait();
    EXPECT_EQ(total, long{tasks} * rounds);
    EXPECT_EQ(overlaps.load(), 0);
    EXPECT_TRUE(m.try_lock().has_value());
  });
}

TEST(MutexStress, StarvationHandOffsMixWithBarging) {
  // Holders sometimes sleep past the threshold, so the mutex keeps switching
  // between the two modes while other tasks barge and try_lock. Hunts: a
  // hand-off racing a barging CAS, a woken flag that is never cleared (hang).
  sl_test::run_checked([]() -> sl::task<void> {
    constexpr int tasks = 12;
    constexpr int rounds = 60;
    sl::mutex m;
    long total = 0;
    std::atomic<long> extra{0};  // successful try_locks
    std::atomic<int> inside{0};
    std::atomic<int> overlaps{0};
    sl::wait_group wg;
    for (int t = 0; t < tasks; ++t) {
      wg.add(1);
      sl::go(
          [](int id, sl::mutex* mu, long* sum, std::atomic<int>* in, std::atomic<int>* bad,
             std::atomic<long>* ex, sl::wait_group* w) -> sl::task<void> {
            std::minstd_rand rng(seed_for(id + 100));
            for (int i = 0; i < rounds; ++i) {
              auto g = co_await mu->lock();
              if (in->fetch_add(1) != 0) bad->fetch_add(1);
              ++*sum;
              if (rng() % 16 == 0) co_await sl::sleep_for(sl::mutex::starvation_threshold);
              if (rng() % 2 == 0) co_await sl::yield();
              in->fetch_sub(1);
              g.unlock();
              if (auto again = mu->try_lock()) {  // barge right after our own unlock
                if (in->fetch_add(1) != 0) bad->fetch_add(1);
                ++*sum;
                ex->fetch_add(1);
                in->fetch_sub(1);
              }
              if (rng() % 2 == 0) co_await sl::yield();
            }
            w->done();
          },
          t, &m, &total, &inside, &overlaps, &extra, &wg);
    }
    co_await wg.wait();
    EXPECT_EQ(total, long{tasks} * rounds + extra.load());
    EXPECT_EQ(overlaps.load(), 0);
    EXPECT_TRUE(m.try_lock().has_value());
  });
}

// ---- rw_mutex -------------------------------------------------------------------------

TEST(RwMutex, ReadersShareAndExcludeWriters) {
  sl::rw_mutex rw;
  auto r1 = rw.try_lock_shared();
  auto r2 = rw.try_lock_shared();
  EXPECT_TRUE(r1.has_value() && r2.has_value());
  EXPECT_FALSE(rw.try_lock().has_value());
  r1.reset();
  EXPECT_FALSE(rw.try_lock().has_value());
  r2.reset();
  EXPECT_TRUE(rw.try_lock().has_value());
}

TEST(RwMutex, WriterExcludesReadersAndWriters) {
  sl::rw_mutex rw;
  auto w = rw.try_lock();
  ASSERT_TRUE(w.has_value());
  EXPECT_FALSE(rw.try_lock().has_value());
  EXPECT_FALSE(rw.try_lock_shared().has_value());
  w->unlock();
  EXPECT_TRUE(rw.try_lock_shared().has_value());
}

TEST(RwMutex, UnlockWithoutTheMatchingLockThrowsLogicError) {
  sl::rw_mutex rw;
  EXPECT_THROW(rw.unlock(), std::logic_error);
  EXPECT_THROW(rw.unlock_shared(), std::logic_error);
  {
    auto r = rw.try_lock_shared();
    ASSERT_TRUE(r.has_value());
    EXPECT_THROW(rw.unlock(), std::logic_error);  // a reader is not a writer
  }
  {
    auto w = rw.try_lock();
    ASSERT_TRUE(w.has_value());
    EXPECT_THROW(rw.unlock_shared(), std::logic_error);
  }
  sl::rw_mutex::guard empty;
  EXPECT_THROW(empty.unlock(), std::logic_error);
  sl::rw_mutex::shared_guard empty_shared;
  EXPECT_THROW(empty_shared.unlock(), std::logic_error);
  EXPECT_TRUE(rw.try_lock().has_value());  // failed unlocks changed nothing
}

TEST(RwMutex, WriterWaitsForActiveReaders) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::rw_mutex rw;
    std::atomic<bool> wrote{false};
    sl::wait_group wg;
    auto r = co_await rw.lock_shared();
    wg.add(1);
    sl::go(
        [](sl::rw_mutex* m, std::atomic<bool>* flag, sl::wait_group* w) -> sl::task<void> {
          auto g = co_await m->lock();
          flag->store(true);
          w->done();
        },
        &rw, &wrote, &wg);
    const bool parked = co_await until_parked("rw_mutex lock", 1);
    EXPECT_TRUE(parked);
    EXPECT_FALSE(wrote.load());
    r.unlock();  // the last reader hands the lock to the writer
    co_await wg.wait();
    EXPECT_TRUE(wrote.load());
  });
}

TEST(RwMutex, WaitingWriterBlocksNewReaders) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::rw_mutex rw;
    std::vector<int> order;
    sl::mutex order_mu;
    sl::wait_group wg;
    auto r = co_await rw.lock_shared();
    wg.add(2);
    sl::go(
        [](sl::rw_mutex* m, std::vector<int>* ord, sl::mutex* omu, sl::wait_group* w)
            -> sl::task<void> {
          {
            auto g = co_await m->lock();
            auto og = co_await omu->lock();
            ord->push_back(1);
          }
          w->done();
        },
        &rw, &order, &order_mu, &wg);
    const bool writer_parked = co_await until_parked("rw_mutex lock", 1);
    EXPECT_TRUE(writer_parked);
    EXPECT_FALSE(rw.try_lock_shared().has_value());  // a writer waits: no new readers
    sl::go(
        [](sl::rw_mutex* m, std::vector<int>* ord, sl::mutex* omu, sl::wait_group* w)
            -> sl::task<void> {
          {
            auto g = co_await m->lock_shared();
            auto og = co_await omu->lock();
            ord->push_back(2);
          }
          w->done();
        },
        &rw, &order, &order_mu, &wg);
    const bool reader_parked = co_await until_parked("rw_mutex lock", 2);
    EXPECT_TRUE(reader_parked);
    r.unlock();
    co_await wg.wait();
    EXPECT_EQ(order, (std::vector<int>{1, 2}));
  });
}

TEST(RwMutex, ReadersQueuedBehindAWriterAreAllAdmittedWhenItUnlocks) {
  sl_test::run_checked([]() -> sl::task<void> {
    constexpr int readers = 4;
    sl::rw_mutex rw;
    std::atomic<int> entered{0};      // never decremented: a barrier
    std::atomic<int> saw_all_inside{0};
    std::atomic<int> readers_done{0};
    std::atomic<int> readers_done_when_writer2_ran{-1};
    sl::wait_group wg;
    auto w = co_await rw.lock();
    for (int i = 0; i < readers; ++i) {
      wg.add(1);
      sl::go(
          [](sl::rw_mutex* m, std::atomic<int>* in, std::atomic<int>* all,
             std::atomic<int>* done, sl::wait_group* g) -> sl::task<void> {
            {
              auto r = co_await m->lock_shared();
              in->fetch_add(1);
              // Hold the lock until every reader is in. They were admitted
              // together, so this ends as soon as the others get a CPU; if they
              // were admitted one by one it cannot end (the bound turns that
              // into a failure instead of a hang).
              const auto give_up = sl::clock::now() + 10s;
              while (in->load() < readers && sl::clock::now() < give_up) co_await sl::yield();
              if (in->load() == readers) all->fetch_add(1);
              done->fetch_add(1);
            }
            g->done();
          },
          &rw, &entered, &saw_all_inside, &readers_done, &wg);
    }
    const bool readers_parked = co_await until_parked("rw_mutex lock", readers);
    EXPECT_TRUE(readers_parked);
    wg.add(1);
    sl::go(
        [](sl::rw_mutex* m, std::atomic<int>* done, std::atomic<int>* seen,
           sl::wait_group* g) -> sl::task<void> {
          {
            auto wg2 = co_await m->lock();
            seen->store(done->load());
          }
          g->done();
        },
        &rw, &readers_done, &readers_done_when_writer2_ran, &wg);
    const bool writer_parked = co_await until_parked("rw_mutex lock", readers + 1);
    EXPECT_TRUE(writer_parked);
    w.unlock();  // admits the 4 readers at once; the second writer waits for them
    co_await wg.wait();
    EXPECT_EQ(saw_all_inside.load(), readers);
    EXPECT_EQ(readers_done_when_writer2_ran.load(), readers);
  });
}

TEST(RwMutex, StreamOfReadersDoesNotStarveAWriter) {
  sl_test::run_checked([]() -> sl::task<void> {
    constexpr int readers = 6;
    sl::rw_mutex rw;
    std::atomic<bool> writer_done{false};
    sl::wait_group wg;
    for (int i = 0; i < readers; ++i) {
      wg.add(1);
      // Overlapping readers: without writer preference there is always one inside.
      sl::go(
          [](sl::rw_mutex* m, std::atomic<bool>* stop, sl::wait_group* g) -> sl::task<void> {
            while (!stop->load()) {
              auto r = co_await m->lock_shared();
              co_await sl::yield();
            }
            g->done();
          },
          &rw, &writer_done, &wg);
    }
    for (int i = 0; i < 20; ++i) co_await sl::yield();
    {
      auto w = co_await rw.lock();
    }
    writer_done.store(true);
    co_await wg.wait();
  });
}

TEST(RwMutexStress, ReadersAndWritersNeverOverlap) {
  // Hunts: a reader admitted while a writer holds, two writers at once, a lost
  // hand-off between the last reader and a waiting writer (hang).
  sl_test::run_checked([]() -> sl::task<void> {
    constexpr int tasks = 24;
    constexpr int rounds = 200;
    sl::rw_mutex rw;
    std::atomic<int> readers_in{0};
    std::atomic<int> writers_in{0};
    std::atomic<int> violations{0};
    long writes = 0;
    sl::wait_group wg;
    for (int t = 0; t < tasks; ++t) {
      wg.add(1);
      sl::go(
          [](int id, sl::rw_mutex* m, std::atomic<int>* rin, std::atomic<int>* win,
             std::atomic<int>* bad, long* count, sl::wait_group* g) -> sl::task<void> {
            std::minstd_rand rng(seed_for(id + 1000));
            for (int i = 0; i < rounds; ++i) {
              if (rng() % 4 == 0) {
                std::optional<sl::rw_mutex::guard> w = rng() % 3 == 0 ? m->try_lock() : std::nullopt;
                if (!w) w.emplace(co_await m->lock());
                if (win->fetch_add(1) != 0 || rin->load() != 0) bad->fetch_add(1);
                ++*count;
                if (rng() % 2 == 0) co_await sl::yield();
                win->fetch_sub(1);
              } else {
                std::optional<sl::rw_mutex::shared_guard> r =
                    rng() % 3 == 0 ? m->try_lock_shared() : std::nullopt;
                if (!r) r.emplace(co_await m->lock_shared());
                rin->fetch_add(1);
                if (win->load() != 0) bad->fetch_add(1);
                if (rng() % 2 == 0) co_await sl::yield();
                rin->fetch_sub(1);
              }
              if (rng() % 2 == 0) co_await sl::yield();
            }
            g->done();
          },
          t, &rw, &readers_in, &writers_in, &violations, &writes, &wg);
    }
    co_await wg.wait();
    EXPECT_EQ(violations.load(), 0);
    EXPECT_GT(writes, 0);
    EXPECT_TRUE(rw.try_lock().has_value());
  });
}

// The API contract's use (shared/contract/core_test.cpp, Sync.MutexProtectsSharedState).
TEST(Mutex, ProtectsSharedStateAcrossWorkers) {
  const long total = sl::run([]() -> sl::task<long> {
    sl::testing::leak_check lc;
    sl::mutex mu;
    long shared = 0;
    sl::wait_group wg;
    for (int t = 0; t < 8; ++t) {
      wg.add(1);
      sl::go(
          [](sl::mutex* m, long* s, sl::wait_group* w) -> sl::task<void> {
            for (int i = 0; i < 10000; ++i) {
              auto guard = co_await m->lock();
              ++*s;
            }
            w->done();
          },
          &mu, &shared, &wg);
    }
    co_await wg.wait();
    const auto leaked = co_await lc.verify(5s);
    EXPECT_TRUE(leaked.empty());
    co_return shared;
  });
  EXPECT_EQ(total, 80000);
}
