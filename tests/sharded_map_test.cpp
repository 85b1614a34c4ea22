// sharded_map: the map operations and their return values, compute_if_absent's
// once-per-absent-key rule, visit in place, whole-map walks, the shard count's
// validation, use outside a runtime — plus stress tests from tasks on several
// workers (lost updates, a key's value diverging from its owner's model,
// compute_if_absent running twice).
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/runtime.hpp>
#include <sluice/sharded_map.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <map>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace sl = sluice;

TEST(ShardedMap, FindReturnsACopyOfTheStoredValue) {
  sl::sharded_map<std::string, std::string> m;
  EXPECT_EQ(m.find("a"), std::nullopt);
  m.insert_or_assign("a", "alpha");
  auto v = m.find("a");
  EXPECT_EQ(v, "alpha");
  *v = "changed";  // a copy: the map keeps its own value
  EXPECT_EQ(m.find("a"), "alpha");
  EXPECT_TRUE(m.contains("a"));
  EXPECT_FALSE(m.contains("b"));
}

TEST(ShardedMap, InsertOrAssignReportsWhetherItInserted) {
  sl::sharded_map<int, int> m;
  EXPECT_TRUE(m.insert_or_assign(1, 10));
  EXPECT_FALSE(m.insert_or_assign(1, 11));
  EXPECT_EQ(m.find(1), 11);
}

TEST(ShardedMap, TryEmplaceLeavesAPresentValueAlone) {
  sl::sharded_map<int, std::string> m;
  EXPECT_TRUE(m.try_emplace(1, 3, 'x'));
  EXPECT_FALSE(m.try_emplace(1, "other"));
  EXPECT_EQ(m.find(1), "xxx");
}

TEST(ShardedMap, EraseReportsWhetherTheKeyWasPresent) {
  sl::sharded_map<int, int> m;
  m.insert_or_assign(1, 1);
  EXPECT_TRUE(m.erase(1));
  EXPECT_FALSE(m.erase(1));
  EXPECT_FALSE(m.contains(1));
}

TEST(ShardedMap, ComputeIfAbsentCallsOnce) {
  sl::sharded_map<int, int> m;
  int calls = 0;
  auto make = [&calls]() {
    ++calls;
    return 42;
  };
  EXPECT_EQ(m.compute_if_absent(7, make), 42);
  EXPECT_EQ(m.compute_if_absent(7, make), 42);
  EXPECT_EQ(calls, 1);
}

TEST(ShardedMap, ComputeIfAbsentPassesTheKeyWhenFnTakesIt) {
  sl::sharded_map<int, std::string> m;
  EXPECT_EQ(m.compute_if_absent(5, [](const int& k) { return std::to_string(k * 2); }), "10");
}

TEST(ShardedMap, ComputeIfAbsentDoesNotCallFnForAPresentKey) {
  sl::sharded_map<int, int> m;
  m.insert_or_assign(1, 5);
  bool called = false;
  EXPECT_EQ(m.compute_if_absent(1, [&called]() {
    called = true;
    return 0;
  }),
            5);
  EXPECT_FALSE(called);
}

TEST(ShardedMap, ComputeIfAbsentStoresNothingWhenFnThrows) {
  sl::sharded_map<int, int> m;
  EXPECT_THROW(m.compute_if_absent(1, []() -> int { throw std::runtime_error("no"); }),
               std::runtime_error);
  EXPECT_FALSE(m.contains(1));
  EXPECT_EQ(m.compute_if_absent(1, []() { return 2; }), 2);  // and the lock was released
}

TEST(ShardedMap, VisitModifiesTheValueInPlace) {
  sl::sharded_map<std::string, std::vector<int>> m;
  m.insert_or_assign("k", std::vector<int>{1});
  EXPECT_TRUE(m.visit("k", [](std::vector<int>& v) { v.push_back(2); }));
  EXPECT_EQ(m.find("k"), (std::vector<int>{1, 2}));
  EXPECT_FALSE(m.visit("missing", [](std::vector<int>&) { FAIL(); }));
}

TEST(ShardedMap, CvisitReadsWithoutCopying) {
  sl::sharded_map<int, std::string> m;
  m.insert_or_assign(1, "one");
  std::size_t len = 0;
  const auto& cm = m;
  EXPECT_TRUE(cm.cvisit(1, [&len](const std::string& s) { len = s.size(); }));
  EXPECT_EQ(len, 3U);
  EXPECT_FALSE(cm.cvisit(2, [](const std::string&) { FAIL(); }));
}

TEST(ShardedMap, ForEachSeesEveryEntryOnce) {
  sl::sharded_map<int, int> m(8);
  for (int i = 0; i < 1000; ++i) m.insert_or_assign(i, i);
  std::vector<int> seen(1000);
  m.for_each([&seen](const int& k, int& v) {
    ++seen[static_cast<std::size_t>(k)];
    v = -v;
  });
  int wrong = 0;
  for (int s : seen) wrong += s == 1 ? 0 : 1;
  EXPECT_EQ(wrong, 0);
  long long sum = 0;
  m.cfor_each([&sum](const int&, const int& v) { sum += v; });
  EXPECT_EQ(sum, -499500);
}

TEST(ShardedMap, SizeCountsEveryShardAndClearEmptiesThem) {
  sl::sharded_map<int, int> m(16);
  EXPECT_TRUE(m.empty());
  for (int i = 0; i < 500; ++i) m.insert_or_assign(i, i);
  EXPECT_EQ(m.size(), 500U);
  m.clear();
  EXPECT_EQ(m.size(), 0U);
  EXPECT_FALSE(m.contains(3));
}

TEST(ShardedMap, RejectsAShardCountThatIsNotAPowerOfTwo) {
  EXPECT_THROW((sl::sharded_map<int, int>(0)), std::invalid_argument);
  EXPECT_THROW((sl::sharded_map<int, int>(12)), std::invalid_argument);
  EXPECT_THROW((sl::sharded_map<int, int>(sl::sharded_map<int, int>::max_shards * 2)),
               std::invalid_argument);
  EXPECT_EQ((sl::sharded_map<int, int>(32)).shard_count(), 32U);
}

TEST(ShardedMap, DefaultShardCountIsAPowerOfTwoOfAtLeastSixteen) {
  const std::size_t n = sl::sharded_map<int, int>::default_shard_count();
  EXPECT_GE(n, 16U);
  EXPECT_EQ(n & (n - 1), 0U);
  EXPECT_EQ((sl::sharded_map<int, int>().shard_count()), n);
}

TEST(ShardedMap, SingleShardHoldsEveryKey) {
  sl::sharded_map<int, int> m(1);
  for (int i = 0; i < 100; ++i) m.insert_or_assign(i, i * i);
  EXPECT_EQ(m.size(), 100U);
  EXPECT_EQ(m.find(9), 81);
}

TEST(ShardedMap, WorksWithAWeakHash) {
  // Every key hashes alike: one shard, one bucket chain, still correct.
  struct same_hash {
    std::size_t operator()(int) const noexcept { return 1; }
  };
  sl::sharded_map<int, int, same_hash> m(4);
  for (int i = 0; i < 50; ++i) m.insert_or_assign(i, i);
  EXPECT_EQ(m.size(), 50U);
  EXPECT_EQ(m.find(49), 49);
}

TEST(ShardedMap, WorksInsideARuntimeWithoutSuspending) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::sharded_map<int, int> m;
    m.insert_or_assign(1, 1);
    co_await sl::yield();
    EXPECT_TRUE(m.visit(1, [](int& v) { ++v; }));
    EXPECT_EQ(m.find(1), 2);
  });
}

// ---- stress ---------------------------------------------------------------------

// Tasks on four workers increment a few hot counters with visit (seeded by
// try_emplace) and yield at random between operations. Hunts: a lost update
// (two read-modify-writes interleaving on one value), a try_emplace that
// replaced a counter, a torn read seen through find.
TEST(ShardedMapStress, RacingIncrementsAreNeverLost) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        constexpr int tasks = 32;
        constexpr int rounds = 300;
        constexpr int hot = 5;
        sl::sharded_map<int, long long> m(4);  // few shards: more contention
        std::atomic<int> decreasing{0};
        sl::wait_group wg;
        auto worker = [&](unsigned seed) -> sl::task<void> {
          std::minstd_rand rng(seed);
          long long last[hot] = {};
          for (int i = 0; i < rounds; ++i) {
            const int k = static_cast<int>(rng() % hot);
            m.try_emplace(k, 0LL);
            // A slow read-modify-write: two of them overlapping would lose one.
            EXPECT_TRUE(m.visit(k, [](long long& v) {
              const long long before = v;
              std::atomic<int> spin{0};  // an atomic, so the loop is not optimised away
              while (spin.fetch_add(1, std::memory_order_relaxed) < 64) {
              }
              v = before + 1;
            }));
            // A counter only grows: a smaller value than seen before is a lost update.
            const long long now = m.find(k).value_or(-1);
            if (now < last[k]) decreasing.fetch_add(1);
            last[k] = now;
            if (rng() % 4 == 0) co_await sl::yield();
          }
          wg.done();
        };
        wg.add(tasks);
        for (int t = 0; t < tasks; ++t) sl::go(worker, static_cast<unsigned>(t) + 1U);
        co_await wg.wait();
        long long total = 0;
        m.cfor_each([&total](const int&, const long long& v) { total += v; });
        EXPECT_EQ(total, static_cast<long long>(tasks) * rounds);
        EXPECT_EQ(decreasing.load(), 0);
      },
      sl::runtime_options{.workers = 4});
}

// Each task owns a key range and checks every find against its own model of
// that range while all tasks' writes land in the same shards; readers walk
// the map concurrently. Hunts: an operation that touched the wrong key or
// shard, a rehash racing a reader, size() or for_each disagreeing at the end.
TEST(ShardedMapStress, OwnedKeysMatchTheirOwnersModel) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        constexpr int tasks = 16;
        constexpr int rounds = 400;
        constexpr int keys_per_task = 64;
        sl::sharded_map<int, int> m(8);
        std::atomic<int> mismatches{0};
        std::vector<std::map<int, int>> models(tasks);
        std::atomic<bool> writers_done{false};
        sl::wait_group wg;
        auto owner = [&](int id) -> sl::task<void> {
          std::minstd_rand rng(static_cast<unsigned>(id) * 31U + 5U);
          std::map<int, int>& model = models[static_cast<std::size_t>(id)];
          for (int i = 0; i < rounds; ++i) {
            const int k = id * keys_per_task + static_cast<int>(rng() % keys_per_task);
            switch (rng() % 4) {
              case 0: {
                const bool inserted = m.insert_or_assign(k, i);
                if (inserted != (model.count(k) == 0)) mismatches.fetch_add(1);
                model[k] = i;
                break;
              }
              case 1: {
                const bool erased = m.erase(k);
                if (erased != (model.erase(k) == 1)) mismatches.fetch_add(1);
                break;
              }
              case 2: {
                const int v = m.compute_if_absent(k, [i]() { return -i; });
                auto [it, inserted] = model.try_emplace(k, -i);
                if (v != it->second) mismatches.fetch_add(1);
                break;
              }
              default: {
                auto it = model.find(k);
                const auto v = m.find(k);
                if (it == model.end() ? v.has_value() : v != it->second) mismatches.fetch_add(1);
              }
            }
            if (rng() % 8 == 0) co_await sl::yield();
          }
          wg.done();
        };
        auto reader = [&](int) -> sl::task<void> {
          while (!writers_done.load()) {
            std::size_t n = 0;
            m.cfor_each([&n](const int&, const int&) { ++n; });
            if (n > static_cast<std::size_t>(tasks * keys_per_task)) mismatches.fetch_add(1);
            co_await sl::yield();
          }
          wg.done();
        };
        wg.add(tasks + 2);
        for (int t = 0; t < tasks; ++t) sl::go(owner, t);
        sl::go(reader, 1);
        sl::go(reader, 2);
        // The owners are counted first: wait for them, then stop the readers.
        while (wg.count() > 2) co_await sl::yield();
        writers_done.store(true);
        co_await wg.wait();
        EXPECT_EQ(mismatches.load(), 0);
        std::size_t expected = 0;
        for (const auto& model : models) expected += model.size();
        EXPECT_EQ(m.size(), expected);
        int wrong = 0;
        m.cfor_each([&](const int& k, const int& v) {
          const auto& model = models[static_cast<std::size_t>(k / keys_per_task)];
          auto it = model.find(k);
          if (it == model.end() || it->second != v) ++wrong;
        });
        EXPECT_EQ(wrong, 0);
      },
      sl::runtime_options{.workers = 4});
}

// Rounds in which every task is released at once (one channel close) to call
// compute_if_absent on the same fresh key. Hunts: fn running twice for one key
// (the check and the store not under one exclusive lock), callers of one key
// seeing different values.
TEST(ShardedMapStress, ComputeIfAbsentRunsOncePerKeyUnderRace) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        constexpr int tasks = 8;
        constexpr int rounds = 500;
        // A slow hash widens the window between a miss under the shared lock
        // and the exclusive lock, where another caller can miss too.
        struct slow_hash {
          std::size_t operator()(int k) const noexcept {
            std::atomic<int> spin{0};
            while (spin.fetch_add(1, std::memory_order_relaxed) < 256) {
            }
            return std::hash<int>()(k);
          }
        };
        sl::sharded_map<int, int, slow_hash> m(4);
        std::vector<sl::chan<int>> gates;
        for (int r = 0; r < rounds; ++r) gates.emplace_back(0);
        std::vector<std::atomic<int>> calls(rounds);
        std::vector<std::atomic<int>> first_seen(rounds);
        std::atomic<int> next{1};
        std::atomic<int> disagreements{0};
        sl::wait_group wg;
        auto worker = [&](int) -> sl::task<void> {
          for (int k = 0; k < rounds; ++k) {
            co_await gates[static_cast<std::size_t>(k)].recv();
            const int v = m.compute_if_absent(k, [&calls, &next, k]() {
              calls[static_cast<std::size_t>(k)].fetch_add(1);
              return next.fetch_add(1);
            });
            int expected = 0;
            auto& seen = first_seen[static_cast<std::size_t>(k)];
            if (!seen.compare_exchange_strong(expected, v) && expected != v) {
              disagreements.fetch_add(1);
            }
            wg.done();
          }
        };
        for (int t = 0; t < tasks; ++t) sl::go(worker, t);
        for (int k = 0; k < rounds; ++k) {
          wg.add(tasks);
          gates[static_cast<std::size_t>(k)].close();
          co_await wg.wait();
        }
        int wrong = 0;
        for (auto& c : calls) wrong += c.load() == 1 ? 0 : 1;
        EXPECT_EQ(wrong, 0);
        EXPECT_EQ(disagreements.load(), 0);
      },
      sl::runtime_options{.workers = 4});
}
