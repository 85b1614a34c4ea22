// chan<T>: Go's channel semantics — unbuffered hand-off, buffered FIFO, close
// rules, the non-blocking twins, size/capacity — and stress tests for many
// producers and consumers.
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/introspection.hpp>
#include <sluice/runtime.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

using sl_test::tasks_in;
using sl_test::until_parked;

// Yields until `flag` is set; false if that never happens.
sl::task<bool> until_set(const std::atomic<bool>* flag) {
  for (int i = 0; i < 200'000; ++i) {
    if (flag->load()) co_return true;
    co_await sl::yield();
  }
  co_return false;
}

sl::task<void> send_then_flag(sl::chan<int> c, int v, std::atomic<bool>* done) {
  co_await c.send(v);
  done->store(true);
}

sl::task<void> recv_into(sl::chan<int> c, std::optional<int>* out, sl::wait_group* wg) {
  *out = co_await c.recv();
  wg->done();
}

sl::task<void> send_expect_closed(sl::chan<int> c, int v, std::atomic<int>* threw,
                                  sl::wait_group* wg) {
  try {
    co_await c.send(v);
  } catch (const sl::channel_closed&) {
    threw->fetch_add(1);
  }
  wg->done();
}

}  // namespace

// ---- unbuffered: a rendezvous ----------------------------------------------------

TEST(Chan, UnbufferedSendCompletesOnlyWhenAReceiverTakesTheValue) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch;
    std::atomic<bool> sent{false};
    sl::go(send_then_flag, ch, 42, &sent);
    const bool parked = co_await until_parked("chan send", 1);
    EXPECT_TRUE(parked);
    EXPECT_FALSE(sent.load());
    EXPECT_EQ(ch.size(), 0u);  // nothing is buffered: the value waits with its sender
    const std::optional<int> v = co_await ch.recv();
    EXPECT_EQ(v, std::optional<int>(42));
    const bool completed = co_await until_set(&sent);
    EXPECT_TRUE(completed);
  });
}

TEST(Chan, UnbufferedRecvWaitsForASender) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch;
    std::optional<int> got;
    sl::wait_group wg;
    wg.add(1);
    sl::go(recv_into, ch, &got, &wg);
    const bool parked = co_await until_parked("chan receive", 1);
    EXPECT_TRUE(parked);
    EXPECT_FALSE(got.has_value());
    co_await ch.send(7);
    co_await wg.wait();
    EXPECT_EQ(got, std::optional<int>(7));
  });
}

TEST(Chan, UnbufferedTrySendFailsWithoutAWaitingReceiver) {
  sl::chan<int> ch;
  EXPECT_FALSE(ch.try_send(1));
  EXPECT_EQ(ch.size(), 0u);
  EXPECT_EQ(ch.try_recv(), std::nullopt);
}

TEST(Chan, TrySendHandsTheValueToAParkedReceiver) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch;
    std::optional<int> got;
    sl::wait_group wg;
    wg.add(1);
    sl::go(recv_into, ch, &got, &wg);
    const bool parked = co_await until_parked("chan receive", 1);
    EXPECT_TRUE(parked);
    EXPECT_TRUE(ch.try_send(11));
    co_await wg.wait();
    EXPECT_EQ(got, std::optional<int>(11));
  });
}

TEST(Chan, TryRecvTakesTheValueOfAParkedSender) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch;
    std::atomic<bool> sent{false};
    sl::go(send_then_flag, ch, 5, &sent);
    const bool parked = co_await until_parked("chan send", 1);
    EXPECT_TRUE(parked);
    EXPECT_EQ(ch.try_recv(), std::optional<int>(5));
    const bool completed = co_await until_set(&sent);
    EXPECT_TRUE(completed);
  });
}

// ---- buffered: FIFO ------------------------------------------------------------

TEST(Chan, BufferedChannelIsFifo) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch(8);
    for (int i = 0; i < 8; ++i) co_await ch.send(i);
    EXPECT_EQ(ch.size(), 8u);
    for (int i = 0; i < 8; ++i) {
      const std::optional<int> v = co_await ch.recv();
      EXPECT_EQ(v, std::optional<int>(i));
    }
    EXPECT_EQ(ch.size(), 0u);
  });
}

TEST(Chan, BufferedFifoSurvivesWrapAround) {
  // head and tail chase each other around the ring many times.
  sl::chan<int> ch(3);
  int next_in = 0;
  int next_out = 0;
  for (int round = 0; round < 100; ++round) {
    while (ch.try_send(next_in)) ++next_in;
    const int take = 1 + round % 3;
    for (int k = 0; k < take; ++k) {
      EXPECT_EQ(ch.try_recv(), std::optional<int>(next_out));
      ++next_out;
    }
  }
  EXPECT_EQ(ch.size(), static_cast<std::size_t>(next_in - next_out));
}

TEST(Chan, BufferedSendSuspendsOnlyWhenFull) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch(2);
    std::atomic<bool> third_sent{false};
    sl::go([](sl::chan<int> c, std::atomic<bool>* done) -> sl::task<void> {
      co_await c.send(0);
      co_await c.send(1);
      co_await c.send(2);  // the buffer is full: parks here
      done->store(true);
    }, ch, &third_sent);
    const bool parked = co_await until_parked("chan send", 1);
    EXPECT_TRUE(parked);
    EXPECT_EQ(ch.size(), 2u);
    EXPECT_FALSE(third_sent.load());
    const std::optional<int> first = co_await ch.recv();
    EXPECT_EQ(first, std::optional<int>(0));
    const bool completed = co_await until_set(&third_sent);
    EXPECT_TRUE(completed);
  });
}

TEST(Chan, RecvFromAFullBufferAdmitsTheFirstBlockedSender) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch(1);
    EXPECT_TRUE(ch.try_send(100));
    std::atomic<bool> sent{false};
    sl::go(send_then_flag, ch, 101, &sent);
    const bool parked = co_await until_parked("chan send", 1);
    EXPECT_TRUE(parked);
    EXPECT_EQ(ch.try_recv(), std::optional<int>(100));
    // The blocked sender's value moved into the freed slot.
    EXPECT_EQ(ch.size(), 1u);
    const bool completed = co_await until_set(&sent);
    EXPECT_TRUE(completed);
    EXPECT_EQ(ch.try_recv(), std::optional<int>(101));
  });
}

TEST(Chan, BlockedSendersAreServedInArrivalOrder) {
  sl_test::run_checked([]() -> sl::task<void> {
    for (const int capacity : {0, 2}) {
      sl::chan<int> ch(capacity);
      for (int i = 0; i < capacity; ++i) EXPECT_TRUE(ch.try_send(i));
      std::atomic<bool> done[5] = {};
      for (int i = 0; i < 5; ++i) {
        sl::go(send_then_flag, ch, capacity + i, &done[i]);
        const bool parked = co_await until_parked("chan send", static_cast<std::size_t>(i + 1));
        EXPECT_TRUE(parked);
      }
      for (int i = 0; i < capacity + 5; ++i) {
        const std::optional<int> v = co_await ch.recv();
        EXPECT_EQ(v, std::optional<int>(i)) << "capacity " << capacity;
      }
      for (auto& d : done) {
        const bool completed = co_await until_set(&d);
        EXPECT_TRUE(completed);
      }
    }
  });
}

TEST(Chan, BlockedReceiversAreServedInArrivalOrder) {
  sl_test::run_checked([]() -> sl::task<void> {
    for (const int capacity : {0, 3}) {
      sl::chan<int> ch(capacity);
      std::optional<int> got[5];
      sl::wait_group wg;
      wg.add(5);
      for (int i = 0; i < 5; ++i) {
        sl::go(recv_into, ch, &got[i], &wg);
        const bool parked =
            co_await until_parked("chan receive", static_cast<std::size_t>(i + 1));
        EXPECT_TRUE(parked);
      }
      for (int i = 0; i < 5; ++i) co_await ch.send(i);
      co_await wg.wait();
      for (int i = 0; i < 5; ++i) EXPECT_EQ(got[i], std::optional<int>(i)) << "capacity " << capacity;
    }
  });
}

// ---- close ----------------------------------------------------------------------

TEST(Chan, ReceiversDrainTheBufferAfterCloseThenGetNullopt) {
  sl_test::run_checked([]() -> sl::task<void> {
    sl::chan<int> ch(4);
    co_await ch.send(1);
    co_await ch.send(2);
    ch.close();
    EXPECT_TRUE(ch.closed());
    EXPECT_EQ(ch.size(), 2u);
    const std::optional<int> a = co_await ch.recv();
    const std::optional<int> b = co_await ch.recv();
    const std::optional<int> c = co_await ch.recv();
    const std::optional<int> d = co_await ch.recv();
    EXPECT_EQ(a, std::optional<int>(1));
    EXPECT_EQ(b, std::optional<int>(2));
    EXPECT_EQ(c, std::nullopt);
    EXPECT_EQ(d, std::nullopt);  // stays closed
  });
}

TEST(Chan, SendOnAClosedChannelThrowsChannelClosed) {
  sl_test::run_checked([]() -> sl::task<void> {
    for (const int capacity : {0, 4}) {
      sl::chan<int> ch(capacity);
      ch.close();
      bool threw = false;
      try {
        co_await ch.send(1);
      } catch (const sl::channel_closed&) {
        threw = true;
      }
      EXPECT_TRUE(threw) << "capacity " << capacity;
      EXPECT_EQ(ch.size(), 0u);
    }
  });
}

TEST(Chan, ChannelClosedIsALogicError) {
  sl::chan<int> ch;
  ch.close();
  EXPECT_THROW(ch.try_send(1), std::logic_error);
}

TEST(Chan, ClosingTwiceThrows) {
  sl::chan<int> ch(1);
  ch.close();
  EXPECT_THROW(ch.close(), sl::channel_closed);
  EXPECT_TRUE(ch.closed());
}

TEST(Chan, CloseWakesAllReceivers) {
  sl_test::run_checked([]() -> sl::task<void> {
    for (const int capacity : {0, 4}) {
      sl::chan<int> ch(capacity);
      constexpr int receivers = 20;
      std::optional<int> got[receivers];
      for (auto& g : got) g = -1;
      sl::wait_group wg;
      wg.add(receivers);
      for (int i = 0; i < receivers; ++i) sl::go(recv_into, ch, &got[i], &wg);
      const bool parked = co_await until_parked("chan receive", receivers);
      EXPECT_TRUE(parked);
      ch.close();
      co_await wg.wait();
      for (const auto& g : got) EXPECT_EQ(g, std::nullopt) << "capacity " << capacity;
    }
  });
}

TEST(Chan, CloseWakesAllSendersWithChannelClosed) {
  sl_test::run_checked([]() -> sl::task<void> {
    for (const int capacity : {0, 2}) {
      sl::chan<int> ch(capacity);
      for (int i = 0; i < capacity; ++i) EXPECT_TRUE(ch.try_send(-1));
      constexpr int senders = 20;
      std::atomic<int> threw{0};
      sl::wait_group wg;
      wg.add(senders);
      for (int i = 0; i < senders; ++i) sl::go(send_expect_closed, ch, i, &threw, &wg);
      const bool parked = co_await until_parked("chan send", senders);
      EXPECT_TRUE(parked);
      ch.close();
      co_await wg.wait();
      EXPECT_EQ(threw.load(), senders) << "capacity " << capacity;
      // What was buffered before close stays; no blocked sender's value got in.
      for (int i = 0; i < capacity; ++i) EXPECT_EQ(ch.try_recv(), std::optional<int>(-1));
      EXPECT_EQ(ch.try_recv(), std::nullopt);
    }
  });
}

// ---- the non-blocking twins ------------------------------------------------------

TEST(Chan, TryOperationsWorkOutsideARuntime) {
  EXPECT_FALSE(sl::in_runtime());
  sl::chan<std::string> ch(2);
  EXPECT_TRUE(ch.try_send("a"));
  EXPECT_TRUE(ch.try_send("b"));
  EXPECT_FALSE(ch.try_send("c"));
  EXPECT_EQ(ch.size(), 2u);
  EXPECT_EQ(ch.capacity(), 2u);
  EXPECT_EQ(ch.try_recv(), std::optional<std::string>("a"));
  ch.close();
  EXPECT_THROW(ch.try_send("d"), sl::channel_closed);
  EXPECT_EQ(ch.try_recv(), std::optional<std::string>("b"));
  EXPECT_EQ(ch.try_recv(), std::nullopt);
}

TEST(Chan, TryOperationsNeverSuspend) {
  // One worker: a task started here can only run if this task suspends.
  sl_test::run_checked(
      []() -> sl::task<void> {
        std::atomic<bool> other_ran{false};
        sl::go([](std::atomic<bool>* r) -> sl::task<void> {
          r->store(true);
          co_return;
        }, &other_ran);
        sl::chan<int> unbuffered;
        sl::chan<int> full(1);
        EXPECT_TRUE(full.try_send(1));
        for (int i = 0; i < 1000; ++i) {
          EXPECT_FALSE(unbuffered.try_send(i));
          EXPECT_FALSE(full.try_send(i));
          EXPECT_EQ(unbuffered.try_recv(), std::nullopt);
        }
        EXPECT_FALSE(other_ran.load());
        const bool ran = co_await until_set(&other_ran);
        EXPECT_TRUE(ran);
      },
      sl::runtime_options{.workers = 1});
}

TEST(Chan, ReadyRecvAndSendDoNotSuspend) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        std::atomic<bool> other_ran{false};
        sl::go([](std::atomic<bool>* r) -> sl::task<void> {
          r->store(true);
          co_return;
        }, &other_ran);
        sl::chan<int> ch(4);
        for (int i = 0; i < 4; ++i) co_await ch.send(i);
        for (int i = 0; i < 4; ++i) {
          const std::optional<int> v = co_await ch.recv();
          EXPECT_EQ(v, std::optional<int>(i));
        }
        EXPECT_FALSE(other_ran.load());
        const bool ran = co_await until_set(&other_ran);
        EXPECT_TRUE(ran);
      },
      sl::runtime_options{.workers = 1});
}

// ---- handles, sizes, values ------------------------------------------------------------

TEST(Chan, SizeAndCapacityAreLenAndCap) {
  sl::chan<int> unbuffered;
  EXPECT_EQ(unbuffered.capacity(), 0u);
  EXPECT_EQ(unbuffered.size(), 0u);
  sl::chan<int> ch(5);
  EXPECT_EQ(ch.capacity(), 5u);
  for (std::size_t i = 0; i < 5; ++i) {
    EXPECT_EQ(ch.size(), i);
    EXPECT_TRUE(ch.try_send(static_cast<int>(i)));
  }
  EXPECT_EQ(ch.size(), 5u);
  ch.close();
  EXPECT_EQ(ch.size(), 5u);  // closing keeps the buffered values
  EXPECT_EQ(ch.capacity(), 5u);
}

TEST(Chan, NegativeOrHugeCapacityThrowsInvalidArgument) {
  volatile std::int64_t negative = -1;  // not a constant: the check runs at run time
  volatile std::int64_t huge = (std::int64_t{1} << 30) + 1;
  EXPECT_THROW(sl::chan<int>{negative}, std::invalid_argument);
  EXPECT_THROW(sl::chan<int>{huge}, std::invalid_argument);
}

TEST(Chan, CopiesShareOneChannel) {
  sl::chan<int> a(1);
  const sl::chan<int> b = a;  // NOLINT: the copy is the point
  EXPECT_TRUE(a == b);
  EXPECT_FALSE(a == sl::chan<int>(1));
  EXPECT_TRUE(b.try_send(3));
  EXPECT_EQ(a.size(), 1u);
  EXPECT_EQ(a.try_recv(), std::optional<int>(3));
  b.close();
  EXPECT_TRUE(a.closed());
}

TEST(Chan, CarriesMoveOnlyValues) {
  sl_test::run_checked([]() -> sl::task<void> {
    for (const int capacity : {0, 2}) {
      sl::chan<std::unique_ptr<int>> ch(capacity);
      sl::go([](sl::chan<std::unique_ptr<int>> c) -> sl::task<void> {
        for (int i = 0; i < 10; ++i) co_await c.send(std::make_unique<int>(i));
        c.close();
      }, ch);
      int expect = 0;
      while (std::optional<std::unique_ptr<int>> v = co_await ch.recv()) {
        EXPECT_TRUE(*v != nullptr);
        if (*v) {
          EXPECT_EQ(**v, expect);
        }
        ++expect;
      }
      EXPECT_EQ(expect, 10) << "capacity " << capacity;
    }
  });
}

TEST(Chan, ValuesLeftInTheBufferAreDestroyedWithTheChannel) {
  const auto probe = std::make_shared<int>(0);
  {
    sl::chan<std::shared_ptr<int>> ch(4);
    for (int i = 0; i < 3; ++i) EXPECT_TRUE(ch.try_send(probe));
    EXPECT_EQ(ch.try_recv(), std::optional<std::shared_ptr<int>>(probe));
    EXPECT_EQ(probe.use_count(), 3);  // two buffered + ours
  }
  EXPECT_EQ(probe.use_count(), 1);
}

TEST(Chan, ValuesMoveAcrossWorkers) {
  // Ping-pong over two unbuffered channels on two workers: every hand-off wakes
  // the peer, often on the other worker.
  sl_test::run_checked(
      []() -> sl::task<void> {
        sl::chan<int> ping;
        sl::chan<int> pong;
        sl::go([](sl::chan<int> in, sl::chan<int> out) -> sl::task<void> {
          while (std::optional<int> v = co_await in.recv()) co_await out.send(*v + 1);
          out.close();
        }, ping, pong);
        int v = 0;
        for (int i = 0; i < 10000; ++i) {
          co_await ping.send(v);
          const std::optional<int> back = co_await pong.recv();
          EXPECT_EQ(back, std::optional<int>(v + 1));
          v = back.value_or(v) + 1;
        }
        ping.close();
        const std::optional<int> end = co_await pong.recv();
        EXPECT_EQ(end, std::nullopt);
        EXPECT_EQ(v, 20000);
      },
      sl::runtime_options{.workers = 2});
}

// ---- stress ---------------------------------------------------------------------------
//
// Hunts: lost or duplicated values when senders and receivers park and wake on
// different workers; a receiver woken by close racing a sender that claims it; the
// buffer refilled from a blocked sender while another receiver arrives.

namespace {

struct mpmc_result {
  std::vector<std::vector<int>> received;  // per consumer, in receive order
  int produced = 0;
};

sl::task<void> producer(sl::chan<int> ch, int id, int count, sl::wait_group* wg) {
  std::minstd_rand rng(static_cast<unsigned>(id) * 7919u + 1u);
  for (int i = 0; i < count; ++i) {
    if (rng() % 4 == 0) co_await sl::yield();
    co_await ch.send(id * count + i);
  }
  wg->done();
}

sl::task<void> consumer(sl::chan<int> ch, int id, std::vector<int>* out, sl::wait_group* wg) {
  std::minstd_rand rng(static_cast<unsigned>(id) * 104729u + 3u);
  while (std::optional<int> v = co_await ch.recv()) {
    out->push_back(*v);
    if (rng() % 4 == 0) co_await sl::yield();
  }
  wg->done();
}

void many_producers_consumers(int capacity) {
  constexpr int producers = 8;
  constexpr int consumers = 8;
  constexpr int per_producer = 20000;
  std::vector<std::vector<int>> received(consumers);
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        sl::chan<int> ch(capacity);
        sl::wait_group prod;
        sl::wait_group cons;
        prod.add(producers);
        cons.add(consumers);
        for (int c = 0; c < consumers; ++c) sl::go(consumer, ch, c, &received[c], &cons);
        for (int p = 0; p < producers; ++p) sl::go(producer, ch, p, per_producer, &prod);
        co_await prod.wait();
        ch.close();
        co_await cons.wait();
      },
      sl::runtime_options{.workers = 2});
  std::vector<int> all;
  for (const auto& r : received) {
    // Values of one producer arrive at one consumer in the order they were sent.
    std::vector<int> last(producers, -1);
    for (const int v : r) {
      const int p = v / per_producer;
      EXPECT_GT(v, last[p]) << "per-producer order broken";
      last[p] = v;
    }
    all.insert(all.end(), r.begin(), r.end());
  }
  std::sort(all.begin(), all.end());
  ASSERT_EQ(all.size(), static_cast<std::size_t>(producers * per_producer));
  for (int i = 0; i < producers * per_producer; ++i) {
    ASSERT_EQ(all[i], i) << "value lost or duplicated";
  }
}

}  // namespace

TEST(ChanStress, ManyProducersAndConsumersOnABufferedChannelLoseNothing) {
  many_producers_consumers(16);
}

TEST(ChanStress, ManyProducersAndConsumersOnAnUnbufferedChannelLoseNothing) {
  many_producers_consumers(0);
}

TEST(ChanStress, CloseRacingBlockedSendersAndReceivers) {
  // Each round, senders and receivers pile up on a channel while it is closed at
  // a random moment. Every sender either delivered its value (received exactly
  // once) or threw channel_closed; every receiver ends with nullopt.
  std::minstd_rand rng(12345);
  sl_test::run_checked(
      [&]() -> sl::task<void> {
        for (int round = 0; round < 2000; ++round) {
          sl::chan<int> ch(round % 3 == 0 ? 0 : round % 3);
          constexpr int senders = 16;
          constexpr int receivers = 16;
          std::atomic<int> threw{0};
          std::vector<std::vector<int>> got(receivers);
          sl::wait_group wg;
          wg.add(senders + receivers);
          for (int r = 0; r < receivers; ++r) sl::go(consumer, ch, r, &got[r], &wg);
          for (int s = 0; s < senders; ++s) sl::go(send_expect_closed, ch, s, &threw, &wg);
          const int delay = static_cast<int>(rng() % 8);
          for (int i = 0; i < delay; ++i) co_await sl::yield();
          ch.close();
          co_await wg.wait();
          std::vector<int> all;
          for (const auto& g : got) all.insert(all.end(), g.begin(), g.end());
          std::sort(all.begin(), all.end());
          EXPECT_TRUE(std::adjacent_find(all.begin(), all.end()) == all.end())
              << "a value was received twice";
          EXPECT_EQ(static_cast<int>(all.size()) + threw.load(), senders) << "round " << round;
        }
      },
      sl::runtime_options{.workers = 2});
}
