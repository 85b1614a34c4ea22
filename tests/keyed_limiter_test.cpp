#include <sluice/sluice.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;
namespace rate = sluice::rate;

namespace {
const sl::clock::time_point t0 = sl::clock::time_point{} + 1000s;
// "k" + std::to_string(i) trips g++ 12's -Wrestrict false positive (PR 105329).
std::string key(const char* prefix, long i) {
  std::string s(prefix);
  s += std::to_string(i);
  return s;
}
}

TEST(KeyedLimiter, EachKeyHasItsOwnBucket) {
  rate::keyed_limiter<std::string> kl({.limit = rate::limit(1), .burst = 2, .max_keys = 100});
  EXPECT_TRUE(kl.allow_n("a", t0, 2));
  EXPECT_FALSE(kl.allow_n("a", t0, 1));
  EXPECT_TRUE(kl.allow_n("b", t0, 1));
  EXPECT_TRUE(kl.allow_n("a", t0 + 1s, 1));  // refilled one token
  EXPECT_EQ(kl.size(), 2u);
}

TEST(KeyedLimiter, MatchesAPlainLimiterPerKeyWhileTracked) {
  // The same call sequence on keyed entries and on one rate::limiter per key
  // gives the same answers (keyed uses the limiter's formulas).
  std::mt19937_64 rng(11);
  rate::keyed_limiter<int> kl({.limit = rate::limit(7.3), .burst = 5, .max_keys = 1000});
  std::map<int, std::unique_ptr<rate::limiter>> plain;
  sl::clock::time_point t = t0;
  for (int i = 0; i < 20000; ++i) {
    const int key = static_cast<int>(rng() % 8);
    t += std::chrono::microseconds(static_cast<long>(rng() % 200000)) -
         std::chrono::microseconds(rng() % 10 == 0 ? 150000 : 0);  // sometimes backwards
    const int n = static_cast<int>(rng() % 7);
    auto& p = plain[key];
    if (!p) p = std::make_unique<rate::limiter>(rate::limit(7.3), 5);
    const bool want = p->allow_n(t, n);
    ASSERT_EQ(kl.allow_n(key, t, n), want) << "op " << i;
    ASSERT_DOUBLE_EQ(kl.tokens_at(key, t), p->tokens_at(t)) << "op " << i;
  }
}

TEST(KeyedLimiter, CheckReportsRetryAfterRemainingAndReset) {
  rate::keyed_limiter<std::string> kl({.limit = rate::limit(10), .burst = 3, .max_keys = 10});
  const rate::verdict first = kl.check_n("ip", t0, 1);
  EXPECT_TRUE(first.allowed);
  EXPECT_DOUBLE_EQ(first.remaining, 2.0);
  EXPECT_EQ(first.reset, sl::clock::duration(100ms));
  EXPECT_TRUE(kl.allow_n("ip", t0, 2));
  const rate::verdict denied = kl.check_n("ip", t0, 1);
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.retry_after, sl::clock::duration(100ms));
  EXPECT_EQ(denied.reset, sl::clock::duration(300ms));
  EXPECT_DOUBLE_EQ(denied.remaining, 0.0);
  EXPECT_EQ(kl.check_n("ip", t0, 4).retry_after, rate::inf_duration);  // over the burst
}

TEST(KeyedLimiter, SizeNeverExceedsMaxKeysUnderAKeyFlood) {
  rate::keyed_limiter<std::string> kl({.limit = rate::limit(1), .burst = 1, .max_keys = 500});
  for (int i = 0; i < 200000; ++i) (void)kl.allow_n(key("k", i), t0, 1);
  EXPECT_LE(kl.size(), 500u);
  EXPECT_GT(kl.size(), 250u);  // the bound is used, not just respected
  EXPECT_GE(kl.stats().evicted_live, 200000u - 500u);
}

TEST(KeyedLimiter, ATrackedClientKeepsItsLimitDuringAFlood) {
  // A flood of one-off keys evicts by least-recent use: a client calling in
  // between keeps its (empty) bucket and stays limited.
  rate::keyed_limiter<std::string> kl({.limit = rate::limit(1), .burst = 1, .max_keys = 2000,
                                       .idle_ttl = 1h, .shards = 4});
  sl::clock::time_point t = t0;
  EXPECT_TRUE(kl.allow_n("victim", t, 1));
  int allowed = 0;
  for (int i = 0; i < 20000; ++i) {
    t += 1us;
    (void)kl.allow_n(key("flood", i), t, 1);
    if (i % 10 == 0) allowed += kl.allow_n("victim", t, 1) ? 1 : 0;
  }
  // 20 ms passed: at 1/s the victim earns nothing more.
  EXPECT_EQ(allowed, 0);
}

TEST(KeyedLimiter, StaleEntriesAreReusedAndCleanedUp) {
  rate::keyed_limiter<std::string> kl({.limit = rate::limit(100), .burst = 1, .max_keys = 64,
                                       .idle_ttl = 1s, .shards = 1});
  for (int i = 0; i < 40; ++i) (void)kl.allow_n(key("old", i), t0, 1);
  EXPECT_EQ(kl.size(), 40u);
  EXPECT_EQ(kl.cleanup(t0 + 500ms), 0u);  // not stale yet
  EXPECT_EQ(kl.cleanup(t0 + 1s), 40u);
  EXPECT_EQ(kl.size(), 0u);
  EXPECT_EQ(kl.stats().evicted_stale, 40u);
  for (int i = 0; i < 40; ++i) (void)kl.allow_n(key("new", i), t0 + 2s, 1);
  for (int i = 0; i < 40; ++i) (void)kl.allow_n(key("newer", i), t0 + 4s, 1);
  EXPECT_LE(kl.size(), 64u);
  EXPECT_EQ(kl.stats().evicted_live, 0u);  // the stale "new" entries made room
}

TEST(KeyedLimiter, InfAllowsEverythingAndStoresNothing) {
  rate::keyed_limiter<std::string> kl({.limit = rate::inf, .burst = 0, .max_keys = 1});
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(kl.allow_n(key("k", i), t0, 1000));
  EXPECT_EQ(kl.size(), 0u);
}

TEST(KeyedLimiter, InvalidOptionsThrowInvalidArgument) {
  using kl = rate::keyed_limiter<std::string>;
  EXPECT_THROW(kl({.limit = rate::limit(0), .burst = 1}), std::invalid_argument);
  EXPECT_THROW(kl({.limit = rate::limit(-1), .burst = 1}), std::invalid_argument);
  EXPECT_THROW(kl({.limit = rate::limit(1), .burst = -1}), std::invalid_argument);
  EXPECT_THROW(kl({.limit = rate::limit(1), .burst = 1, .max_keys = 0}), std::invalid_argument);
  EXPECT_THROW(kl({.limit = rate::limit(1), .burst = 1, .max_keys = 1, .idle_ttl = 0s}),
               std::invalid_argument);
  kl ok({.limit = rate::limit(1), .burst = 1});
  EXPECT_THROW((void)ok.allow_n("x", t0, -1), std::invalid_argument);
}

// Churn with eviction from many tasks on all workers: keys from a space larger
// than max_keys, random times moving forward; the bound must hold at every
// look, and a key's grants within one tracked stretch can never exceed its
// burst plus its rate.
TEST(KeyedLimiterStress, ChurnWithEvictionKeepsTheBound) {
  sl_test::run_checked([]() -> sl::task<void> {
    rate::keyed_limiter<std::string> kl({.limit = rate::limit(1000), .burst = 3, .max_keys = 300,
                                         .idle_ttl = 5ms, .shards = 8});
    std::atomic<bool> bound_ok{true};
    sl::wait_group wg;
    constexpr int tasks = 8;
    wg.add(tasks);
    auto churn = [&](int id) -> sl::task<void> {
      std::mt19937 rng(static_cast<unsigned>(id));
      sl::clock::time_point t = t0;
      for (int i = 0; i < 5000; ++i) {
        t += std::chrono::microseconds(rng() % 50);
        (void)kl.allow_n(key("key", rng() % 2000), t, 1);
        if (kl.size() > 300) bound_ok = false;
        if (i % 500 == 0) (void)kl.cleanup(t);
        if (rng() % 64 == 0) co_await sl::yield();
      }
      wg.done();
    };
    for (int i = 0; i < tasks; ++i) sl::go(churn, i);
    co_await wg.wait();
    EXPECT_TRUE(bound_ok.load());
    EXPECT_LE(kl.size(), 300u);
  });
}

TEST(KeyedLimiterStress, OneHotKeyFromManyTasksNeverGrantsMoreThanBurstPlusRate) {
  sl_test::run_checked([]() -> sl::task<void> {
    rate::keyed_limiter<std::string> kl({.limit = rate::limit(100), .burst = 10, .max_keys = 10});
    std::atomic<int> granted{0};
    sl::wait_group wg;
    constexpr int tasks = 6;
    wg.add(tasks);
    auto hammer = [&](int id) -> sl::task<void> {
      for (int i = 0; i < 3000; ++i) {
        // Everyone within the same 100 ms window (times can go backwards
        // between tasks, which Go's limiter tolerates).
        const auto t = t0 + std::chrono::microseconds((i * 33 + id) % 100000);
        if (kl.allow_n("hot", t, 1)) granted.fetch_add(1);
        if (i % 128 == 0) co_await sl::yield();
      }
      wg.done();
    };
    for (int i = 0; i < tasks; ++i) sl::go(hammer, i);
    co_await wg.wait();
    // 10 burst + 100/s x 0.1 s = 20, plus what times going backwards credit
    // again (Go's rule): bounded by the spread of times the tasks use.
    EXPECT_GE(granted.load(), 10);
    EXPECT_LE(granted.load(), 10 + 10 * tasks);
  });
}
