// pubsub: topic-based publish/subscribe between tasks, where each subscriber
// chooses what happens when it cannot keep up.
//
// When one event must reach every party interested in it (a cache
// invalidation to every replica, a price tick to every websocket client), Go
// services hand-write a map[topic][]chan T behind a mutex, and then discover
// that one stuck client blocks every publisher. broker<T> is that map with the
// missing decisions made explicit: each subscriber gets its own buffered
// channel and an overflow policy that says what a publish does when that
// buffer is full.
//
//   sluice::broker<tick> ticks;
//   auto sub = ticks.subscribe("EURUSD", {.buffer = 64, .policy = sluice::overflow_policy::drop_oldest});
//   sluice::go(stream_to_client, sub.channel());      // while (auto t = co_await ch.recv()) ...
//   auto r = co_await ticks.publish("EURUSD", t);     // r.delivered, r.dropped, r.disconnected
//
// | policy      | a publish that finds the buffer full...                        | counted        |
// |-------------|----------------------------------------------------------------|----------------|
// | block       | waits up to block_timeout for room (zero: until there is room, | delivered or   |
// |             | the subscriber goes, the broker closes or the publish's        | dropped (or    |
// |             | context ends); then the message is dropped for it              | disconnected)  |
// | drop_newest | drops the new message                                          | dropped        |
// | drop_oldest | discards the oldest buffered message and queues the new one    | delivered (*)  |
// | disconnect  | closes the subscriber's channel and removes the subscriber     | disconnected   |
//
// (*) the discarded message counts in the subscription's dropped(). A
// subscriber that went away while a publish was handing it a message counts as
// disconnected. try_publish never waits: a block subscriber with a full buffer
// counts as dropped.
//
// Publishing takes a snapshot of the topic's subscriber list (copy-on-write:
// subscribe and unsubscribe build a new list) and holds no lock while it
// delivers or waits, so subscribing never waits for a slow publish. No task is
// started per message. A subscriber receives each publisher's messages in the
// order that publisher published them (minus the dropped ones); there is no
// order between publishers.
//
// Every subscriber gets its own copy of a message, so T must be copyable;
// share a large payload as std::shared_ptr<const X>. Everything here is
// thread-safe; subscribe, unsubscribe, try_publish and close also work outside
// a runtime. Go: the hand-written map[string][]chan T pattern.
#pragma once

#include <sluice/chan.hpp>
#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/error.hpp>
#include <sluice/select.hpp>
#include <sluice/task.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace sluice {

// What a publish does for a subscriber whose buffer is full (see the table
// above). Go: the `ch <- v`, `select { case ch <- v: default: }` or close(ch)
// you would write per subscriber.
enum class overflow_policy : std::uint8_t { block, drop_newest, drop_oldest, disconnect };
// "block", "drop_newest", "drop_oldest", "disconnect".
const char* to_string(overflow_policy p) noexcept;

// Settings of one subscription, in this order (designated initializers).
// Go: the capacity of the `make(chan T, n)` you would append to the list.
struct subscribe_options {
  // Messages buffered for the subscriber; must be in [1, 2^30].
  std::int64_t buffer = 64;
  // What a publish does when the buffer is full. The default, block with no
  // timeout, is Go's `ch <- v`: a slow subscriber slows its publishers.
  overflow_policy policy = overflow_policy::block;
  // block only: the longest a publish waits for room before dropping the
  // message for this subscriber; zero: no limit. Must be >= 0.
  clock::duration block_timeout = clock::duration::zero();
};

// Bounds of a broker, in this order (designated initializers). Each must be
// >= 1. Go: none; a hand-written map grows until the process runs out of memory.
struct broker_options {
  // Topics with at least one subscriber (a topic exists while it has one).
  std::int64_t max_topics = 10'000;
  // Subscribers of one topic (each publish walks the whole list).
  std::int64_t max_subscribers_per_topic = 1'000;
};

// Thrown by subscribe() when a broker_options bound would be exceeded (an
// expected outcome under load, unlike std::invalid_argument's caller mistakes).
class broker_limit_exceeded : public std::length_error {
 public:
  explicit broker_limit_exceeded(const std::string& what) : std::length_error(what) {}
};

// What one publish did, per subscriber of the topic in its snapshot. Go: the
// counters you would keep around the send loop.
struct publish_result {
  std::size_t delivered = 0;     // queued (or handed to a waiting receiver)
  std::size_t dropped = 0;       // not queued: buffer full under drop_newest, block timed out
  std::size_t disconnected = 0;  // removed by the disconnect policy, or gone mid-publish
  // errc::closed: the broker was closed before this publish (nothing was sent);
  // ctx.err(): the publish's context ended a wait (that subscriber and any
  // later blocked ones count as dropped). Empty otherwise.
  std::error_code error;
};

namespace detail {

void check_subscribe_options(const subscribe_options& o);
void check_broker_options(const broker_options& o);
[[noreturn]] void throw_topic_limit(std::int64_t max_topics);
[[noreturn]] void throw_subscriber_limit(std::string_view topic, std::int64_t max);

// How a subscription ended; it goes from active to one of the others once.
enum class sub_state : std::uint8_t { active, unsubscribed, disconnected, broker_closed };

// One subscriber: its channel and policy, shared by its subscription and the
// topic lists (snapshots) that still hold it.
template <class T>
class subscriber {
 public:
  subscriber(std::string t, const subscribe_options& o)
      : topic(std::move(t)), ch(o.buffer), policy(o.policy), block_timeout(o.block_timeout) {}

  const std::string topic;
  const chan<T> ch;
  const overflow_policy policy;
  const clock::duration block_timeout;
  // Messages lost to this subscriber. Relaxed: a statistic; it is exact once
  // no publish is in flight (whoever joined the publishers has seen their adds).
  std::atomic<std::uint64_t> dropped{0};
  // drop_oldest only: serialises publishers between "buffer full" and "evicted,
  // queued", so another publisher cannot take the slot an eviction made.
  spinlock evict_mu;

  // Moves active -> why; the caller that wins closes the channel (the only
  // close the broker makes), so a channel is closed exactly once. Relaxed is
  // enough: the CAS alone decides the winner, and a subscriber that reads
  // state() after seeing the channel closed is ordered after this store by the
  // channel's lock (close takes it after the CAS; its receive takes it too).
  bool end(sub_state why) noexcept {
    sub_state expected = sub_state::active;
    if (!state_.compare_exchange_strong(expected, why, std::memory_order_relaxed)) return false;
    try {
      ch.close();
    } catch (const channel_closed&) {
      // The owner closed the channel itself (it is the broker's to close);
      // it is closed either way.
    }
    return true;
  }
  sub_state state() const noexcept { return state_.load(std::memory_order_relaxed); }

 private:
  std::atomic<sub_state> state_{sub_state::active};
};

// The shared state of a broker: topic -> immutable subscriber list.
// Invariants (guarded by mu_):
//   * every list in topics_ is non-empty, holds only subscribers whose topic is
//     its key, and is never modified once published (copy-on-write);
//   * topics_.size() <= max_topics and each list's size <= max_subscribers;
//   * closed_ implies topics_ is empty.
// A subscriber may still be in a snapshot a publish holds after it left the
// list; its closed channel makes that publish count it as disconnected.
template <class T>
class broker_state {
 public:
  using sub_ptr = std::shared_ptr<subscriber<T>>;
  using list = std::vector<sub_ptr>;
  using snapshot = std::shared_ptr<const list>;

  explicit broker_state(const broker_options& o) : opts_(o) {}

  // The topic's current list (nullptr: no subscriber); `closed` says whether
  // the broker is closed.
  snapshot find(std::string_view topic, bool& closed) const {
    std::lock_guard<spinlock> g(mu_);
    closed = closed_;
    auto it = topics_.find(topic);
    return it == topics_.end() ? nullptr : it->second;
  }

  // A new subscriber on `topic`, already ended (broker_closed) if the broker is
  // closed. Throws broker_limit_exceeded at a bound.
  sub_ptr add(std::string topic, const subscribe_options& o) {
    auto s = std::make_shared<subscriber<T>>(std::move(topic), o);
    std::unique_lock<spinlock> g(mu_);
    if (closed_) {
      g.unlock();
      s->end(sub_state::broker_closed);
      return s;
    }
    auto it = topics_.find(s->topic);
    if (it == topics_.end()) {
      if (static_cast<std::int64_t>(topics_.size()) >= opts_.max_topics) {
        throw_topic_limit(opts_.max_topics);
      }
      topics_.emplace(s->topic, std::make_shared<const list>(list{s}));
      return s;
    }
    const list& old = *it->second;
    if (static_cast<std::int64_t>(old.size()) >= opts_.max_subscribers_per_topic) {
      throw_subscriber_limit(s->topic, opts_.max_subscribers_per_topic);
    }
    auto next = std::make_shared<list>();
    next->reserve(old.size() + 1);
    *next = old;
    next->push_back(s);
    it->second = std::move(next);
    return s;
  }

  // Takes s out of its topic's list (a no-op if it is not there).
  void remove(const subscriber<T>& s) {
    snapshot old;  // released after the lock: the last reference may free a list
    std::lock_guard<spinlock> g(mu_);
    auto it = topics_.find(s.topic);
    if (it == topics_.end()) return;
    const list& cur = *it->second;
    auto next = std::make_shared<list>();
    next->reserve(cur.size());
    for (const sub_ptr& p : cur) {
      if (p.get() != &s) next->push_back(p);
    }
    if (next->size() == cur.size()) return;
    old = std::move(it->second);
    if (next->empty()) {
      topics_.erase(it);
    } else {
      it->second = std::move(next);
    }
  }

  // Marks the broker closed and ends every subscriber (closing its channel).
  void close() {
    std::map<std::string, snapshot, std::less<>> taken;
    {
      std::lock_guard<spinlock> g(mu_);
      closed_ = true;
      taken.swap(topics_);
    }
    for (auto& [topic, subs] : taken) {
      for (const sub_ptr& s : *subs) s->end(sub_state::broker_closed);
    }
  }

  bool closed() const {
    std::lock_guard<spinlock> g(mu_);
    return closed_;
  }
  std::size_t topic_count() const {
    std::lock_guard<spinlock> g(mu_);
    return topics_.size();
  }
  std::size_t subscriber_count(std::string_view topic) const {
    std::lock_guard<spinlock> g(mu_);
    auto it = topics_.find(topic);
    return it == topics_.end() ? 0 : it->second->size();
  }

 private:
  const broker_options opts_;
  mutable spinlock mu_;
  std::map<std::string, snapshot, std::less<>> topics_;
  bool closed_ = false;
};

// The outcome of offering a message to one subscriber without waiting.
enum class offer_outcome : std::uint8_t { delivered, full, gone };

// Queues a copy of v for s if that needs no wait, applying drop_oldest's
// eviction; full otherwise (the caller applies the other policies); gone if
// the subscription has ended (its channel is closed).
template <class T>
offer_outcome offer(subscriber<T>& s, const T& v) {
  try {
    if (s.policy != overflow_policy::drop_oldest) {
      return s.ch.try_send(v) ? offer_outcome::delivered : offer_outcome::full;
    }
    // With evict_mu held no other publisher adds to this buffer, and the
    // receiver only takes from it, so after one eviction (or after finding the
    // receiver emptied it) the next try_send finds room. The bound guards
    // against an owner that sends on the channel itself.
    std::lock_guard<spinlock> g(s.evict_mu);
    for (int attempt = 0; attempt < 4; ++attempt) {
      if (s.ch.try_send(v)) return offer_outcome::delivered;
      if (s.ch.try_recv()) s.dropped.fetch_add(1, std::memory_order_relaxed);
    }
    return offer_outcome::full;
  } catch (const channel_closed&) {
    return offer_outcome::gone;
  }
}

// The non-waiting pass of a publish over one snapshot. Block subscribers with
// a full buffer go to `waiting` if given, else count as dropped.
template <class T>
void offer_all(broker_state<T>& b, const typename broker_state<T>::list& subs, const T& v,
               publish_result& r, std::vector<subscriber<T>*>* waiting) {
  for (const auto& sp : subs) {
    subscriber<T>& s = *sp;
    switch (offer(s, v)) {
      case offer_outcome::delivered:
        ++r.delivered;
        break;
      case offer_outcome::gone:
        ++r.disconnected;
        break;
      case offer_outcome::full:
        if (s.policy == overflow_policy::disconnect) {
          if (s.end(sub_state::disconnected)) b.remove(s);
          ++r.disconnected;
        } else if (s.policy == overflow_policy::block && waiting != nullptr) {
          waiting->push_back(&s);
        } else {
          s.dropped.fetch_add(1, std::memory_order_relaxed);
          ++r.dropped;
        }
        break;
    }
  }
}

// publish(): the non-waiting pass, then one wait per full block subscriber,
// each bounded by its block_timeout counted from the start of the publish (so
// when every timeout is set, the publish waits at most the longest one, not
// their sum).
template <class T>
task<publish_result> publish_task(std::shared_ptr<broker_state<T>> b, context ctx,
                                  std::string topic, T v) {
  publish_result r;
  bool closed = false;
  const typename broker_state<T>::snapshot subs = b->find(topic, closed);
  if (closed) {
    r.error = errc::closed;
    co_return r;
  }
  if (subs == nullptr) co_return r;
  const clock::time_point start = clock::now();
  std::vector<subscriber<T>*> waiting;
  offer_all(*b, *subs, v, r, &waiting);
  for (subscriber<T>* s : waiting) {
    if (!r.error) r.error = ctx.err();  // a done context ends this and every later wait
    bool sent = false;
    if (!r.error) {
      try {
        if (s->block_timeout == clock::duration::zero()) {
          auto sel = co_await sluice::select(sluice::send(s->ch, v), sluice::done(ctx));
          sent = sel.index() == 0;
        } else {
          auto sel = co_await sluice::select(sluice::send(s->ch, v), sluice::at(start + s->block_timeout),
                                            sluice::done(ctx));
          sent = sel.index() == 0;
        }
      } catch (const channel_closed&) {
        ++r.disconnected;  // unsubscribed, disconnected or the broker closed
        continue;
      }
      if (!sent) r.error = ctx.err();  // stays empty after a timeout
    }
    if (sent) {
      ++r.delivered;
    } else {
      s->dropped.fetch_add(1, std::memory_order_relaxed);
      ++r.dropped;
    }
  }
  co_return r;
}

}  // namespace detail

template <class T>
class broker;

// subscription<T>: one subscriber's end of a broker topic. Move-only; destroying
// it unsubscribes. Go: the `ch` you appended to subs[topic], plus the code that
// removes it.
template <class T>
class subscription {
 public:
  // An empty subscription (valid() false); only assignment and destruction apply.
  subscription() noexcept = default;
  subscription(subscription&& o) noexcept = default;
  subscription& operator=(subscription&& o) noexcept {
    if (this != &o) {
      unsubscribe();
      broker_ = std::move(o.broker_);
      sub_ = std::move(o.sub_);
    }
    return *this;
  }
  subscription(const subscription&) = delete;
  subscription& operator=(const subscription&) = delete;
  ~subscription() { unsubscribe(); }

  // The channel this subscriber receives from. The broker closes it when the
  // subscription ends (unsubscribe, the disconnect policy, broker close); the
  // messages already buffered can still be received, then recv() gives nullopt.
  // Only the broker may send on it or close it. Requires valid().
  const chan<T>& channel() const noexcept { return sub_->ch; }

  // Messages this subscriber lost: dropped by drop_newest or a block timeout,
  // or discarded by drop_oldest. Exact once no publish is in flight.
  std::uint64_t dropped() const noexcept {
    return sub_ != nullptr ? sub_->dropped.load(std::memory_order_relaxed) : 0;
  }
  // True if the broker ended the subscription: the disconnect policy, or the
  // broker was (or was already) closed. False after unsubscribe().
  bool disconnected() const noexcept {
    if (sub_ == nullptr) return false;
    const detail::sub_state s = sub_->state();
    return s == detail::sub_state::disconnected || s == detail::sub_state::broker_closed;
  }
  // True until the subscription ends, whoever ends it.
  bool active() const noexcept {
    return sub_ != nullptr && sub_->state() == detail::sub_state::active;
  }
  // False for a default-constructed or moved-from subscription.
  bool valid() const noexcept { return sub_ != nullptr; }
  // The topic subscribed to. Requires valid().
  const std::string& topic() const noexcept { return sub_->topic; }

  // Leaves the topic and closes the channel (buffered messages stay
  // receivable); idempotent, and a no-op once the broker ended the
  // subscription. Later publishes do not count this subscriber. Go: remove ch
  // from subs[topic] and close(ch).
  void unsubscribe() noexcept {
    if (sub_ != nullptr && sub_->end(detail::sub_state::unsubscribed)) {
      try {
        broker_->remove(*sub_);
      } catch (...) {
        // Only allocation can fail here. The channel is closed, so publishes
        // that still find the subscriber count it as disconnected, and the
        // broker's close() or a later removal drops it.
      }
    }
  }

 private:
  friend class broker<T>;
  subscription(std::shared_ptr<detail::broker_state<T>> b,
               std::shared_ptr<detail::subscriber<T>> s) noexcept
      : broker_(std::move(b)), sub_(std::move(s)) {}

  std::shared_ptr<detail::broker_state<T>> broker_;
  std::shared_ptr<detail::subscriber<T>> sub_;
};

// broker<T>: topics of subscribers, each with its own buffer and overflow
// policy. Not copyable; subscriptions and in-flight publishes keep its state
// alive, so it may be destroyed first (which closes it).
template <class T>
class broker {
 public:
  // Throws std::invalid_argument if a bound is < 1.
  explicit broker(broker_options opts = {}) : st_(make_state(opts)) {}
  broker(const broker&) = delete;
  broker& operator=(const broker&) = delete;
  // close().
  ~broker() { close(); }

  // Subscribes to `topic` with its own buffer and policy. Throws
  // std::invalid_argument for invalid options and broker_limit_exceeded when
  // the topic has max_subscribers_per_topic subscribers, or it is a new topic
  // and there are max_topics. On a closed broker it returns a subscription that
  // has already ended (closed channel, disconnected() true), so a receive loop
  // simply ends. Never suspends. Go: subs[topic] = append(subs[topic], ch).
  subscription<T> subscribe(std::string topic, subscribe_options opts = {}) {
    detail::check_subscribe_options(opts);
    return subscription<T>(st_, st_->add(std::move(topic), opts));
  }

  // Ends `s` (see subscription::unsubscribe). Go: the removal half of the pattern.
  void unsubscribe(subscription<T>& s) noexcept { s.unsubscribe(); }

  // Sends a copy of `value` to every subscriber of `topic`, applying each one's
  // overflow policy; block subscribers may make it wait (see the table). A
  // topic without subscribers delivers to 0. After close(): error ==
  // errc::closed. Must be awaited from a task. Go: for _, ch := range subs[topic] { ch <- v }.
  task<publish_result> publish(std::string topic, T value) {
    return detail::publish_task<T>(st_, context::background(), std::move(topic), std::move(value));
  }
  // As publish(topic, value), but a wait for a block subscriber also ends when
  // ctx is done: that message is dropped for it and for every block subscriber
  // still to be waited for, and error is ctx.err().
  task<publish_result> publish(context ctx, std::string topic, T value) {
    return detail::publish_task<T>(st_, std::move(ctx), std::move(topic), std::move(value));
  }

  // publish() without ever suspending: a block subscriber with a full buffer
  // counts as dropped. Works outside a runtime. Go: a select with a default
  // case per subscriber.
  publish_result try_publish(std::string_view topic, const T& value) {
    publish_result r;
    bool closed = false;
    const auto subs = st_->find(topic, closed);
    if (closed) {
      r.error = errc::closed;
    } else if (subs != nullptr) {
      detail::offer_all<T>(*st_, *subs, value, r, nullptr);
    }
    return r;
  }

  // Closes the broker: every subscriber's channel is closed (they drain what is
  // buffered, then see nullopt), publishes blocked on one of them stop waiting
  // (counted disconnected), later publishes report errc::closed and later
  // subscriptions start ended. Idempotent.
  void close() { st_->close(); }
  // True once close() was called.
  bool closed() const { return st_->closed(); }

  // Topics with at least one subscriber now.
  std::size_t topic_count() const { return st_->topic_count(); }
  // Subscribers of `topic` now.
  std::size_t subscriber_count(std::string_view topic) const { return st_->subscriber_count(topic); }

 private:
  static std::shared_ptr<detail::broker_state<T>> make_state(const broker_options& opts) {
    detail::check_broker_options(opts);
    return std::make_shared<detail::broker_state<T>>(opts);
  }

  std::shared_ptr<detail::broker_state<T>> st_;
};

}  // namespace sluice
