// select: recv/send/after/done/default cases with Go's semantics — a uniformly
// random choice among ready cases, losing cases that never take or deliver a
// value, default that never suspends — and stress tests for the races between
// selects, close, cancellation and timers.
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/introspection.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/time.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <memory>
#include <optional>
#include <random>
#include <string_view>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

using sl_test::tasks_in;
using sl_test::until_parked;

// Outcome of one select run by a helper task.
struct outcome {
  std::size_t index = 99;
  std::optional<int> value;
  bool threw = false;
};

sl::task<void> select_recv2(sl::chan<int> a, sl::chan<int> b, outcome* out, sl::wait_group* wg) {
  auto r = co_await sl::select(sl::recv(a), sl::recv(b));
  out->index = r.index();
  out->value = r.index() == 0 ? r.get<0>() : r.get<1>();
  wg->done();
}

sl::task<void> select_send2(sl::chan<int> a, int va, sl::chan<int> b, int vb, outcome* out,
                            sl::wait_group* wg) {
  try {
    auto r = co_await sl::select(sl::send(a, va), sl::send(b, vb));
    out->index = r.index();
  } catch (const sl::channel_closed&) {
    out->threw = true;
  }
  wg->done();
}

sl::task<void> select_send_or_recv(sl::chan<int> a, int va, sl::chan<int> b, outcome* out,
                                   sl::wait_group* wg) {
  try {
    auto r = co_await sl::select(sl::send(a, va), sl::recv(b));
    out->index = r.index();
    if (r.index() == 1) out->value = r.get<1>();
  } catch (const sl::channel_closed&) {
    out->threw = true;
  }
  wg->done();
}

// True if `ch`'s lock is free (the lock a select takes on each of its channels).
template <class T>
bool lock_is_free(const sl::chan<T>& ch) {
  if (!ch.state()->mu.try_lock()) return false;
  ch.state()->mu.unlock();
  return true;
}

}  // namespace

// ---- choosing among ready cases ----------------------------------------------------

TEST(Select, ChoosesUniformlyBetweenTwoReadyRecvCases) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a(1);
    sl::chan<int> b(1);
    EXPECT_TRUE(a.try_send(0));
    EXPECT_TRUE(b.try_send(1));
    std::array<int, 2> chosen{};
    constexpr int rounds = 10000;
    for (int i = 0; i < rounds; ++i) {
      auto r = co_await sl::select(sl::recv(a), sl::recv(b));
      const std::size_t idx = r.index();
      EXPECT_LT(idx, 2u);
      if (idx >= 2) continue;
      ++chosen[idx];
      const std::optional<int> v = idx == 0 ? r.get<0>() : r.get<1>();
      EXPECT_EQ(v, std::optional<int>(static_cast<int>(idx)));
      EXPECT_TRUE((idx == 0 ? a : b).try_send(static_cast<int>(idx)));  // ready again
    }
    EXPECT_GT(chosen[0], rounds * 3 / 10);
    EXPECT_GT(chosen[1], rounds * 3 / 10);
  });
}

TEST(Select, ChoosesUniformlyAmongReadyCasesOfEveryKind) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> in(1);
    sl::chan<int> out(1);
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    cancel();
    std::array<int, 4> chosen{};
    constexpr int rounds = 10000;
    for (int i = 0; i < rounds; ++i) {
      if (in.size() == 0) {
        EXPECT_TRUE(in.try_send(i));
      }
      if (out.size() == 1) {
        EXPECT_TRUE(out.try_recv().has_value());
      }
      auto r = co_await sl::select(sl::recv(in), sl::send(out, i), sl::after(0ms), sl::done(ctx));
      const std::size_t idx = r.index();
      EXPECT_LT(idx, 4u);
      if (idx < 4) ++chosen[idx];
      // Only the winner moved a value.
      EXPECT_EQ(in.size(), idx == 0 ? 0u : 1u);
      EXPECT_EQ(out.size(), idx == 1 ? 1u : 0u);
    }
    for (std::size_t k = 0; k < 4; ++k) EXPECT_GT(chosen[k], rounds * 18 / 100) << "case " << k;
  });
}

TEST(Select, ReadyCaseAlwaysBeatsDefault) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a(1);
    for (int i = 0; i < 1000; ++i) {
      EXPECT_TRUE(a.try_send(i));
      auto r = co_await sl::select(sl::recv(a), sl::default_case());
      EXPECT_EQ(r.index(), 0u);
      EXPECT_EQ(r.get<0>(), std::optional<int>(i));
    }
  });
}

TEST(Select, DefaultIsChosenWhenNothingIsReady) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> empty(1);
    sl::chan<int> full(1);
    EXPECT_TRUE(full.try_send(1));
    sl::chan<int> unbuffered;
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    auto r = co_await sl::select(sl::recv(empty), sl::send(full, 2), sl::send(unbuffered, 3),
                                 sl::recv(unbuffered), sl::after(1h), sl::done(ctx),
                                 sl::default_case());
    EXPECT_EQ(r.index(), 6u);
    // Nothing moved.
    EXPECT_EQ(empty.size(), 0u);
    EXPECT_EQ(full.try_recv(), std::optional<int>(1));
    cancel();
  });
}

TEST(Select, WithDefaultNeverSuspends) {
  // One worker: another task can only run if this one suspends.
  sl_test::run_checked(
      []() -> sl::task<void> {
        std::atomic<bool> other_ran{false};
        sl::go([](std::atomic<bool>* r) -> sl::task<void> {
          r->store(true);
          co_return;
        }, &other_ran);
        sl::chan<int> a;
        sl::chan<int> b(1);
        EXPECT_TRUE(b.try_send(0));
        for (int i = 0; i < 1000; ++i) {
          auto r = co_await sl::select(sl::recv(a), sl::send(b, i), sl::after(1h),
                                       sl::default_case());
          EXPECT_EQ(r.index(), 3u);
        }
        EXPECT_FALSE(other_ran.load());
        for (int i = 0; i < 1000 && !other_ran.load(); ++i) co_await sl::yield();
        EXPECT_TRUE(other_ran.load());
      },
      sl::runtime_options{.workers = 1});
}

TEST(Select, ReadyCaseDoesNotSuspend) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        std::atomic<bool> other_ran{false};
        sl::go([](std::atomic<bool>* r) -> sl::task<void> {
          r->store(true);
          co_return;
        }, &other_ran);
        sl::chan<int> a(1);
        sl::chan<int> never;
        for (int i = 0; i < 1000; ++i) {
          EXPECT_TRUE(a.try_send(i));
          auto r = co_await sl::select(sl::recv(never), sl::recv(a));
          EXPECT_EQ(r.index(), 1u);
        }
        EXPECT_FALSE(other_ran.load());
        for (int i = 0; i < 1000 && !other_ran.load(); ++i) co_await sl::yield();
        EXPECT_TRUE(other_ran.load());
      },
      sl::runtime_options{.workers = 1});
}

// ---- waiting -------------------------------------------------------------------------

TEST(Select, ParkedSelectWakesWithTheValueOfTheCaseThatFired) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a;
    sl::chan<int> b;
    outcome o;
    sl::wait_group wg;
    wg.add(1);
    sl::go(select_recv2, a, b, &o, &wg);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    co_await b.send(17);
    co_await wg.wait();
    EXPECT_EQ(o.index, 1u);
    EXPECT_EQ(o.value, std::optional<int>(17));
  });
}

TEST(Select, LosingRecvCaseTakesNothing) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a;
    sl::chan<int> b;
    outcome o;
    sl::wait_group wg;
    wg.add(1);
    sl::go(select_recv2, a, b, &o, &wg);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    EXPECT_TRUE(a.try_send(1));  // the select takes this one
    co_await wg.wait();
    EXPECT_EQ(o.index, 0u);
    // The select's receive on b is gone: nobody can take a value from b now.
    EXPECT_FALSE(b.try_send(2));
  });
}

TEST(Select, LosingSendCaseDeliversNothing) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a;
    sl::chan<int> b;
    outcome o;
    sl::wait_group wg;
    wg.add(1);
    sl::go(select_send2, a, 10, b, 20, &o, &wg);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    EXPECT_EQ(a.try_recv(), std::optional<int>(10));
    co_await wg.wait();
    EXPECT_EQ(o.index, 0u);
    EXPECT_EQ(b.try_recv(), std::nullopt);  // 20 was never offered again
  });
}

TEST(Select, SendCaseWaitsForAReceiver) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a;
    sl::chan<int> b;
    outcome o;
    sl::wait_group wg;
    wg.add(1);
    sl::go(select_send_or_recv, a, 33, b, &o, &wg);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    const std::optional<int> v = co_await a.recv();
    EXPECT_EQ(v, std::optional<int>(33));
    co_await wg.wait();
    EXPECT_EQ(o.index, 0u);
  });
}

TEST(Select, SendCaseFillsAFreeBufferSlot) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a(1);
    sl::chan<int> never;
    auto r = co_await sl::select(sl::recv(never), sl::send(a, 4));
    EXPECT_EQ(r.index(), 1u);
    EXPECT_EQ(a.try_recv(), std::optional<int>(4));
  });
}

TEST(Select, SameChannelInTwoRecvCasesDeliversOnce) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a;
    outcome o;
    sl::wait_group wg;
    wg.add(1);
    sl::go(select_recv2, a, a, &o, &wg);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    EXPECT_TRUE(a.try_send(8));
    co_await wg.wait();
    EXPECT_EQ(o.value, std::optional<int>(8));
    EXPECT_FALSE(a.try_send(9));  // the other case's node left with the select
  });
}

TEST(Select, SendAndRecvOnOneChannelPairWithAMirrorSelect) {
  // Go allows a select to offer both directions on one channel; two such selects
  // must pair (one sends, the other receives), never with themselves.
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> c;
    outcome x;
    outcome y;
    sl::wait_group wg;
    wg.add(2);
    sl::go(select_send_or_recv, c, 1, c, &x, &wg);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    sl::go(select_send_or_recv, c, 2, c, &y, &wg);
    co_await wg.wait();
    EXPECT_NE(x.index, y.index);
    const std::optional<int> got = x.index == 1 ? x.value : y.value;
    EXPECT_EQ(got, std::optional<int>(x.index == 1 ? 2 : 1));
  });
}

TEST(Select, SingleCaseSelectBehavesLikeThePlainOperation) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a(1);
    auto s = co_await sl::select(sl::send(a, 5));
    EXPECT_EQ(s.index(), 0u);
    auto r = co_await sl::select(sl::recv(a));
    EXPECT_EQ(r.get<0>(), std::optional<int>(5));
  });
}

// ---- close --------------------------------------------------------------------------

TEST(Select, RecvCaseOnAClosedChannelIsReadyWithNullopt) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> closed;
    closed.close();
    sl::chan<int> never;
    auto r = co_await sl::select(sl::recv(never), sl::recv(closed));
    EXPECT_EQ(r.index(), 1u);
    EXPECT_EQ(r.get<1>(), std::nullopt);
  });
}

TEST(Select, CloseWakesAParkedRecvCaseWithNullopt) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a;
    sl::chan<int> b;
    outcome o;
    o.value = -1;
    sl::wait_group wg;
    wg.add(1);
    sl::go(select_recv2, a, b, &o, &wg);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    b.close();
    co_await wg.wait();
    EXPECT_EQ(o.index, 1u);
    EXPECT_EQ(o.value, std::nullopt);
    EXPECT_FALSE(a.try_send(1));  // the losing recv(a) is gone
  });
}

TEST(Select, CloseWakesAParkedSendCaseWithChannelClosed) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a;
    sl::chan<int> b;
    outcome o;
    sl::wait_group wg;
    wg.add(1);
    sl::go(select_send_or_recv, a, 1, b, &o, &wg);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    a.close();
    co_await wg.wait();
    EXPECT_TRUE(o.threw);
    EXPECT_FALSE(b.try_send(2));  // the losing recv(b) is gone
  });
}

TEST(Select, SendCaseOnAClosedChannelThrowsAndReleasesTheChannel) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> closed(1);
    closed.close();
    sl::chan<int> other;
    bool threw = false;
    try {
      co_await sl::select(sl::send(closed, 1));
    } catch (const sl::channel_closed&) {
      threw = true;
    }
    EXPECT_TRUE(threw);
    // Checked through the lock itself so that a leaked lock fails the test
    // instead of hanging it.
    const bool free_after_single = lock_is_free(closed);
    EXPECT_TRUE(free_after_single)
        << "select threw channel_closed from its poll with the case locks still held; the "
           "channel is now unusable (any operation spins forever)";
    bool threw2 = false;
    if (free_after_single) {
      try {
        co_await sl::select(sl::recv(other), sl::send(closed, 2));
      } catch (const sl::channel_closed&) {
        threw2 = true;
      }
      EXPECT_TRUE(threw2);
      EXPECT_TRUE(lock_is_free(closed));
      EXPECT_TRUE(lock_is_free(other)) << "the other case's channel lock leaked too";
    }
    if (free_after_single && lock_is_free(other)) {
      EXPECT_TRUE(closed.closed());
      EXPECT_EQ(closed.try_recv(), std::nullopt);
    }
  });
}

// ---- after and done -------------------------------------------------------------------

TEST(Select, AfterCaseFiresWhenNothingElseIsReady) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> never;
    const auto start = sl::clock::now();
    auto r = co_await sl::select(sl::recv(never), sl::after(3ms));
    const auto elapsed = sl::clock::now() - start;
    EXPECT_EQ(r.index(), 1u);
    EXPECT_GE(elapsed, 3ms);
    EXPECT_FALSE(never.try_send(1));  // the losing recv left the channel
  });
}

TEST(Select, AtCaseFiresAtATimePoint) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> never;
    const auto when = sl::clock::now() + 2ms;
    auto r = co_await sl::select(sl::recv(never), sl::at(when));
    EXPECT_EQ(r.index(), 1u);
    EXPECT_GE(sl::clock::now(), when);
  });
}

TEST(Select, AfterZeroIsReadyImmediately) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> never;
    auto r = co_await sl::select(sl::recv(never), sl::after(0ms), sl::default_case());
    EXPECT_EQ(r.index(), 1u);
  });
}

TEST(Select, AfterTheLongestDurationDoesNotFire) {
  // now + duration::max() must not wrap around into the past.
  sl_test::run_checked([]() -> sl::task<void> {
    auto r = co_await sl::select(sl::after(sl::clock::duration::max()), sl::after(2ms));
    EXPECT_EQ(r.index(), 1u) << "after(duration::max()) fired at once";
  });
}

TEST(Select, LosingAfterCaseDoesNotFireLater) {
  // A select that won on a channel must leave no live timer: the next select in
  // the same frame would otherwise be woken by the stale one.
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> a(1);
    sl::chan<int> never;
    for (int i = 0; i < 100; ++i) {
      EXPECT_TRUE(a.try_send(i));
      auto r = co_await sl::select(sl::recv(a), sl::after(1ms));
      EXPECT_EQ(r.index(), 0u);
    }
    const auto start = sl::clock::now();
    auto r = co_await sl::select(sl::recv(never), sl::after(20ms));
    EXPECT_EQ(r.index(), 1u);
    EXPECT_GE(sl::clock::now() - start, 20ms);
  });
}

TEST(Select, DoneCaseFiresWhenTheContextIsCancelled) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    sl::chan<int> never;
    sl::go([](sl::cancel_func c) -> sl::task<void> {
      co_await sl::sleep_for(2ms);
      c();
    }, cancel);
    auto r = co_await sl::select(sl::recv(never), sl::done(ctx));
    EXPECT_EQ(r.index(), 1u);
    EXPECT_EQ(ctx.err(), sl::errc::canceled);
  });
}

TEST(Select, DoneCaseOfACancelledContextIsReady) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    cancel();
    auto r = co_await sl::select(sl::done(ctx), sl::default_case());
    EXPECT_EQ(r.index(), 0u);
  });
}

TEST(Select, DoneCaseFiresAtTheDeadline) {
  sl_test::run_checked([]() -> sl::task<void> {
    const auto deadline = sl::clock::now() + 3ms;
    auto [ctx, cancel] = sl::with_deadline(sl::context::background(), deadline);
    sl::chan<int> never;
    auto r = co_await sl::select(sl::recv(never), sl::done(ctx));
    EXPECT_EQ(r.index(), 1u);
    EXPECT_GE(sl::clock::now(), deadline);
    EXPECT_EQ(ctx.err(), sl::errc::deadline_exceeded);
    cancel();
  });
}

TEST(Select, DoneCaseIsReadyOnceTheDeadlineHasPassed) {
  // err() reports deadline_exceeded as soon as the deadline has passed; a done
  // case polled after that moment must agree with it.
  sl_test::run_checked([]() -> sl::task<void> {
    const auto deadline = sl::clock::now() + 1ms;
    auto [ctx, cancel] = sl::with_deadline(sl::context::background(), deadline);
    while (sl::clock::now() < deadline) {
      // Busy-wait past the deadline without calling err() (which would expire it).
    }
    auto r = co_await sl::select(sl::done(ctx), sl::default_case());
    EXPECT_EQ(r.index(), 0u)
        << "done(ctx) not ready although the deadline passed; err() says "
        << ctx.err().message();
    cancel();
  });
}

TEST(Select, DoneCaseOfBackgroundNeverFires) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto r = co_await sl::select(sl::done(sl::context::background()), sl::after(2ms));
    EXPECT_EQ(r.index(), 1u);
  });
}

// ---- stress ----------------------------------------------------------------------------

TEST(SelectStress, LosingCasesNeitherTakeNorDeliverValues) {
  // Hunts: a select woken by one channel while another channel's waker is in the
  // middle of claiming it (the loser must skip it and hand its value to someone
  // else); selects with send cases offering one value on two channels.
  // Receivers select over a and b (or recv plainly); senders select over
  // send(a, v) and send(b, v) (or send plainly). Every value arrives exactly once.
  for (const int capacity : {0, 2}) {
    constexpr int senders = 8;
    constexpr int receivers = 8;
    constexpr int per_sender = 20000;
    std::vector<std::vector<int>> got(receivers);
    sl_test::run_checked(
        [&]() -> sl::task<void> {
          sl::chan<int> a(capacity);
          sl::chan<int> b(capacity);
          sl::wait_group sending;
          sl::wait_group receiving;
          sending.add(senders);
          receiving.add(receivers);
          for (int r = 0; r < receivers; ++r) {
            sl::go([](sl::chan<int> x, sl::chan<int> y, int id, std::vector<int>* out,
                      sl::wait_group* wg) -> sl::task<void> {
              std::minstd_rand rng(static_cast<unsigned>(id) + 1);
              bool x_open = true;
              bool y_open = true;
              while (x_open || y_open) {
                if (x_open && y_open && id % 4 != 0) {
                  auto res = co_await sl::select(sl::recv(x), sl::recv(y));
                  const std::optional<int> v = res.index() == 0 ? res.get<0>() : res.get<1>();
                  if (v) {
                    out->push_back(*v);
                  } else {
                    (res.index() == 0 ? x_open : y_open) = false;
                  }
                } else {
                  const bool use_x = x_open && (!y_open || rng() % 2 == 0);
                  const std::optional<int> v = co_await (use_x ? x : y).recv();
                  if (v) {
                    out->push_back(*v);
                  } else {
                    (use_x ? x_open : y_open) = false;
                  }
                }
                if (rng() % 8 == 0) co_await sl::yield();
              }
              wg->done();
            }, a, b, r, &got[r], &receiving);
          }
          for (int s = 0; s < senders; ++s) {
            sl::go([](sl::chan<int> x, sl::chan<int> y, int id, sl::wait_group* wg)
                       -> sl::task<void> {
              std::minstd_rand rng(static_cast<unsigned>(id) * 31 + 7);
              for (int i = 0; i < per_sender; ++i) {
                const int v = id * per_sender + i;
                if (id % 4 != 0) {
                  co_await sl::select(sl::send(x, v), sl::send(y, v));
                } else {
                  co_await (rng() % 2 == 0 ? x : y).send(v);
                }
                if (rng() % 8 == 0) co_await sl::yield();
              }
              wg->done();
            }, a, b, s, &sending);
          }
          co_await sending.wait();
          a.close();
          b.close();
          co_await receiving.wait();
        },
        sl::runtime_options{.workers = 2});
    std::vector<int> all;
    for (const auto& g : got) all.insert(all.end(), g.begin(), g.end());
    std::sort(all.begin(), all.end());
    ASSERT_EQ(all.size(), static_cast<std::size_t>(senders * per_sender))
        << "capacity " << capacity;
    for (int i = 0; i < senders * per_sender; ++i) {
      ASSERT_EQ(all[i], i) << "capacity " << capacity << ": value lost or duplicated";
    }
  }
}

TEST(SelectStress, CrossingSelectsOnTheSameTwoChannels) {
  // Hunts: deadlock or a lost wake-up between two selects that lock the same two
  // channels (send on a/recv on b against send on b/recv on a), each polling while
  // the other is enqueuing. On unbuffered channels every rendezvous completes one
  // select of each side, so each side finishes exactly `rounds` selects, and what
  // one side sent is exactly what the other received.
  constexpr int pairs = 4;
  constexpr int rounds = 20000;
  struct side {
    std::vector<int> sent;
    std::vector<int> received;
  };
  std::vector<side> xs(pairs);
  std::vector<side> ys(pairs);
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        sl::chan<int> a;
        sl::chan<int> b;
        sl::wait_group wg;
        wg.add(2 * pairs);
        auto body = [](sl::chan<int> out, sl::chan<int> in, int base, side* me,
                       sl::wait_group* w) -> sl::task<void> {
          for (int i = 0; i < rounds; ++i) {
            const int v = base + i;
            auto r = co_await sl::select(sl::send(out, v), sl::recv(in));
            if (r.index() == 0) {
              me->sent.push_back(v);
            } else {
              const std::optional<int> got = r.get<1>();
              EXPECT_TRUE(got.has_value());
              me->received.push_back(got.value_or(-1));
            }
          }
          w->done();
        };
        for (int p = 0; p < pairs; ++p) {
          sl::go(body, a, b, p * rounds, &xs[p], &wg);
          sl::go(body, b, a, (pairs + p) * rounds, &ys[p], &wg);
        }
        co_await wg.wait();
      },
      sl::runtime_options{.workers = 2});
  std::vector<int> x_sent, x_received, y_sent, y_received;
  for (int p = 0; p < pairs; ++p) {
    x_sent.insert(x_sent.end(), xs[p].sent.begin(), xs[p].sent.end());
    x_received.insert(x_received.end(), xs[p].received.begin(), xs[p].received.end());
    y_sent.insert(y_sent.end(), ys[p].sent.begin(), ys[p].sent.end());
    y_received.insert(y_received.end(), ys[p].received.begin(), ys[p].received.end());
    EXPECT_EQ(xs[p].sent.size() + xs[p].received.size(), static_cast<std::size_t>(rounds));
  }
  std::sort(x_sent.begin(), x_sent.end());
  std::sort(x_received.begin(), x_received.end());
  std::sort(y_sent.begin(), y_sent.end());
  std::sort(y_received.begin(), y_received.end());
  EXPECT_EQ(x_sent, y_received);
  EXPECT_EQ(y_sent, x_received);
  EXPECT_EQ(x_sent.size() + y_sent.size(), static_cast<std::size_t>(pairs * rounds));
}

TEST(SelectStress, SelectsRacingClose) {
  // Hunts: close() claiming a select that a sender is claiming at the same time;
  // a select polling a channel that is being closed. Each round, selects over
  // recv(a)/recv(b) and send(a)/recv(b) pile up while a is closed at a random
  // point, then b. Every value a send case delivered was received exactly once;
  // send cases that lost to close threw.
  std::minstd_rand rng(99);
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        for (int round = 0; round < 2000; ++round) {
          sl::chan<int> a(round % 2);
          sl::chan<int> b;
          constexpr int each = 12;
          std::vector<outcome> receivers(each);
          std::vector<outcome> senders(each);
          sl::wait_group wg;
          wg.add(2 * each);
          for (int i = 0; i < each; ++i) {
            sl::go(select_recv2, a, b, &receivers[i], &wg);
            sl::go(select_send_or_recv, a, 1000 + i, b, &senders[i], &wg);
          }
          const int delay = static_cast<int>(rng() % 6);
          for (int i = 0; i < delay; ++i) co_await sl::yield();
          a.close();
          b.close();
          co_await wg.wait();
          std::vector<int> delivered;
          std::vector<int> received;
          for (int i = 0; i < each; ++i) {
            if (!senders[i].threw && senders[i].index == 0) delivered.push_back(1000 + i);
            // Nobody sends on b: its cases can only report the close.
            if (senders[i].index == 1) {
              EXPECT_EQ(senders[i].value, std::nullopt);
            }
            if (receivers[i].index == 1) {
              EXPECT_EQ(receivers[i].value, std::nullopt);
            }
            if (receivers[i].index == 0 && receivers[i].value) {
              received.push_back(*receivers[i].value);
            }
          }
          // A receiver may have picked b's close over a buffered value of a.
          while (std::optional<int> left = a.try_recv()) received.push_back(*left);
          std::sort(delivered.begin(), delivered.end());
          std::sort(received.begin(), received.end());
          EXPECT_EQ(delivered, received) << "round " << round;
        }
      },
      sl::runtime_options{.workers = 2});
}

TEST(SelectStress, RecvSelectsRacingCloseAndPlainSenders) {
  // Hunts: close() claiming a parked select while a sender on the other worker
  // is claiming it too; a select polling a channel that is being closed. (The
  // send-case half of this race is in SelectsRacingClose.) Each round, recv
  // selects over a/b and plain senders on a pile up while a is closed at a random
  // point, then b. Every delivered value is received exactly once; every other
  // sender threw channel_closed.
  std::minstd_rand rng(99);
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        for (int round = 0; round < 2000; ++round) {
          sl::chan<int> a(round % 2);
          sl::chan<int> b;
          constexpr int each = 12;
          std::vector<outcome> receivers(each);
          std::atomic<int> threw{0};
          sl::wait_group wg;
          wg.add(2 * each);
          for (int i = 0; i < each; ++i) {
            sl::go(select_recv2, a, b, &receivers[i], &wg);
            sl::go([](sl::chan<int> c, int v, std::atomic<int>* t,
                      sl::wait_group* w) -> sl::task<void> {
              try {
                co_await c.send(v);
              } catch (const sl::channel_closed&) {
                t->fetch_add(1);
              }
              w->done();
            }, a, 1000 + i, &threw, &wg);
          }
          const int delay = static_cast<int>(rng() % 6);
          for (int i = 0; i < delay; ++i) co_await sl::yield();
          a.close();
          b.close();
          co_await wg.wait();
          std::vector<int> received;
          for (int i = 0; i < each; ++i) {
            if (receivers[i].index == 1) {
              EXPECT_EQ(receivers[i].value, std::nullopt);  // nobody sends on b
            }
            if (receivers[i].index == 0 && receivers[i].value) {
              received.push_back(*receivers[i].value);
            }
          }
          while (std::optional<int> left = a.try_recv()) received.push_back(*left);
          std::sort(received.begin(), received.end());
          EXPECT_TRUE(std::adjacent_find(received.begin(), received.end()) == received.end());
          EXPECT_EQ(static_cast<int>(received.size()) + threw.load(), each) << "round " << round;
        }
      },
      sl::runtime_options{.workers = 2});
}

TEST(SelectStress, CancellationStormAgainstTimersAndValues) {
  // Hunts: a select whose done case, after case and recv case become ready at
  // nearly the same instant on different workers (context cancel from a task,
  // deadline timers, after() timers, a producer's send). 10k selects; contexts
  // are cancelled at random points. Each select reports exactly one winner that
  // is consistent with the world, and values are neither lost nor duplicated.
  constexpr int tasks = 500;
  constexpr int selects_per_task = 20;
  constexpr int contexts = 50;
  std::atomic<long> received_sum{0};
  std::atomic<long> received_count{0};
  std::atomic<long> sent_sum{0};
  std::atomic<long> sent_count{0};
  std::atomic<int> inconsistent{0};
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        sl::chan<int> values;
        std::vector<sl::context> ctxs;
        std::vector<sl::cancel_func> cancels;
        std::minstd_rand rng(4242);
        for (int i = 0; i < contexts; ++i) {
          // A third of them also carry a deadline racing the explicit cancels.
          auto made = i % 3 == 0
                          ? sl::with_timeout(sl::context::background(),
                                             std::chrono::microseconds(rng() % 3000))
                          : sl::with_cancel(sl::context::background());
          ctxs.push_back(made.ctx);
          cancels.push_back(made.cancel);
        }
        auto [stop_ctx, stop] = sl::with_cancel(sl::context::background());
        sl::wait_group producing;
        producing.add(1);
        sl::go([](sl::chan<int> out, sl::context stop_c, std::atomic<long>* sum,
                  std::atomic<long>* count, sl::wait_group* wg) -> sl::task<void> {
          for (int v = 1;; ++v) {
            auto r = co_await sl::select(sl::send(out, v), sl::done(stop_c));
            if (r.index() == 1) break;
            sum->fetch_add(v);
            count->fetch_add(1);
          }
          wg->done();
        }, values, stop_ctx, &sent_sum, &sent_count, &producing);

        sl::wait_group selecting;
        selecting.add(tasks);
        for (int t = 0; t < tasks; ++t) {
          sl::go([](sl::chan<int> in, sl::context ctx, unsigned seed, std::atomic<long>* sum,
                    std::atomic<long>* count, std::atomic<int>* bad,
                    sl::wait_group* wg) -> sl::task<void> {
            std::minstd_rand r(seed);
            for (int i = 0; i < selects_per_task; ++i) {
              const auto d = std::chrono::microseconds(r() % 2000);
              const auto start = sl::clock::now();
              auto res = co_await sl::select(sl::recv(in), sl::after(d), sl::done(ctx));
              switch (res.index()) {
                case 0: {
                  const std::optional<int> v = res.get<0>();
                  if (v) {
                    sum->fetch_add(*v);
                    count->fetch_add(1);
                  } else {
                    bad->fetch_add(1);  // never closed
                  }
                  break;
                }
                case 1:
                  if (sl::clock::now() - start < d) bad->fetch_add(1);
                  break;
                case 2:
                  if (!ctx.err()) bad->fetch_add(1);
                  break;
                default:
                  bad->fetch_add(1);
              }
            }
            wg->done();
          }, values, ctxs[static_cast<std::size_t>(t % contexts)], static_cast<unsigned>(t + 1),
             &received_sum, &received_count, &inconsistent, &selecting);
        }
        // Cancel the contexts in a random order at random moments.
        std::vector<int> order(contexts);
        for (int i = 0; i < contexts; ++i) order[i] = i;
        std::shuffle(order.begin(), order.end(), rng);
        for (const int i : order) {
          const auto pause = std::chrono::microseconds(rng() % 800);
          if (rng() % 2 == 0) {
            co_await sl::sleep_for(pause);
          } else {
            for (int k = 0; k < static_cast<int>(rng() % 50); ++k) co_await sl::yield();
          }
          cancels[static_cast<std::size_t>(i)]();
        }
        co_await selecting.wait();
        stop();
        co_await producing.wait();
      },
      sl::runtime_options{.workers = 2});
  EXPECT_EQ(inconsistent.load(), 0);
  EXPECT_EQ(received_count.load(), sent_count.load());
  EXPECT_EQ(received_sum.load(), sent_sum.load());
}
