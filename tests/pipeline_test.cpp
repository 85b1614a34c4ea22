#include <sluice/pipeline.hpp>
#include <sluice/sluice.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <climits>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;
using sl_test::run_checked;

namespace {

// Sends 0..n-1 on `in` (stopping early when ctx is done), counts the sends
// that completed, then closes `in`: a well-behaved producer of a stage's input.
sl::task<void> feed(sl::context ctx, sl::chan<int> in, int n, std::atomic<int>* sent) {
  for (int i = 0; i < n; ++i) {
    auto r = co_await sl::select(sl::send(in, i), sl::done(ctx));
    if (r.index() != 0) break;
    if (sent != nullptr) sent->fetch_add(1);
  }
  in.close();
}

template <class T>
sl::task<std::vector<T>> collect(sl::chan<T> out) {
  std::vector<T> v;
  while (auto x = co_await out.recv()) v.push_back(*x);
  co_return v;
}

// A task-returning function whose items take different numbers of
// scheduling rounds, so workers finish out of order.
sl::task<int> slow_square(int x) {
  for (int y = (x * 7919) % 7; y > 0; --y) co_await sl::yield();
  co_return x * x;
}

std::vector<int> squares(int n) {
  std::vector<int> v(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i * i;
  return v;
}

}  // namespace

TEST(Pipeline, UnorderedDeliversEveryItemExactlyOnce) {
  run_checked([]() -> sl::task<void> {
    sl::chan<int> in;
    auto feeder = sl::spawn(feed, sl::context::background(), in, 300, nullptr);
    auto s = sl::stage(sl::context::background(), in, {.workers = 4, .out_capacity = 4}, slow_square);
    auto got = co_await collect(s.out);
    co_await s.wait();
    co_await feeder.join();
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, squares(300));
    EXPECT_FALSE(s.failed());
  });
}

TEST(Pipeline, OrderedKeepsInputOrderUnderRandomPerItemYields) {
  run_checked([]() -> sl::task<void> {
    sl::chan<int> in;
    auto feeder = sl::spawn(feed, sl::context::background(), in, 300, nullptr);
    auto s = sl::stage(sl::context::background(), in, {.workers = 4, .ordered = true}, slow_square);
    const auto got = co_await collect(s.out);
    co_await s.wait();
    co_await feeder.join();
    EXPECT_EQ(got, squares(300));
  });
}

TEST(Pipeline, OrderedWindowIsBoundedByWorkers) {
  run_checked([]() -> sl::task<void> {
    constexpr int workers = 3;
    sl::chan<int> in;
    sl::chan<int> gate;  // holds item 0 until closed
    std::atomic<int> sent{0};
    std::atomic<int> started{0};
    auto cc = sl::with_cancel(sl::context::background());
    auto fn = [gate, &started](int x) -> sl::task<int> {
      started.fetch_add(1);
      if (x == 0) co_await gate.recv();
      co_return x;
    };
    auto feeder = sl::spawn(feed, cc.ctx, in, 1000, &sent);
    auto s = sl::stage(cc.ctx, in, {.workers = workers, .ordered = true}, fn);
    // Poll (bounded by time, like until_parked) until the window is full.
    const auto give_up = sl::clock::now() + 10s;
    while (started.load() < workers && sl::clock::now() < give_up) co_await sl::yield();
    for (int i = 0; i < 200; ++i) co_await sl::yield();
    // Item 0 is stuck: only `workers` items were started, and at most one more
    // was taken from the input (held by the dispatcher).
    EXPECT_EQ(started.load(), workers);
    EXPECT_LE(sent.load(), workers + 1);
    EXPECT_FALSE(s.out.try_recv().has_value());
    gate.close();
    for (int want = 0; want < 10; ++want) EXPECT_EQ(*co_await s.out.recv(), want);
    cc.cancel();
    co_await collect(s.out);
    co_await s.wait();
    co_await feeder.join();
  });
}

TEST(Pipeline, OutClosesWhenInputClosesAndDrains) {
  run_checked([]() -> sl::task<void> {
    sl::chan<int> in(3);
    for (int i = 1; i <= 3; ++i) EXPECT_TRUE(in.try_send(i));
    in.close();
    auto s = sl::stage(sl::context::background(), in, {.workers = 2, .out_capacity = 8},
                       [](int x) { return std::to_string(x); });
    auto got = co_await collect(s.out);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, (std::vector<std::string>{"1", "2", "3"}));
    co_await s.wait();
    EXPECT_TRUE(s.done());
    EXPECT_TRUE(s.out.closed());
  });
}

TEST(Pipeline, AcceptsEveryFunctionForm) {
  run_checked([]() -> sl::task<void> {
    auto run_one = [](auto fn) -> sl::task<std::vector<int>> {
      sl::chan<int> in(5);
      for (int i = 0; i < 5; ++i) in.try_send(i);
      in.close();
      auto s = sl::stage(sl::context::background(), in, {.workers = 2, .ordered = true}, fn);
      auto v = co_await collect(s.out);
      co_await s.wait();
      co_return v;
    };
    const std::vector<int> want{0, 2, 4, 6, 8};
    auto plain = [](int x) { return 2 * x; };
    auto with_ctx = [](sl::context ctx, int x) {
      EXPECT_FALSE(ctx.err());
      return 2 * x;
    };
    auto async = [](int x) -> sl::task<int> { co_return 2 * x; };
    auto async_ctx = [](sl::context, int x) -> sl::task<int> {
      co_await sl::yield();
      co_return 2 * x;
    };
    EXPECT_EQ(co_await run_one(plain), want);
    EXPECT_EQ(co_await run_one(with_ctx), want);
    EXPECT_EQ(co_await run_one(async), want);
    EXPECT_EQ(co_await run_one(async_ctx), want);
  });
}

TEST(Pipeline, FilterPassesOnOnlyTheMatchingItems) {
  run_checked([]() -> sl::task<void> {
    for (int round = 0; round < 2; ++round) {
      const bool ordered = round == 1;
      sl::chan<int> in;
      auto feeder = sl::spawn(feed, sl::context::background(), in, 100, nullptr);
      auto is_even = [](const int& x) -> sl::task<bool> {
        for (int y = x % 3; y > 0; --y) co_await sl::yield();
        co_return x % 2 == 0;
      };
      auto s = sl::filter(sl::context::background(), in, {.workers = 3, .ordered = ordered}, is_even);
      auto got = co_await collect(s.out);
      co_await s.wait();
      co_await feeder.join();
      if (!ordered) std::sort(got.begin(), got.end());
      std::vector<int> want;
      for (int i = 0; i < 100; i += 2) want.push_back(i);
      EXPECT_EQ(got, want) << (ordered ? "ordered" : "unordered");
    }
  });
}

TEST(Pipeline, GenerateSendsUntilNulloptThenCloses) {
  run_checked([]() -> sl::task<void> {
    auto count_to_5 = [n = 0]() mutable -> std::optional<int> {
      if (n == 5) return std::nullopt;
      return n++;
    };
    auto g = sl::generate(sl::context::background(), 2, count_to_5);
    const auto got = co_await collect(g.out);
    EXPECT_EQ(got, (std::vector<int>{0, 1, 2, 3, 4}));
    co_await g.wait();
  });
}

TEST(Pipeline, CancelMidStreamEndsEveryTaskAndClosesOut) {
  run_checked([]() -> sl::task<void> {
    auto cc = sl::with_cancel(sl::context::background());
    auto numbers = sl::generate(cc.ctx, [n = 0]() mutable -> std::optional<int> { return n++; });
    auto sq = sl::stage(cc.ctx, numbers.out, {.workers = 3}, slow_square);
    auto kept = sl::filter(cc.ctx, sq.out, {.workers = 2, .out_capacity = 4, .ordered = true},
                           [](const int& x) { return x % 2 == 0; });
    for (int i = 0; i < 10; ++i) {
      const auto v = co_await kept.out.recv();
      EXPECT_TRUE(v.has_value());
    }
    cc.cancel();
    co_await collect(kept.out);  // whatever was in flight, then closed
    co_await numbers.wait();
    co_await sq.wait();
    co_await kept.wait();
    EXPECT_TRUE(numbers.out.closed());
    EXPECT_TRUE(sq.out.closed());
    EXPECT_FALSE(kept.failed());
  });
}

TEST(Pipeline, CancelReachesAFunctionWaitingOnItsContext) {
  run_checked([]() -> sl::task<void> {
    auto cc = sl::with_cancel(sl::context::background());
    sl::chan<int> in(1);
    in.try_send(1);
    auto forever = [](sl::context ctx, int x) -> sl::task<int> {
      co_await ctx.done();
      co_return x;
    };
    auto s = sl::stage(cc.ctx, in, {.workers = 2}, forever);
    const bool parked = co_await sl_test::until_parked("context done", 1);
    EXPECT_TRUE(parked);
    cc.cancel();
    co_await collect(s.out);
    co_await s.wait();
    EXPECT_TRUE(s.done());
  });
}

TEST(Pipeline, ExceptionCancelsTheStageAndWaitRethrows) {
  run_checked([]() -> sl::task<void> {
    auto producer = sl::with_cancel(sl::context::background());
    sl::chan<int> in;
    auto feeder = sl::spawn(feed, producer.ctx, in, INT_MAX, nullptr);
    auto fn = [](int x) -> int {
      if (x == 5) throw std::runtime_error("bad item 5");
      return x;
    };
    auto s = sl::stage(sl::context::background(), in, {.workers = 2, .ordered = true}, fn);
    auto down = sl::stage(sl::context::background(), s.out, {.workers = 2}, [](int x) { return x; });
    const auto got = co_await collect(down.out);  // downstream ends when the failed stage closes
    EXPECT_LE(got.size(), 5u);
    EXPECT_TRUE(s.failed());
    EXPECT_NE(s.error(), nullptr);
    EXPECT_FALSE(down.failed());
    bool threw = false;
    try {
      co_await s.wait();
    } catch (const std::runtime_error& e) {
      threw = std::string(e.what()) == "bad item 5";
    }
    EXPECT_TRUE(threw);
    co_await down.wait();
    producer.cancel();  // nobody reads `in` any more: the producer must stop on its context
    co_await feeder.join();
  });
}

TEST(Pipeline, InvalidOptionsThrowInvalidArgument) {
  run_checked([]() -> sl::task<void> {
    sl::chan<int> in;
    auto id = [](int x) { return x; };
    EXPECT_THROW(sl::stage(sl::context::background(), in, {.workers = 0}, id), std::invalid_argument);
    EXPECT_THROW(sl::stage(sl::context::background(), in, {.out_capacity = -1}, id), std::invalid_argument);
    EXPECT_THROW(sl::generate(sl::context::background(), -1, []() -> std::optional<int> { return 1; }),
                 std::invalid_argument);
    co_return;
  });
}

TEST(Pipeline, StageOutsideATaskThrowsLogicError) {
  sl::chan<int> in;
  EXPECT_THROW(sl::stage(sl::context::background(), in, {}, [](int x) { return x; }), std::logic_error);
}

// Cancellation storm: chains of generate -> stage -> filter with random worker
// counts, order and per-item yields, cancelled after a random number of items
// and yields (sometimes before anything was read, sometimes by a failing
// item). Hunts a task left parked on a channel nobody serves, an output
// closed twice or never, and order broken by a cancellation.
TEST(PipelineStress, CancellationStorm) {
  run_checked([]() -> sl::task<void> {
    std::minstd_rand rng(42);
    for (int iter = 0; iter < 40; ++iter) {
      auto cc = sl::with_cancel(sl::context::background());
      const int fail_at = (rng() % 4 == 0) ? static_cast<int>(rng() % 50) : -1;
      const bool ordered = rng() % 2 == 0;
      auto numbers = sl::generate(cc.ctx, static_cast<std::int64_t>(rng() % 3),
                                  [n = 0]() mutable -> std::optional<int> { return n++; });
      auto work = [fail_at](sl::context ctx, int x) -> sl::task<int> {
        for (int y = (x * 31) % 4; y > 0 && !ctx.err(); --y) co_await sl::yield();
        if (x == fail_at) throw std::runtime_error("fail");
        co_return x;
      };
      auto mid = sl::stage(cc.ctx, numbers.out,
                           {.workers = 1 + static_cast<int>(rng() % 4),
                            .out_capacity = static_cast<std::int64_t>(rng() % 3),
                            .ordered = ordered},
                           work);
      auto last = sl::filter(cc.ctx, mid.out, {.workers = 1 + static_cast<int>(rng() % 3), .ordered = ordered},
                             [](const int& x) { return x % 3 != 0; });
      const int read = static_cast<int>(rng() % 40);
      int prev = -1;
      for (int i = 0; i < read; ++i) {
        auto v = co_await last.out.recv();
        if (!v) break;
        if (ordered) {
          EXPECT_GT(*v, prev);
        }
        prev = *v;
      }
      for (unsigned y = rng() % 5; y > 0; --y) co_await sl::yield();
      cc.cancel();
      while (auto v = co_await last.out.recv()) {
        if (ordered) {
          EXPECT_GT(*v, prev);
        }
        prev = *v;
      }
      co_await numbers.wait();
      try {
        co_await mid.wait();
      } catch (const std::runtime_error&) {
        EXPECT_GE(fail_at, 0);
      }
      co_await last.wait();
      EXPECT_TRUE(numbers.done() && mid.done() && last.done());
    }
  });
}
