#include <sluice/pubsub.hpp>
#include <sluice/sluice.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;
using sl_test::run_checked;
using sl_test::until_parked;

namespace {

// Everything buffered in ch now (without waiting).
std::vector<int> drain(const sl::chan<int>& ch) {
  std::vector<int> out;
  while (auto v = ch.try_recv()) out.push_back(*v);
  return out;
}

sl::task<sl::publish_result> publish_one(sl::broker<int>* b, sl::context ctx, std::string topic, int v) {
  co_return co_await b->publish(ctx, topic, v);
}

}  // namespace

TEST(Broker, PublishToATopicWithoutSubscribersDeliversToNone) {
  sl::broker<int> b;
  const auto r = b.try_publish("nobody", 1);
  EXPECT_EQ(r.delivered + r.dropped + r.disconnected, 0u);
  EXPECT_FALSE(r.error);
  run_checked([&]() -> sl::task<void> {
    const auto p = co_await b.publish("nobody", 2);
    EXPECT_EQ(p.delivered + p.dropped + p.disconnected, 0u);
    EXPECT_FALSE(p.error);
  });
  EXPECT_EQ(b.topic_count(), 0u);
}

TEST(Broker, DeliversACopyToEverySubscriberOfTheTopicOnly) {
  sl::broker<int> b;
  auto a1 = b.subscribe("a");
  auto a2 = b.subscribe("a");
  auto other = b.subscribe("b");
  EXPECT_EQ(b.topic_count(), 2u);
  EXPECT_EQ(b.subscriber_count("a"), 2u);
  const auto r = b.try_publish("a", 7);
  EXPECT_EQ(r.delivered, 2u);
  EXPECT_EQ(drain(a1.channel()), std::vector<int>{7});
  EXPECT_EQ(drain(a2.channel()), std::vector<int>{7});
  EXPECT_TRUE(drain(other.channel()).empty());
}

TEST(Broker, DropNewestCountsWhatWasDropped) {
  sl::broker<int> b;
  auto s = b.subscribe("t", {.buffer = 2, .policy = sl::overflow_policy::drop_newest});
  std::size_t delivered = 0;
  std::size_t dropped = 0;
  for (int i = 1; i <= 5; ++i) {
    const auto r = b.try_publish("t", i);
    delivered += r.delivered;
    dropped += r.dropped;
  }
  EXPECT_EQ(delivered, 2u);
  EXPECT_EQ(dropped, 3u);
  EXPECT_EQ(s.dropped(), 3u);
  EXPECT_EQ(drain(s.channel()), (std::vector<int>{1, 2}));
  EXPECT_TRUE(s.active());
}

TEST(Broker, DropOldestKeepsTheNewest) {
  sl::broker<int> b;
  auto s = b.subscribe("t", {.buffer = 3, .policy = sl::overflow_policy::drop_oldest});
  for (int i = 1; i <= 10; ++i) {
    const auto r = b.try_publish("t", i);
    EXPECT_EQ(r.delivered, 1u);  // the new message always gets in
    EXPECT_EQ(r.dropped, 0u);
  }
  EXPECT_EQ(s.dropped(), 7u);  // 1..7 were discarded to make room
  EXPECT_EQ(drain(s.channel()), (std::vector<int>{8, 9, 10}));
}

TEST(Broker, DisconnectClosesTheSlowSubscribersChannel) {
  sl::broker<int> b;
  auto slow = b.subscribe("t", {.buffer = 2, .policy = sl::overflow_policy::disconnect});
  auto fast = b.subscribe("t", {.buffer = 8});
  EXPECT_EQ(b.try_publish("t", 1).delivered, 2u);
  EXPECT_EQ(b.try_publish("t", 2).delivered, 2u);
  const auto r = b.try_publish("t", 3);
  EXPECT_EQ(r.delivered, 1u);
  EXPECT_EQ(r.disconnected, 1u);
  EXPECT_TRUE(slow.disconnected());
  EXPECT_FALSE(slow.active());
  EXPECT_TRUE(slow.channel().closed());
  EXPECT_EQ(b.subscriber_count("t"), 1u);
  // What was buffered before the disconnect is still received, then the end.
  EXPECT_EQ(drain(slow.channel()), (std::vector<int>{1, 2}));
  EXPECT_EQ(b.try_publish("t", 4).disconnected, 0u);
  EXPECT_EQ(drain(fast.channel()), (std::vector<int>{1, 2, 3, 4}));
  EXPECT_FALSE(fast.disconnected());
}

TEST(Broker, BlockWaitsForRoomThenDropsAfterTimeout) {
  run_checked([]() -> sl::task<void> {
    sl::broker<int> b;
    // A timeout far longer than the test needs to make room, however slow the
    // machine (a sanitizer build on a loaded machine can take milliseconds).
    auto s = b.subscribe("t", {.buffer = 1, .policy = sl::overflow_policy::block, .block_timeout = 60s});
    EXPECT_EQ((co_await b.publish("t", 1)).delivered, 1u);
    // Full: the second publish waits until the subscriber makes room.
    auto second = sl::spawn(publish_one, &b, sl::context::background(), std::string("t"), 2);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    EXPECT_EQ(*co_await s.channel().recv(), 1);
    const auto r2 = co_await second.join();
    EXPECT_EQ(r2.delivered, 1u);
    EXPECT_EQ(drain(s.channel()), std::vector<int>{2});
    // A subscriber that never receives: dropped once block_timeout has passed.
    auto slow = b.subscribe("u", {.buffer = 1, .policy = sl::overflow_policy::block, .block_timeout = 20ms});
    EXPECT_EQ((co_await b.publish("u", 3)).delivered, 1u);
    const auto start = sl::clock::now();
    const auto r4 = co_await b.publish("u", 4);
    EXPECT_GE(sl::clock::now() - start, 20ms);
    EXPECT_EQ(r4.delivered, 0u);
    EXPECT_EQ(r4.dropped, 1u);
    EXPECT_FALSE(r4.error);
    EXPECT_EQ(slow.dropped(), 1u);
    EXPECT_EQ(drain(slow.channel()), std::vector<int>{3});
  });
}

TEST(Broker, BlockWithoutTimeoutWaitsUntilTheSubscriberGoes) {
  run_checked([]() -> sl::task<void> {
    sl::broker<int> b;
    auto s = b.subscribe("t", {.buffer = 1});
    EXPECT_EQ(b.try_publish("t", 1).delivered, 1u);
    auto blocked = sl::spawn(publish_one, &b, sl::context::background(), std::string("t"), 2);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    b.unsubscribe(s);
    const auto r = co_await blocked.join();
    EXPECT_EQ(r.delivered, 0u);
    EXPECT_EQ(r.dropped, 0u);
    EXPECT_EQ(r.disconnected, 1u);
    EXPECT_EQ(s.dropped(), 0u);
  });
}

TEST(Broker, BlockedPublishEndsWithItsContext) {
  run_checked([]() -> sl::task<void> {
    sl::broker<int> b;
    auto s = b.subscribe("t", {.buffer = 1});
    EXPECT_EQ(b.try_publish("t", 1).delivered, 1u);
    auto cc = sl::with_cancel(sl::context::background());
    auto blocked = sl::spawn(publish_one, &b, cc.ctx, std::string("t"), 2);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    cc.cancel();
    const auto r = co_await blocked.join();
    EXPECT_EQ(r.dropped, 1u);
    EXPECT_EQ(r.error, sl::errc::canceled);
    EXPECT_EQ(s.dropped(), 1u);
    EXPECT_TRUE(s.active());
  });
}

TEST(Broker, TryPublishNeverWaitsForABlockSubscriber) {
  sl::broker<int> b;  // outside a runtime: nothing here may suspend
  auto s = b.subscribe("t", {.buffer = 1, .policy = sl::overflow_policy::block});
  EXPECT_EQ(b.try_publish("t", 1).delivered, 1u);
  const auto r = b.try_publish("t", 2);
  EXPECT_EQ(r.dropped, 1u);
  EXPECT_EQ(s.dropped(), 1u);
  EXPECT_EQ(drain(s.channel()), std::vector<int>{1});
}

TEST(Broker, SubscriptionDestructorUnsubscribes) {
  sl::broker<int> b;
  std::optional<sl::chan<int>> ch;
  {
    auto s = b.subscribe("t");
    ch = s.channel();
    EXPECT_EQ(b.subscriber_count("t"), 1u);
    auto moved = std::move(s);  // moving hands the subscription over, no unsubscribe
    EXPECT_FALSE(s.valid());
    EXPECT_TRUE(moved.active());
    EXPECT_EQ(b.subscriber_count("t"), 1u);
  }
  EXPECT_EQ(b.subscriber_count("t"), 0u);
  EXPECT_EQ(b.topic_count(), 0u);
  EXPECT_TRUE(ch->closed());
  EXPECT_EQ(b.try_publish("t", 1).delivered, 0u);
}

TEST(Broker, UnsubscribeKeepsBufferedMessagesReceivable) {
  run_checked([]() -> sl::task<void> {
    sl::broker<int> b;
    auto s = b.subscribe("t", {.buffer = 4});
    co_await b.publish("t", 1);
    co_await b.publish("t", 2);
    b.unsubscribe(s);
    s.unsubscribe();  // idempotent
    EXPECT_FALSE(s.active());
    EXPECT_FALSE(s.disconnected());
    const auto later = co_await b.publish("t", 3);
    EXPECT_EQ(later.delivered + later.dropped + later.disconnected, 0u);
    EXPECT_EQ(*co_await s.channel().recv(), 1);
    EXPECT_EQ(*co_await s.channel().recv(), 2);
    EXPECT_FALSE(co_await s.channel().recv());
  });
}

TEST(Broker, BoundsAreEnforced) {
  sl::broker<int> b({.max_topics = 2, .max_subscribers_per_topic = 2});
  auto a1 = b.subscribe("a");
  auto a2 = b.subscribe("a");
  EXPECT_THROW(b.subscribe("a"), sl::broker_limit_exceeded);
  auto c1 = b.subscribe("c");
  EXPECT_THROW(b.subscribe("d"), sl::broker_limit_exceeded);
  EXPECT_EQ(b.topic_count(), 2u);
  EXPECT_EQ(b.subscriber_count("a"), 2u);
  // Leaving frees the slot, and a topic without subscribers frees its own.
  a2.unsubscribe();
  auto a3 = b.subscribe("a");
  c1.unsubscribe();
  auto d1 = b.subscribe("d");
  EXPECT_EQ(b.topic_count(), 2u);
  EXPECT_EQ(b.try_publish("a", 1).delivered, 2u);
}

TEST(Broker, InvalidOptionsThrowInvalidArgument) {
  EXPECT_THROW(sl::broker<int>({.max_topics = 0}), std::invalid_argument);
  EXPECT_THROW(sl::broker<int>({.max_subscribers_per_topic = -1}), std::invalid_argument);
  sl::broker<int> b;
  EXPECT_THROW(b.subscribe("t", {.buffer = 0}), std::invalid_argument);
  EXPECT_THROW(b.subscribe("t", {.buffer = std::int64_t{1} << 31}), std::invalid_argument);
  EXPECT_THROW(b.subscribe("t", {.block_timeout = -1ms}), std::invalid_argument);
  EXPECT_EQ(b.topic_count(), 0u);
}

TEST(Broker, CloseEndsEverySubscriptionAndLaterPublishesReportClosed) {
  sl::broker<int> b;
  auto s1 = b.subscribe("a");
  auto s2 = b.subscribe("b");
  EXPECT_EQ(b.try_publish("a", 1).delivered, 1u);
  b.close();
  b.close();  // idempotent
  EXPECT_TRUE(b.closed());
  EXPECT_TRUE(s1.disconnected());
  EXPECT_TRUE(s2.channel().closed());
  EXPECT_EQ(drain(s1.channel()), std::vector<int>{1});
  EXPECT_EQ(b.try_publish("a", 2).error, sl::errc::closed);
  EXPECT_EQ(b.topic_count(), 0u);
  auto late = b.subscribe("a");  // starts ended: a receive loop just ends
  EXPECT_TRUE(late.disconnected());
  EXPECT_TRUE(late.channel().closed());
  run_checked([&]() -> sl::task<void> {
    const auto r = co_await b.publish("a", 3);
    EXPECT_EQ(r.error, sl::errc::closed);
    EXPECT_EQ(r.delivered, 0u);
  });
}

TEST(Broker, CloseWakesABlockedPublisher) {
  run_checked([]() -> sl::task<void> {
    sl::broker<int> b;
    auto s = b.subscribe("t", {.buffer = 1});
    EXPECT_EQ(b.try_publish("t", 1).delivered, 1u);
    auto blocked = sl::spawn(publish_one, &b, sl::context::background(), std::string("t"), 2);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    b.close();
    const auto r = co_await blocked.join();
    EXPECT_EQ(r.disconnected, 1u);
    EXPECT_TRUE(s.disconnected());
  });
}

TEST(Broker, DestroyingTheBrokerEndsItsSubscriptions) {
  auto b = std::make_unique<sl::broker<int>>();
  auto s = b->subscribe("t");
  b.reset();
  EXPECT_TRUE(s.disconnected());
  EXPECT_TRUE(s.channel().closed());
  s.unsubscribe();  // the state outlives the broker object
}

TEST(Broker, ReceiversGetEachPublishersMessagesInOrder) {
  run_checked([]() -> sl::task<void> {
    sl::broker<int> b;
    auto s = b.subscribe("t", {.buffer = 2});
    auto publisher = [&b](int base) -> sl::task<void> {
      for (int i = 0; i < 50; ++i) co_await b.publish("t", base + i);
    };
    auto p1 = sl::spawn(publisher, 0);
    auto p2 = sl::spawn(publisher, 1000);
    int last[2] = {-1, 999};
    for (int n = 0; n < 100; ++n) {
      const int v = *co_await s.channel().recv();
      int& prev = last[v >= 1000 ? 1 : 0];
      EXPECT_GT(v, prev);
      prev = v;
    }
    co_await p1.join();
    co_await p2.join();
  });
}

// Publishers, steady subscribers (one per policy) and churning subscribers
// (subscribing and unsubscribing while publishes run), with random yields
// everywhere. Hunts lost or duplicated messages in the copy-on-write lists,
// in drop_oldest's evictions racing receives, and in blocked sends racing
// unsubscribe. Invariants per subscriber: each publisher's messages arrive in
// the order published; received + dropped() equals the publishes that saw it,
// which is exact for a subscriber present throughout and, for a churner,
// lies between the publishes run entirely inside its subscription and those
// that overlapped it.
TEST(BrokerStress, EverySubscriberAccountsForEachMessageInPublisherOrder) {
  run_checked([]() -> sl::task<void> {
    struct msg {
      int publisher;
      int seq;
    };
    constexpr int publishers = 3;
    constexpr int per_publisher = 200;
    constexpr int churners = 4;
    sl::broker<msg> b;
    std::atomic<int> started{0};
    std::atomic<int> completed{0};
    sl::chan<int> publishing_done;

    struct tally {
      std::uint64_t received = 0;
      bool in_order = true;
      int last[publishers] = {-1, -1, -1};
      void see(const msg& m) {
        if (m.seq <= last[m.publisher]) in_order = false;
        last[m.publisher] = m.seq;
        ++received;
      }
    };
    // Reads the counters with read-modify-writes, so each read is ordered
    // with the publishers' increments and the broker lock around it.
    auto read = [](std::atomic<int>& a) { return a.fetch_add(0); };

    auto consume = [](const sl::chan<msg>* ch, tally* t, unsigned seed) -> sl::task<void> {
      std::minstd_rand rng(seed);
      while (auto m = co_await ch->recv()) {
        t->see(*m);
        for (unsigned y = rng() % 3; y > 0; --y) co_await sl::yield();
      }
    };
    auto publish = [&](int p) -> sl::task<void> {
      std::minstd_rand rng(static_cast<unsigned>(p) + 1);
      for (int i = 0; i < per_publisher; ++i) {
        started.fetch_add(1);
        co_await b.publish("t", msg{p, i});
        completed.fetch_add(1);
        for (unsigned y = rng() % 2; y > 0; --y) co_await sl::yield();
      }
    };

    const sl::subscribe_options steady_opts[] = {
        {.buffer = 4, .policy = sl::overflow_policy::block},
        {.buffer = 2, .policy = sl::overflow_policy::block, .block_timeout = 200us},
        {.buffer = 2, .policy = sl::overflow_policy::drop_newest},
        {.buffer = 2, .policy = sl::overflow_policy::drop_oldest},
    };
    constexpr int steady_n = 4;
    std::vector<sl::subscription<msg>> steady;
    std::vector<tally> steady_tally(steady_n);
    std::vector<sl::join_handle<void>> steady_consumers;
    for (int i = 0; i < steady_n; ++i) steady.push_back(b.subscribe("t", steady_opts[i]));
    for (int i = 0; i < steady_n; ++i) {
      steady_consumers.push_back(sl::spawn(consume, &steady[static_cast<std::size_t>(i)].channel(),
                                           &steady_tally[static_cast<std::size_t>(i)], 100u + static_cast<unsigned>(i)));
    }

    struct round {
      sl::subscription<msg> sub;
      tally t;
      int lower = 0;
      int upper = 0;
      bool exact_lower = true;  // false: disconnect policy may end it early
    };
    std::vector<std::vector<round>> rounds(churners);
    auto churn = [&](int c) -> sl::task<void> {
      std::minstd_rand rng(1000u + static_cast<unsigned>(c));
      auto& mine = rounds[static_cast<std::size_t>(c)];
      mine.reserve(64);
      bool done = false;
      while (!done && mine.size() < 64) {
        const auto policy = static_cast<sl::overflow_policy>(rng() % 4);
        const int c0 = read(completed);
        auto sub = b.subscribe("t", {.buffer = static_cast<std::int64_t>(1 + rng() % 3),
                                     .policy = policy,
                                     .block_timeout = (rng() % 2) != 0 ? 100us : sl::clock::duration::zero()});
        const int s1 = read(started);
        round r{std::move(sub), {}, 0, 0, policy != sl::overflow_policy::disconnect};
        for (unsigned want = rng() % 40; want > 0; --want) {
          auto got = co_await sl::select(sl::recv(r.sub.channel()), sl::recv(publishing_done));
          if (got.index() == 1) {
            done = true;
            break;
          }
          if (!got.get<0>()) break;  // disconnected
          r.t.see(*got.get<0>());
          for (unsigned y = rng() % 3; y > 0; --y) co_await sl::yield();
        }
        const int c2 = read(completed);
        r.sub.unsubscribe();
        const int s3 = read(started);
        while (auto m = co_await r.sub.channel().recv()) r.t.see(*m);
        r.lower = c2 - s1;
        r.upper = s3 - c0;
        mine.push_back(std::move(r));
      }
    };

    std::vector<sl::join_handle<void>> churn_tasks;
    for (int c = 0; c < churners; ++c) churn_tasks.push_back(sl::spawn(churn, c));
    std::vector<sl::join_handle<void>> pubs;
    for (int p = 0; p < publishers; ++p) pubs.push_back(sl::spawn(publish, p));
    for (auto& p : pubs) co_await p.join();
    publishing_done.close();
    for (auto& c : churn_tasks) co_await c.join();
    for (auto& s : steady) s.unsubscribe();
    for (auto& c : steady_consumers) co_await c.join();

    constexpr std::uint64_t total = publishers * per_publisher;
    for (int i = 0; i < steady_n; ++i) {
      const auto& t = steady_tally[static_cast<std::size_t>(i)];
      const auto& s = steady[static_cast<std::size_t>(i)];
      EXPECT_TRUE(t.in_order) << "steady " << i;
      EXPECT_EQ(t.received + s.dropped(), total) << "steady " << i << " ("
                                                 << sl::to_string(steady_opts[i].policy) << ")";
    }
    std::size_t checked = 0;
    for (const auto& mine : rounds) {
      for (const round& r : mine) {
        const auto seen = static_cast<std::int64_t>(r.t.received + r.sub.dropped());
        EXPECT_TRUE(r.t.in_order);
        if (r.exact_lower) {
          EXPECT_GE(seen, r.lower);
        }
        EXPECT_LE(seen, r.upper);
        ++checked;
      }
    }
    EXPECT_GT(checked, 0u);
    EXPECT_EQ(b.subscriber_count("t"), 0u);
  });
}

// close() racing publishers (some blocked on subscribers nobody reads),
// subscribes and unsubscribes: every publish returns, every channel ends up
// closed, and every publish that started after close() reports errc::closed.
TEST(BrokerStress, CloseRacesPublishersAndSubscribers) {
  run_checked([]() -> sl::task<void> {
    for (int iter = 0; iter < 20; ++iter) {
      sl::broker<int> b;
      std::minstd_rand rng(static_cast<unsigned>(iter));
      std::vector<sl::subscription<int>> subs;
      for (int i = 0; i < 4; ++i) {
        subs.push_back(b.subscribe("t", {.buffer = 1, .policy = static_cast<sl::overflow_policy>(i)}));
      }
      std::atomic<bool> closed{false};
      std::atomic<int> late_not_closed{0};
      auto publish = [&](unsigned seed) -> sl::task<void> {
        std::minstd_rand r(seed);
        for (int i = 0; i < 30; ++i) {
          const bool after_close = closed.load();
          const auto res = co_await b.publish("t", i);
          if (after_close && res.error != sl::errc::closed) late_not_closed.fetch_add(1);
          if (r() % 2 != 0) co_await sl::yield();
        }
      };
      auto churn = [&]() -> sl::task<void> {
        for (int i = 0; i < 10; ++i) {
          auto s = b.subscribe("t", {.buffer = 1});
          co_await sl::yield();
        }
      };
      std::vector<sl::join_handle<void>> tasks;
      for (unsigned p = 0; p < 3; ++p) tasks.push_back(sl::spawn(publish, p + 7u * static_cast<unsigned>(iter)));
      tasks.push_back(sl::spawn(churn));
      for (unsigned y = rng() % 20; y > 0; --y) co_await sl::yield();
      b.close();
      closed.store(true);
      for (auto& t : tasks) co_await t.join();
      EXPECT_EQ(late_not_closed.load(), 0);
      for (auto& s : subs) {
        EXPECT_TRUE(s.channel().closed());
        EXPECT_TRUE(s.disconnected());  // by the disconnect policy or by close()
      }
    }
  });
}
