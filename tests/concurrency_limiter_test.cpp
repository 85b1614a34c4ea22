#include <sluice/sluice.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <stdexcept>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;
using sl_test::run_checked;
using sl_test::until_parked;

TEST(ConcurrencyLimiter, TryAcquireFailsAtTheLimitOutsideARuntimeToo) {
  sl::concurrency_limiter l(2);
  EXPECT_TRUE(l.try_acquire());
  EXPECT_TRUE(l.try_acquire());
  EXPECT_FALSE(l.try_acquire());
  EXPECT_EQ(l.in_flight(), 2);
  l.release();
  EXPECT_TRUE(l.try_acquire());
  const auto s = l.stats();
  EXPECT_EQ(s.limit, 2);
  EXPECT_EQ(s.in_flight, 2);
  EXPECT_EQ(s.acquired, 3u);
  EXPECT_EQ(s.rejected, 1u);
  l.release();
  l.release();
}

TEST(ConcurrencyLimiter, PermitReleasesOnDestruction) {
  sl::concurrency_limiter l(1);
  {
    auto p = l.try_permit();
    EXPECT_TRUE(p);
    auto q = l.try_permit();
    EXPECT_FALSE(q);
    EXPECT_FALSE(q.error());
    auto moved = std::move(p);
    EXPECT_FALSE(p);
    EXPECT_TRUE(moved);
    EXPECT_EQ(l.in_flight(), 1);
  }
  EXPECT_EQ(l.in_flight(), 0);
  EXPECT_TRUE(l.try_acquire());
  l.release();
}

TEST(ConcurrencyLimiter, ReleaseWithoutAcquireThrowsLogicError) {
  sl::concurrency_limiter l(1);
  EXPECT_THROW(l.release(), std::logic_error);
  EXPECT_EQ(l.in_flight(), 0);
}

TEST(ConcurrencyLimiter, InvalidLimitThrowsInvalidArgument) {
  EXPECT_THROW(sl::concurrency_limiter(0), std::invalid_argument);
  EXPECT_THROW(sl::concurrency_limiter(-5), std::invalid_argument);
}

TEST(ConcurrencyLimiter, AcquireWaitsForAReleaseInFifoOrder) {
  run_checked([]() -> sl::task<void> {
    sl::concurrency_limiter l(1);
    EXPECT_TRUE(l.try_acquire());
    std::vector<int> order;
    auto waiter = [&](int id) -> sl::task<void> {
      const std::error_code ec = co_await l.acquire(sl::context::background());
      EXPECT_FALSE(ec);
      order.push_back(id);
      l.release();
    };
    auto a = sl::spawn(waiter, 1);
    const bool first = co_await until_parked("semaphore acquire", 1);
    EXPECT_TRUE(first);
    auto b = sl::spawn(waiter, 2);
    const bool second = co_await until_parked("semaphore acquire", 2);
    EXPECT_TRUE(second);
    EXPECT_FALSE(l.try_acquire());  // queued waiters go first
    l.release();
    co_await a.join();
    co_await b.join();
    EXPECT_EQ(order, (std::vector<int>{1, 2}));
    EXPECT_EQ(l.in_flight(), 0);
  });
}

TEST(ConcurrencyLimiter, AcquirePermitEndsWithTheContext) {
  run_checked([]() -> sl::task<void> {
    sl::concurrency_limiter l(1);
    auto held = l.try_permit();
    auto cc = sl::with_timeout(sl::context::background(), 1ms);
    auto p = co_await l.acquire_permit(cc.ctx);
    EXPECT_FALSE(p);
    EXPECT_EQ(p.error(), sl::errc::deadline_exceeded);
    EXPECT_EQ(l.stats().gave_up, 1u);
    EXPECT_EQ(l.in_flight(), 1);
    cc.cancel();
  });
}

// Cancellation storm: waiters with contexts cancelled at random while holders
// release; the number in flight must never pass the limit and every slot must
// come back.
TEST(ConcurrencyLimiterStress, NeverExceedsTheLimitUnderCancellation) {
  run_checked([]() -> sl::task<void> {
    constexpr int limit = 3;
    sl::concurrency_limiter l(limit);
    std::atomic<int> inside{0};
    std::atomic<int> peak{0};
    std::atomic<int> ok{0};
    std::atomic<int> gave_up{0};
    constexpr int n = 400;
    sl::wait_group wg;
    wg.add(n);
    std::vector<sl::context_with_cancel> ctxs;
    for (int i = 0; i < n; ++i) ctxs.push_back(sl::with_cancel(sl::context::background()));
    auto worker = [&](int i) -> sl::task<void> {
      {
        auto p = co_await l.acquire_permit(ctxs[static_cast<std::size_t>(i)].ctx);
        if (p) {
          const int now = inside.fetch_add(1) + 1;
          int seen = peak.load();
          while (now > seen && !peak.compare_exchange_weak(seen, now)) {
          }
          co_await sl::yield();
          inside.fetch_sub(1);
          ok.fetch_add(1);
        } else {
          gave_up.fetch_add(1);
        }
      }  // the permit is released here, before wg.done()
      wg.done();
    };
    for (int i = 0; i < n; ++i) sl::go(worker, i);
    std::mt19937 rng(3);
    for (int i = 0; i < n; ++i) {
      if (rng() % 3 == 0) ctxs[static_cast<std::size_t>(i)].cancel();
      if (rng() % 4 == 0) co_await sl::yield();
    }
    co_await wg.wait();
    EXPECT_LE(peak.load(), limit);
    EXPECT_EQ(ok + gave_up, n);
    EXPECT_EQ(l.in_flight(), 0);
    EXPECT_EQ(l.stats().acquired, static_cast<std::uint64_t>(ok.load()));
    for (auto& c : ctxs) c.cancel();
  });
}
