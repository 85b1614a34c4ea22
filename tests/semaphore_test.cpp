// semaphore: x/sync's Weighted — FIFO with a large head blocking smaller
// requests, context-bounded waits that hold nothing when they fail, a cancelled
// head unblocking those behind it, argument checks — and cancellation storms
// that check no unit is ever lost or granted twice.
#include "test_util.hpp"

#include <sluice/context.hpp>
#include <sluice/clock.hpp>
#include <sluice/introspection.hpp>
#include <sluice/runtime.hpp>
#include <sluice/semaphore.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <stdexcept>
#include <string_view>
#include <system_error>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

using sl_test::tasks_in;
using sl_test::until_parked;

// Acquires n units (no deadline), records id, gives them back.
sl::task<void> acquire_record_release(sl::semaphore* s, std::int64_t n, int id,
                                      std::vector<int>* order, sl::wait_group* wg) {
  const std::error_code ec = co_await s->acquire(sl::context::background(), n);
  EXPECT_FALSE(ec);
  order->push_back(id);
  s->release(n);
  wg->done();
}

std::uint32_t seed_for(int i) { return 0x85ebca6bu * static_cast<std::uint32_t>(i + 7); }

}  // namespace

// ---- argument and accounting rules (no runtime needed) -----------------------------

TEST(Semaphore, NegativeSizeThrowsInvalidArgument) {
  EXPECT_THROW(sl::semaphore(-1), std::invalid_argument);
  sl::semaphore zero(0);
  EXPECT_EQ(zero.size(), 0);
  EXPECT_TRUE(zero.try_acquire(0));
}

TEST(Semaphore, NegativeUnitsThrowInvalidArgument) {
  sl::semaphore s(4);
  EXPECT_THROW((void)s.try_acquire(-1), std::invalid_argument);
  EXPECT_THROW(s.release(-1), std::invalid_argument);
  EXPECT_THROW((void)s.acquire(sl::context::background(), -1), std::invalid_argument);
  EXPECT_TRUE(s.try_acquire(4));  // nothing was taken by the failed calls
}

TEST(Semaphore, ReleasingMoreThanHeldThrowsLogicError) {
  sl::semaphore s(4);
  EXPECT_THROW(s.release(1), std::logic_error);
  EXPECT_TRUE(s.try_acquire(2));
  EXPECT_THROW(s.release(3), std::logic_error);
  s.release(2);
  EXPECT_TRUE(s.try_acquire(4));
}

TEST(Semaphore, TryAcquireTakesOnlyWhatIsFree) {
  sl::semaphore s(5);
  EXPECT_TRUE(s.try_acquire(3));
  EXPECT_FALSE(s.try_acquire(3));
  EXPECT_TRUE(s.try_acquire(2));
  EXPECT_FALSE(s.try_acquire(1));
  EXPECT_TRUE(s.try_acquire(0));
  s.release(5);
  EXPECT_FALSE(s.try_acquire(6));
}

// ---- blocking acquire ------------------------------------------------------------

TEST(Semaphore, AcquireSuspendsUntilUnitsAreReleased) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::semaphore s(3);
    const std::error_code first = co_await s.acquire(sl::context::background(), 3);
    EXPECT_FALSE(first);
    std::vector<int> order;
    sl::wait_group wg;
    wg.add(1);
    sl::go(acquire_record_release, &s, 2, 1, &order, &wg);
    const bool parked = co_await until_parked("semaphore acquire", 1);
    EXPECT_TRUE(parked);
    EXPECT_TRUE(order.empty());
    s.release(3);
    co_await wg.wait();
    EXPECT_EQ(order, std::vector<int>{1});
    EXPECT_TRUE(s.try_acquire(3));
    s.release(3);
  });
}

TEST(Semaphore, TryAcquireFailsWhileWaitersAreQueued) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::semaphore s(4);
    EXPECT_TRUE(s.try_acquire(2));
    std::vector<int> order;
    sl::wait_group wg;
    wg.add(1);
    sl::go(acquire_record_release, &s, 4, 1, &order, &wg);
    const bool parked = co_await until_parked("semaphore acquire", 1);
    EXPECT_TRUE(parked);
    EXPECT_FALSE(s.try_acquire(1));  // 2 units are free, but a waiter is first
    s.release(2);
    co_await wg.wait();
    EXPECT_TRUE(s.try_acquire(4));
    s.release(4);
  });
}

TEST(Semaphore, LargeRequestAtTheHeadBlocksSmallerOnesBehindIt) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::semaphore s(10);
    EXPECT_TRUE(s.try_acquire(10));
    std::vector<int> order;
    sl::wait_group wg;
    wg.add(2);
    sl::go(acquire_record_release, &s, 8, 1, &order, &wg);
    const bool head = co_await until_parked("semaphore acquire", 1);
    sl::go(acquire_record_release, &s, 2, 2, &order, &wg);
    const bool behind = co_await until_parked("semaphore acquire", 2);
    EXPECT_TRUE(head && behind);
    s.release(2);  // enough for the small one, not for the head: nobody moves
    for (int i = 0; i < 20; ++i) co_await sl::yield();
    EXPECT_TRUE(order.empty());
    EXPECT_EQ(tasks_in("semaphore acquire"), 2u);
    s.release(6);  // 8 free: the head takes them all, the small one still waits
    co_await wg.wait();
    EXPECT_EQ(order, (std::vector<int>{1, 2}));
    s.release(2);  // what we still held
    EXPECT_TRUE(s.try_acquire(10));
    s.release(10);
  });
}

TEST(Semaphore, AcquireReturnsDeadlineExceededAndHoldsNothing) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::semaphore s(2);
    EXPECT_TRUE(s.try_acquire(1));
    auto [ctx, cancel] = sl::with_timeout(sl::context::background(), 2ms);
    const std::error_code ec = co_await s.acquire(ctx, 2);
    EXPECT_EQ(ec, sl::errc::deadline_exceeded);
    cancel();
    s.release(1);
    EXPECT_TRUE(s.try_acquire(2));  // the failed acquire left nothing behind
    s.release(2);
  });
}

TEST(Semaphore, CancelledAcquireReturnsCanceled) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::semaphore s(1);
    EXPECT_TRUE(s.try_acquire(1));
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    auto h = sl::spawn(
        [](sl::semaphore* sem, sl::context c) -> sl::task<std::error_code> {
          co_return co_await sem->acquire(c, 1);
        },
        &s, ctx);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    cancel();
    const std::error_code ec = co_await h.join();
    EXPECT_EQ(ec, sl::errc::canceled);
    s.release(1);
    EXPECT_TRUE(s.try_acquire(1));
    s.release(1);
  });
}

TEST(Semaphore, DoneContextFailsEvenWhenUnitsAreFree) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::semaphore s(4);
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    cancel();
    const std::error_code ec = co_await s.acquire(ctx, 1);
    EXPECT_EQ(ec, sl::errc::canceled);
    EXPECT_TRUE(s.try_acquire(4));
    s.release(4);
  });
}

TEST(Semaphore, RequestLargerThanTheSizeWaitsForTheContext) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::semaphore s(4);
    auto [ctx, cancel] = sl::with_timeout(sl::context::background(), 2ms);
    const std::error_code ec = co_await s.acquire(ctx, 5);
    EXPECT_EQ(ec, sl::errc::deadline_exceeded);
    cancel();
    EXPECT_TRUE(s.try_acquire(4));
    s.release(4);
  });
}

TEST(Semaphore, CancelledHeadUnblocksTheWaitersBehindIt) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::semaphore s(10);
    EXPECT_TRUE(s.try_acquire(5));
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    auto head = sl::spawn(
        [](sl::semaphore* sem, sl::context c) -> sl::task<std::error_code> {
          co_return co_await sem->acquire(c, 8);
        },
        &s, ctx);
    const bool head_parked = co_await until_parked("select", 1);
    EXPECT_TRUE(head_parked);
    std::vector<int> order;
    sl::wait_group wg;
    wg.add(1);
    sl::go(acquire_record_release, &s, 2, 2, &order, &wg);  // fits, but queues behind the head
    const bool behind_parked = co_await until_parked("semaphore acquire", 1);
    EXPECT_TRUE(behind_parked);
    cancel();  // the head leaves; nobody releases anything, yet 2 must get its units
    const std::error_code ec = co_await head.join();
    EXPECT_EQ(ec, sl::errc::canceled);
    co_await wg.wait();
    EXPECT_EQ(order, std::vector<int>{2});
    s.release(5);
    EXPECT_TRUE(s.try_acquire(10));
    s.release(10);
  });
}

// The API contract's use (shared/contract/core_test.cpp, Sync.RwMutexOnceSemaphore).
TEST(Semaphore, ContractSequence) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::semaphore sem(2);
    const std::error_code first = co_await sem.acquire(sl::context::background(), 1);
    EXPECT_FALSE(first);
    EXPECT_TRUE(sem.try_acquire(1));
    EXPECT_FALSE(sem.try_acquire(1));
    auto [ctx, cancel] = sl::with_timeout(sl::context::background(), 2ms);
    const std::error_code timed_out = co_await sem.acquire(ctx, 1);
    EXPECT_EQ(timed_out, sl::errc::deadline_exceeded);
    sem.release(2);
    EXPECT_TRUE(sem.try_acquire(2));
    sem.release(2);
    cancel();
  });
}

// ---- stress ---------------------------------------------------------------------

TEST(SemaphoreStress, CancellationStormConservesUnits) {
  // Many acquirers with random short timeouts (some already expired, some
  // cancelled by a storm task) race releases and grants. Hunts: units granted
  // to a waiter whose context won (leak), units given twice (over-subscription),
  // a cancelled head that leaves fitting waiters stuck (hang).
  sl_test::run_checked([]() -> sl::task<void> {
    constexpr std::int64_t size = 8;
    constexpr int tasks = 48;
    constexpr int rounds = 60;
    sl::semaphore s(size);
    std::atomic<std::int64_t> held{0};
    std::atomic<int> oversubscribed{0};
    std::atomic<int> granted{0};
    std::atomic<int> failed{0};
    sl::wait_group wg;
    for (int t = 0; t < tasks; ++t) {
      wg.add(1);
      sl::go(
          [](int id, sl::semaphore* sem, std::atomic<std::int64_t>* h, std::atomic<int>* over,
             std::atomic<int>* ok, std::atomic<int>* bad, sl::wait_group* w) -> sl::task<void> {
            std::minstd_rand rng(seed_for(id));
            for (int i = 0; i < rounds; ++i) {
              const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % 4);
              const auto timeout = std::chrono::microseconds(rng() % 400);
              auto [ctx, cancel] = sl::with_timeout(sl::context::background(), timeout);
              if (rng() % 5 == 0) {
                // A storm: someone else cancels this context at a random moment.
                sl::go(
                    [](sl::cancel_func c, int yields) -> sl::task<void> {
                      for (int k = 0; k < yields; ++k) co_await sl::yield();
                      c();
                    },
                    cancel, static_cast<int>(rng() % 4));
              }
              const std::error_code ec = co_await sem->acquire(ctx, n);
              if (!ec) {
                if (h->fetch_add(n) + n > size) over->fetch_add(1);
                ok->fetch_add(1);
                if (rng() % 2 == 0) co_await sl::yield();
                h->fetch_sub(n);
                sem->release(n);
              } else {
                bad->fetch_add(1);
                EXPECT_TRUE(ec == sl::errc::deadline_exceeded || ec == sl::errc::canceled);
              }
              cancel();
              if (rng() % 3 == 0) co_await sl::yield();
            }
            w->done();
          },
          t, &s, &held, &oversubscribed, &granted, &failed, &wg);
    }
    co_await wg.wait();
    EXPECT_EQ(oversubscribed.load(), 0);
    EXPECT_EQ(granted.load() + failed.load(), tasks * rounds);
    EXPECT_GT(granted.load(), 0);
    EXPECT_TRUE(s.try_acquire(size));  // every unit came back
    s.release(size);
  });
}

TEST(SemaphoreStress, MixedWeightsWithoutContextsAllComplete) {
  // Hunts lost wake-ups in the FIFO hand-over: every acquire must finish.
  sl_test::run_checked([]() -> sl::task<void> {
    constexpr std::int64_t size = 10;
    constexpr int tasks = 32;
    constexpr int rounds = 100;
    sl::semaphore s(size);
    std::atomic<std::int64_t> held{0};
    std::atomic<int> oversubscribed{0};
    sl::wait_group wg;
    for (int t = 0; t < tasks; ++t) {
      wg.add(1);
      sl::go(
          [](int id, sl::semaphore* sem, std::atomic<std::int64_t>* h, std::atomic<int>* over,
             sl::wait_group* w) -> sl::task<void> {
            std::minstd_rand rng(seed_for(id + 500));
            for (int i = 0; i < rounds; ++i) {
              const std::int64_t n = 1 + static_cast<std::int64_t>(rng() % size);
              if (!(rng() % 4 == 0 && sem->try_acquire(n))) {
                const std::error_code ec = co_await sem->acquire(sl::context::background(), n);
                EXPECT_FALSE(ec);
              }
              if (h->fetch_add(n) + n > size) over->fetch_add(1);
              if (rng() % 2 == 0) co_await sl::yield();
              h->fetch_sub(n);
              sem->release(n);
            }
            w->done();
          },
          t, &s, &held, &oversubscribed, &wg);
    }
    co_await wg.wait();
    EXPECT_EQ(oversubscribed.load(), 0);
    EXPECT_TRUE(s.try_acquire(size));
    s.release(size);
  });
}
