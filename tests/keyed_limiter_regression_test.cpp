// Regressions found in review of keyed_limiter: each test failed at 1505c64.
#include <sluice/sluice.hpp>

#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdlib>
#include <functional>
#include <stdexcept>

using namespace std::chrono_literals;
namespace sl = sluice;
namespace rate = sluice::rate;

namespace {

const sl::clock::time_point t0 = sl::clock::time_point{} + 1000s;

// A key whose copy can fail, as std::string's does under memory pressure
// (bad_alloc); 13 stands for "this copy fails".
struct fragile_key {
  int v = 0;
  fragile_key() = default;
  fragile_key(int x) : v(x) {}  // NOLINT: implicit on purpose
  fragile_key(const fragile_key&) = default;
  fragile_key(fragile_key&&) = default;
  fragile_key& operator=(const fragile_key& o) {
    if (o.v == 13) throw std::bad_alloc();
    v = o.v;
    return *this;
  }
  fragile_key& operator=(fragile_key&&) = default;
  bool operator==(const fragile_key&) const = default;
};
struct fragile_hash {
  std::size_t operator()(const fragile_key& k) const noexcept { return std::hash<int>{}(k.v); }
};

[[noreturn]] void throw_then_call_again() {
  rate::keyed_limiter<fragile_key, fragile_hash> kl(
      {.limit = rate::limit(1), .burst = 1, .max_keys = 10, .shards = 1});
  try {
    (void)kl.allow_n(fragile_key(13), t0, 1);
  } catch (const std::bad_alloc&) {
  }
  alarm(5);  // a hang is the failure
  (void)kl.allow_n(fragile_key(1), t0, 1);
  std::exit(0);
}

}  // namespace

// check_n takes the shard's spinlock by hand; an exception from
// find_or_insert (the key's copy, a table allocation in grow/rehash, a
// throwing Hash or Eq) leaves it locked, and every later call on that shard
// spins forever.
TEST(KeyedLimiterRegressionDeathTest, ThrowingInsertLeavesTheShardLocked) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(throw_then_call_again(), ::testing::ExitedWithCode(0), "");
}

// A new Go limiter starts at the zero time with 0 tokens, and its first
// advance saturates at 2^63-1 ns (292 years): for a tiny limit the first
// bucket is not full. keyed_limiter's new key starts with a full bucket
// instead, so it allows what Go (and sluice::rate::limiter) refuses.
TEST(KeyedLimiterRegression, NewKeyMatchesANewGoLimiterForATinyLimit) {
  const rate::limit lim(1e-11);  // one event per ~3000 years
  rate::limiter plain(lim, 1);
  rate::keyed_limiter<int> kl({.limit = lim, .burst = 1, .max_keys = 10});
  const bool want = plain.allow_n(t0, 1);
  EXPECT_EQ(kl.allow_n(7, t0, 1), want);
}

// check_n stores used_ns = t even when t is earlier than the key's last use
// (times may go backwards; Go's limiter tolerates it). The key then looks stale
// although its bucket is still empty, is forgotten, and comes back full:
// allowed where Go's limiter for that key refuses, with idle_ttl >= burst/limit.
TEST(KeyedLimiterRegression, AnOlderTimeMakesABusyKeyLookStale) {
  const rate::limit lim(1);  // burst/limit = 1 s = idle_ttl
  rate::keyed_limiter<int> kl({.limit = lim, .burst = 1, .max_keys = 10, .idle_ttl = 1s, .shards = 1});
  rate::limiter plain(lim, 1);
  EXPECT_TRUE(kl.allow_n(1, t0 + 100s, 1));
  EXPECT_TRUE(plain.allow_n(t0 + 100s, 1));
  EXPECT_FALSE(kl.allow_n(1, t0 + 50s, 1));  // a late caller's older time
  EXPECT_FALSE(plain.allow_n(t0 + 50s, 1));
  // 100 ms after its last use, with an empty bucket: not stale.
  EXPECT_EQ(kl.cleanup(t0 + 100s + 100ms), 0u);
  const bool want = plain.allow_n(t0 + 100s + 200ms, 1);
  EXPECT_FALSE(want);
  EXPECT_EQ(kl.allow_n(1, t0 + 100s + 200ms, 1), want);
}
