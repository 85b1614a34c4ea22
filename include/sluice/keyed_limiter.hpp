// keyed_limiter: one token bucket per client (IP, API key, user), in bounded
// memory, with stale clients forgotten.
//
// The classic Go per-IP limiter is a map[string]*rate.Limiter behind a mutex,
// plus a goroutine that deletes idle entries. It has two problems in
// production: the mutex serializes every request on every core, and a client
// that cycles through millions of source addresses or keys grows the map
// without bound. keyed_limiter fixes both:
//
//   * sharded: a key's shard (by hash) has its own lock, so requests for
//     different clients on different cores rarely meet;
//   * bounded: at most max_keys clients are tracked, whatever arrives;
//   * no thread: stale entries are reclaimed lazily by the calls themselves
//     (and by cleanup(), if you want memory back sooner).
//
//   sluice::rate::keyed_limiter<std::string> per_ip(
//       {.limit = sluice::rate::limit(10), .burst = 20, .max_keys = 100'000, .idle_ttl = 3min});
//   if (!per_ip.allow(client_ip)) co_return reply(429);
//
// Each key behaves as its own rate::limiter(limit, burst) on which only
// allow_n is called: the same float formulas, so the same answers as Go's
// limiter for the same times (a new key starts as a new Go limiter does:
// full, after its first refill from the zero time).
//
// Eviction policy. Every shard is a table in which a key can live in one of
// `window` (16) slots: two groups of 8 picked by two independent parts of its
// hash (two choices keep the groups evenly filled). When a new key arrives and
// must take a slot:
//   1. a free slot in its window (in the emptier group), if the shard is under
//      its share of max_keys;
//   2. else a stale slot in its window (not used for idle_ttl);
//   3. else the least recently used slot in its window (a sampled LRU, like
//      Redis's approximate LRU);
//   4. if the shard is at its share and the window holds no entry at all, the
//      next entry found by the shard's clock hand.
// Tables grow (doubling, at 7/8 load or when a window is full of live
// entries) up to about twice their share, so below max_keys case 1 is the
// rule. An evicted key that comes back starts again as a new limiter (a full
// bucket): a flood of more than max_keys distinct keys lets the flooder's own
// keys (and the least active real clients) be forgotten early, but it cannot
// grow memory, and it cannot make any key exceed its rate while it is tracked.
// With idle_ttl at least burst/limit (a bucket idle that long is full again)
// forgetting a stale key changes nothing it would be allowed.
//
// Thread-safe; works outside a runtime (it never suspends).
#pragma once

#include <sluice/clock.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/rate.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <limits>
#include <mutex>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace sluice::rate {

// The outcome of keyed_limiter::check_n, for 429 responses and the RateLimit
// headers.
struct verdict {
  bool allowed = false;
  double remaining = 0;             // tokens left in the key's bucket (after this event if allowed)
  clock::duration retry_after{};    // not allowed: until n tokens are there (inf_duration if n > burst)
  clock::duration reset{};          // until the bucket is full again
};

}  // namespace sluice::rate

namespace sluice::detail {

// The per-key state: Go's Limiter.tokens and Limiter.last.
struct rate_bucket {
  double tokens = 0;
  std::int64_t last_ns = 0;
};

// allow_n on one bucket, Go's formulas (src/flow/rate.cpp); limit finite > 0.
rate::verdict rate_bucket_take(rate_bucket& b, double limit, int burst, std::int64_t t, int n) noexcept;
double rate_bucket_tokens(const rate_bucket& b, double limit, int burst, std::int64_t t) noexcept;
void check_keyed_limit(rate::limit r, int burst);

}  // namespace sluice::detail

namespace sluice::rate {

// Settings of a keyed_limiter, in this order (designated initializers).
struct keyed_limiter_options {
  rate::limit limit;          // per key; > 0 (inf: everything allowed, nothing stored)
  int burst = 1;              // per key; >= 0
  std::size_t max_keys = 100'000;  // >= 1: clients tracked at most
  clock::duration idle_ttl = std::chrono::minutes(3);  // > 0: unused this long = stale
  std::size_t shards = 0;     // 0: 16 per core (rounded to a power of two)
};

// Counters of a keyed_limiter.
struct keyed_limiter_stats {
  std::size_t keys = 0;            // tracked now
  std::uint64_t evicted_stale = 0;  // slots reused after idle_ttl, or freed by cleanup()
  std::uint64_t evicted_live = 0;   // clients forgotten before idle_ttl (bound or collision)
};

// keyed_limiter<Key>: a token bucket per key. Go: the map[string]*rate.Limiter
// pattern, sharded and bounded. Hash must be a good hash for Key (the shard and
// the slot come from its bits).
template <class Key, class Hash = std::hash<Key>, class Eq = std::equal_to<Key>>
class keyed_limiter {
 public:
  // Throws std::invalid_argument for limit <= 0 or NaN, burst < 0, max_keys 0
  // or idle_ttl <= 0.
  explicit keyed_limiter(keyed_limiter_options o) : opts_(o) {
    detail::check_keyed_limit(o.limit, o.burst);
    if (o.max_keys == 0) throw std::invalid_argument("sluice::rate::keyed_limiter: max_keys must be >= 1");
    if (o.idle_ttl <= clock::duration::zero()) {
      throw std::invalid_argument("sluice::rate::keyed_limiter: idle_ttl must be > 0");
    }
    std::size_t n = o.shards;
    if (n == 0) {
      const unsigned cores = std::thread::hardware_concurrency();
      n = 16 * static_cast<std::size_t>(cores == 0 ? 1 : cores);
    }
    n = std::min<std::size_t>(std::bit_ceil(n), 65536);  // the shard index is hash bits 0..15
    // Every shard gets a share of at least one key; the shares add up to max_keys.
    while (n > 1 && n > o.max_keys) n /= 2;
    shards_ = std::make_unique<shard[]>(n);
    mask_ = n - 1;
    for (std::size_t i = 0; i < n; ++i) {
      shards_[i].share = o.max_keys / n + (i < o.max_keys % n ? 1 : 0);
    }
  }
  keyed_limiter(const keyed_limiter&) = delete;
  keyed_limiter& operator=(const keyed_limiter&) = delete;

  // allow_n(key, clock::now(), 1). Go: limiterFor(key).Allow().
  bool allow(const Key& key) { return allow_n(key, clock::now(), 1); }
  // Whether n events for `key` may happen at t; if so, they are taken from its
  // bucket. Throws std::invalid_argument if n < 0. Go: limiterFor(key).AllowN(t, n).
  bool allow_n(const Key& key, clock::time_point t, int n) { return check_n(key, t, n).allowed; }
  // As allow_n, and tells what a 429 response needs: the tokens left, how long
  // until n tokens are there (Retry-After) and until the bucket is full
  // (RateLimit-Reset).
  verdict check_n(const Key& key, clock::time_point t, int n) {
    if (n < 0) {
      throw std::invalid_argument("sluice::rate::keyed_limiter::check_n: n must be >= 0 (got " +
                                  std::to_string(n) + ")");
    }
    if (unlimited()) return verdict{.allowed = true, .remaining = static_cast<double>(opts_.burst)};
    const std::size_t h = mix(Hash{}(key));
    shard& s = shards_[h & mask_];
    const std::int64_t now = t.time_since_epoch().count();
    // RAII: copying the key or growing the table may throw (bad_alloc).
    std::lock_guard<detail::spinlock> hold(s.mu);
    slot& e = s.find_or_insert(key, h, now, *this);
    const verdict v = detail::rate_bucket_take(e.bucket, opts_.limit.value(), opts_.burst, now, n);
    // Only forward: a call with an older time (allowed, as in Go) must not
    // make a busy key look idle.
    if (now > e.used_ns) e.used_ns = now;
    return v;
  }

  // The tokens `key` has at t (those of a new limiter for an untracked key).
  // Does not start tracking the key.
  double tokens_at(const Key& key, clock::time_point t) const {
    if (unlimited()) return static_cast<double>(opts_.burst);
    const std::size_t h = mix(Hash{}(key));
    shard& s = shards_[h & mask_];
    const std::int64_t now = t.time_since_epoch().count();
    std::lock_guard<detail::spinlock> hold(s.mu);
    const slot* e = s.find(key, h);
    return detail::rate_bucket_tokens(e != nullptr ? e->bucket : new_bucket(), opts_.limit.value(),
                                      opts_.burst, now);
  }

  // Forgets every entry not used since t - idle_ttl; returns how many. The
  // calls reclaim stale slots anyway; this gives the memory of a burst of
  // one-off clients back sooner (call it from a ticker task, if at all).
  std::size_t cleanup(clock::time_point t) {
    const std::int64_t now = t.time_since_epoch().count();
    std::size_t n = 0;
    for (std::size_t i = 0; i <= mask_; ++i) {
      shard& s = shards_[i];
      std::lock_guard<detail::spinlock> hold(s.mu);
      n += s.drop_stale(now, opts_.idle_ttl.count());
    }
    evicted_stale_.fetch_add(n, std::memory_order_relaxed);
    return n;
  }

  // Keys tracked now (<= max_keys).
  std::size_t size() const noexcept {
    std::size_t n = 0;
    for (std::size_t i = 0; i <= mask_; ++i) n += shards_[i].live.load(std::memory_order_relaxed);
    return n;
  }
  keyed_limiter_stats stats() const noexcept {
    return {size(), evicted_stale_.load(std::memory_order_relaxed),
            evicted_live_.load(std::memory_order_relaxed)};
  }
  rate::limit limit() const noexcept { return opts_.limit; }
  int burst() const noexcept { return opts_.burst; }
  std::size_t max_keys() const noexcept { return opts_.max_keys; }

 private:
  static constexpr std::size_t group = 8;
  static constexpr std::size_t window = 2 * group;
  static constexpr std::uint8_t empty_tag = 0;

  struct slot {
    Key key{};
    detail::rate_bucket bucket;
    std::int64_t used_ns = 0;  // last call for this key
  };

  // One shard: a table of slots with a tag byte each (0: empty; else 0x80 |
  // 7 hash bits), so a lookup reads one or two cache lines of tags and then
  // only the slot whose tag matches.
  struct alignas(64) shard {
    mutable detail::spinlock mu;
    std::size_t share = 0;  // max entries here; the shares add up to max_keys
    std::atomic<std::size_t> live{0};  // written under mu; read by size()
    std::vector<std::uint8_t> tags;
    std::vector<slot> slots;
    std::size_t hand = 0;  // clock hand for case 4 of the eviction policy

    static std::uint8_t tag_of(std::size_t h) noexcept {
      return static_cast<std::uint8_t>(0x80 | ((h >> 57) & 0x7f));
    }
    // The window of a hash in a table of n slots (n a power of two >= 16): two
    // distinct aligned groups of 8, from bits 16.. and 40.. of the hash (the
    // shard takes bits 0..15, the tag the top 7).
    static std::array<std::size_t, 2> groups(std::size_t h, std::size_t n) noexcept {
      const std::size_t groups_mask = n / group - 1;
      const std::size_t a = (h >> 16) & groups_mask;
      std::size_t b = (h >> 40) & groups_mask;
      if (b == a) b = (a + 1) & groups_mask;  // always 16 slots, not 8
      return {a * group, b * group};
    }
    std::size_t size_mask() const noexcept { return slots.size() - 1; }

    const slot* find(const Key& key, std::size_t h) const {
      if (slots.empty()) return nullptr;
      const std::uint8_t tag = tag_of(h);
      for (const std::size_t g : groups(h, slots.size())) {
        for (std::size_t k = g; k < g + group; ++k) {
          if (tags[k] == tag && Eq{}(slots[k].key, key)) return &slots[k];
        }
      }
      return nullptr;
    }

    slot& find_or_insert(const Key& key, std::size_t h, std::int64_t now, keyed_limiter& owner) {
      if (const slot* found = find(key, h)) return const_cast<slot&>(*found);
      // Grow at 7/8 load (or when a window is full, below), up to about twice
      // the share. Growing drops stale entries: read `live` after.
      {
        const std::size_t before = live.load(std::memory_order_relaxed);
        if (slots.empty() || ((before + 1) * 8 > slots.size() * 7 && slots.size() < max_slots())) {
          grow(owner, now);
        }
      }
      const std::int64_t ttl = owner.opts_.idle_ttl.count();
      std::size_t free_k, stale_k, lru_k;
      for (;;) {
        free_k = place(tags, h);
        stale_k = lru_k = SIZE_MAX;
        for (const std::size_t g : groups(h, slots.size())) {
          for (std::size_t k = g; k < g + group; ++k) {
            if (tags[k] == empty_tag) continue;
            if (stale(slots[k], now, ttl)) {
              if (stale_k == SIZE_MAX) stale_k = k;
            } else if (lru_k == SIZE_MAX || slots[k].used_ns < slots[lru_k].used_ns) {
              lru_k = k;
            }
          }
        }
        // A window full of live entries while the shard is under its share
        // and the table may still grow: grow rather than forget a client.
        if (free_k != SIZE_MAX || stale_k != SIZE_MAX || slots.size() >= max_slots() ||
            live.load(std::memory_order_relaxed) >= share) {
          break;
        }
        grow(owner, now);
      }
      // Make room first, then copy the key: if the copy throws (bad_alloc), the
      // slot we picked is simply left free.
      std::size_t k;
      if (free_k != SIZE_MAX && live.load(std::memory_order_relaxed) < share) {
        k = free_k;
      } else if (stale_k != SIZE_MAX) {
        k = stale_k;
        forget(k);
        owner.evicted_stale_.fetch_add(1, std::memory_order_relaxed);
      } else if (lru_k != SIZE_MAX) {
        k = lru_k;
        forget(k);
        owner.evicted_live_.fetch_add(1, std::memory_order_relaxed);
      } else {
        k = free_k;  // at the share with an empty window: free an entry elsewhere
        evict_by_hand(owner, now, ttl);
      }
      slot& e = slots[k];
      e.key = key;
      tags[k] = tag_of(h);
      live.store(live.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      e.bucket = new_bucket();
      e.used_ns = now;
      return e;
    }

    static bool stale(const slot& e, std::int64_t now, std::int64_t ttl) noexcept {
      return now - e.used_ns >= ttl;
    }
    // Empties slot k (occupied).
    void forget(std::size_t k) {
      tags[k] = empty_tag;
      slots[k].key = Key{};
      live.store(live.load(std::memory_order_relaxed) - 1, std::memory_order_relaxed);
    }

    std::size_t max_slots() const noexcept {
      return std::bit_ceil(std::max<std::size_t>(share * 2, window));
    }

    void grow(keyed_limiter& owner, std::int64_t now) {
      std::size_t n = slots.empty() ? std::min<std::size_t>(window, max_slots()) : slots.size() * 2;
      // Rehashing into a table twice the size can still meet a full window
      // (a cluster); then try the next size before forgetting anyone.
      while (!rehash(owner, now, n, n >= max_slots())) n *= 2;
    }

    // Moves every live entry into a table of n slots. With `final` false it
    // gives up (returning false, the old table untouched) at the first entry
    // whose window is full; with `final` true such entries are dropped.
    bool rehash(keyed_limiter& owner, std::int64_t now, std::size_t n, bool final) {
      if (!final && !fits(n)) return false;
      std::vector<std::uint8_t> old_tags(n, empty_tag);
      std::vector<slot> old_slots(n);
      old_tags.swap(tags);
      old_slots.swap(slots);
      const std::int64_t ttl = owner.opts_.idle_ttl.count();
      std::size_t kept = 0;
      for (std::size_t i = 0; i < old_slots.size(); ++i) {
        if (old_tags[i] == empty_tag) continue;
        if (stale(old_slots[i], now, ttl)) {
          owner.evicted_stale_.fetch_add(1, std::memory_order_relaxed);
          continue;
        }
        const std::size_t k = place(tags, mix(Hash{}(old_slots[i].key)));
        if (k == SIZE_MAX) {
          owner.evicted_live_.fetch_add(1, std::memory_order_relaxed);  // a full window: rare
          continue;
        }
        tags[k] = old_tags[i];
        slots[k] = std::move(old_slots[i]);
        ++kept;
      }
      live.store(kept, std::memory_order_relaxed);
      return true;
    }

    // Whether every live entry finds a slot in its window of a table of n slots
    // (a dry run of rehash on the tags alone).
    bool fits(std::size_t n) const {
      std::vector<std::uint8_t> taken(n, empty_tag);
      for (std::size_t i = 0; i < slots.size(); ++i) {
        if (tags[i] == empty_tag) continue;
        const std::size_t k = place(taken, mix(Hash{}(slots[i].key)));
        if (k == SIZE_MAX) return false;
        taken[k] = tags[i];
      }
      return true;
    }

    // A free slot for hash h in the emptier of its two groups; SIZE_MAX if both are full.
    static std::size_t place(const std::vector<std::uint8_t>& t, std::size_t h) noexcept {
      std::size_t best = SIZE_MAX, best_free = 0;
      for (const std::size_t g : groups(h, t.size())) {
        std::size_t free_here = 0, first = SIZE_MAX;
        for (std::size_t k = g; k < g + group; ++k) {
          if (t[k] == empty_tag) {
            ++free_here;
            if (first == SIZE_MAX) first = k;
          }
        }
        if (free_here > best_free) {
          best_free = free_here;
          best = first;
        }
      }
      return best;
    }

    void evict_by_hand(keyed_limiter& owner, std::int64_t now, std::int64_t ttl) {
      for (std::size_t i = 0; i < slots.size(); ++i) {
        hand = (hand + 1) & size_mask();
        if (tags[hand] != empty_tag) {
          (stale(slots[hand], now, ttl) ? owner.evicted_stale_ : owner.evicted_live_)
              .fetch_add(1, std::memory_order_relaxed);
          forget(hand);
          return;
        }
      }
    }

    std::size_t drop_stale(std::int64_t now, std::int64_t ttl) {
      std::size_t n = 0;
      for (std::size_t k = 0; k < slots.size(); ++k) {
        if (tags[k] != empty_tag && stale(slots[k], now, ttl)) {
          forget(k);
          ++n;
        }
      }
      return n;
    }
  };

  // limit inf: everything is allowed and nothing is stored.
  bool unlimited() const noexcept { return opts_.limit == rate::inf; }

  // A new Go limiter: no tokens, last update at the zero time (before every
  // time_point), so its first advance saturates the elapsed time and fills the
  // bucket as far as limit x 2^63 ns allows (all of it, but for tiny limits).
  static detail::rate_bucket new_bucket() noexcept {
    return detail::rate_bucket{0.0, std::numeric_limits<std::int64_t>::min()};
  }

  // Spreads the hash over all bits (std::hash<integer> is the identity).
  static std::size_t mix(std::size_t h) noexcept {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
  }

  const keyed_limiter_options opts_;
  std::unique_ptr<shard[]> shards_;
  std::size_t mask_ = 0;
  std::atomic<std::uint64_t> evicted_stale_{0};
  std::atomic<std::uint64_t> evicted_live_{0};
};

}  // namespace sluice::rate
