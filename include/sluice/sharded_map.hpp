// sharded_map: a hash map that many tasks (on many workers) share safely.
// Go: what handlers reach for sync.Map or a map guarded by a sync.RWMutex for —
// a session table, a per-tenant counter map, a cache of parsed configs.
//
// One map behind one lock makes every worker queue on one cache line. A
// sharded_map splits the keys over a fixed number of shards (a power of two),
// each with its own reader-writer lock and its own std::unordered_map, so
// operations on different shards never touch the same lock and readers of one
// shard share its lock. Every operation locks one shard briefly and never
// across a suspension, so it works the same from tasks and from plain threads
// outside a runtime, and never suspends a task.
//
//   sluice::sharded_map<std::string, session> sessions;        // default shard count
//   sessions.insert_or_assign(id, session{user});
//   if (auto s = sessions.find(id)) greet(s->user);             // a copy, taken under the lock
//   sessions.visit(id, [](session& s) { ++s.hits; });           // in place, under the lock
//   auto cfg = configs.compute_if_absent(tenant, [&] { return parse(tenant); });  // once per key
//
// Callbacks (compute_if_absent's fn, visit's, for_each's) run under a shard's
// lock: they must be short, must not block or suspend, and must not call into
// the same map (the shard's lock is not reentrant: that deadlocks).
//
// Whole-map operations (size, clear, for_each) go shard by shard: they are not
// atomic snapshots. Keys inserted or erased concurrently may or may not be
// seen, but a key present throughout is seen exactly once (a key always lives
// in the same shard).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <utility>

namespace sluice {

// sharded_map<K, V>: a concurrent hash map of copyable-out values, for keys
// shared by many tasks and threads. Neither copyable nor movable: keep one in a
// long-lived object and share a pointer. Hash and KeyEqual must be
// default-constructible and callable concurrently (const, no shared mutable
// state). Go: sync.Map, or map[K]V with a sync.RWMutex.
template <class K, class V, class Hash = std::hash<K>, class KeyEqual = std::equal_to<K>>
class sharded_map {
 public:
  using key_type = K;
  using mapped_type = V;

  // The largest shard count the constructor accepts. (Go's sync.Map has no
  // shards: no equivalent.)
  static constexpr std::size_t max_shards = std::size_t{1} << 16;

  // The shard count used by default: the power of two at or above four per
  // hardware thread, at least 16 and at most 1024. With four shards per core
  // two writers running at the same moment rarely pick the same shard, and the
  // memory stays small (a shard is two cache lines).
  static std::size_t default_shard_count() noexcept {
    const std::size_t cores = std::thread::hardware_concurrency();
    std::size_t n = 16;
    while (n < 4 * cores && n < 1024) n *= 2;
    return n;
  }

  // An empty map with `shards` shards. Throws std::invalid_argument unless
  // shards is a power of two in [1, max_shards]. Go: `var m sync.Map`.
  explicit sharded_map(std::size_t shards = default_shard_count(), const Hash& hash = Hash(),
                       const KeyEqual& equal = KeyEqual())
      : hash_(hash), mask_(checked_shards(shards) - 1), shift_(shift_for(shards)) {
    shards_ = std::make_unique<shard[]>(shards);
    for (std::size_t i = 0; i < shards; ++i) {
      shards_[i].map = map_type(0, hash, equal);
    }
  }
  sharded_map(const sharded_map&) = delete;
  sharded_map& operator=(const sharded_map&) = delete;
  ~sharded_map() = default;

  // A copy of the value stored for k, or nullopt. Shares the shard's lock.
  // Go: v, ok := m.Load(k).
  std::optional<V> find(const K& k) const {
    const shard& s = shard_for(k);
    std::shared_lock<std::shared_mutex> lock(s.mu);
    auto it = s.map.find(k);
    if (it == s.map.end()) return std::nullopt;
    return it->second;
  }

  // True if k has a value. Shares the shard's lock. Go: _, ok := m.Load(k).
  bool contains(const K& k) const {
    const shard& s = shard_for(k);
    std::shared_lock<std::shared_mutex> lock(s.mu);
    return s.map.find(k) != s.map.end();
  }

  // Stores v for k, replacing any previous value; true if k was absent.
  // Go: m.Store(k, v) (which does not say whether it inserted).
  template <class M>
  bool insert_or_assign(const K& k, M&& v) {
    shard& s = shard_for(k);
    std::unique_lock<std::shared_mutex> lock(s.mu);
    return s.map.insert_or_assign(k, std::forward<M>(v)).second;
  }
  template <class M>
  bool insert_or_assign(K&& k, M&& v) {
    shard& s = shard_for(k);
    std::unique_lock<std::shared_mutex> lock(s.mu);
    return s.map.insert_or_assign(std::move(k), std::forward<M>(v)).second;
  }

  // Constructs V(args...) for k if k is absent; true if it did. A present
  // value is left alone and args are not used. Go: _, loaded := m.LoadOrStore(k, v).
  template <class... Args>
  bool try_emplace(const K& k, Args&&... args) {
    shard& s = shard_for(k);
    std::unique_lock<std::shared_mutex> lock(s.mu);
    return s.map.try_emplace(k, std::forward<Args>(args)...).second;
  }
  template <class... Args>
  bool try_emplace(K&& k, Args&&... args) {
    shard& s = shard_for(k);
    std::unique_lock<std::shared_mutex> lock(s.mu);
    return s.map.try_emplace(std::move(k), std::forward<Args>(args)...).second;
  }

  // Removes k; true if it was present. Go: _, loaded := m.LoadAndDelete(k).
  bool erase(const K& k) {
    shard& s = shard_for(k);
    std::unique_lock<std::shared_mutex> lock(s.mu);
    return s.map.erase(k) != 0;
  }

  // The value for k; if k is absent, stores fn() (or fn(k)) first and returns
  // a copy of that. fn runs at most once per absent key, however many callers
  // race, because it runs under the shard's exclusive lock: it must be short,
  // must not block, and must not touch this map. If fn throws, nothing is
  // stored and the exception propagates. Go: the LoadOrStore-with-a-constructor
  // idiom, done right (no value built and thrown away); Java's computeIfAbsent.
  template <class F>
  V compute_if_absent(const K& k, F&& fn) {
    shard& s = shard_for(k);
    {
      // The common case, a hit, shares the lock with other readers.
      std::shared_lock<std::shared_mutex> lock(s.mu);
      auto it = s.map.find(k);
      if (it != s.map.end()) return it->second;
    }
    std::unique_lock<std::shared_mutex> lock(s.mu);
    auto it = s.map.find(k);  // somebody may have stored it between the two locks
    if (it == s.map.end()) {
      if constexpr (std::is_invocable_v<F&, const K&>) {
        it = s.map.try_emplace(k, std::invoke(fn, k)).first;
      } else {
        it = s.map.try_emplace(k, std::invoke(fn)).first;
      }
    }
    return it->second;
  }

  // Calls fn(V&) on k's value under the shard's exclusive lock (a
  // read-modify-write that no other operation on k can interleave with); true
  // if k was present. fn must be short and must not touch this map.
  // Go: m.Load + update under the map's lock.
  template <class F>
  bool visit(const K& k, F&& fn) {
    shard& s = shard_for(k);
    std::unique_lock<std::shared_mutex> lock(s.mu);
    auto it = s.map.find(k);
    if (it == s.map.end()) return false;
    std::invoke(fn, it->second);
    return true;
  }

  // Calls fn(const V&) on k's value under the shard's shared lock (reading a
  // large value without copying it); true if k was present. Same rules as
  // visit. Go: reading m[k] under rw.RLock().
  template <class F>
  bool cvisit(const K& k, F&& fn) const {
    const shard& s = shard_for(k);
    std::shared_lock<std::shared_mutex> lock(s.mu);
    auto it = s.map.find(k);
    if (it == s.map.end()) return false;
    std::invoke(fn, std::as_const(it->second));
    return true;
  }

  // Calls fn(const K&, V&) for every entry, shard by shard, each shard under
  // its exclusive lock (one at a time). Not a snapshot (see the file comment).
  // Go: m.Range(f), without the early stop.
  template <class F>
  void for_each(F&& fn) {
    for (std::size_t i = 0; i <= mask_; ++i) {
      shard& s = shards_[i];
      std::unique_lock<std::shared_mutex> lock(s.mu);
      for (auto& [key, value] : s.map) std::invoke(fn, key, value);
    }
  }

  // Calls fn(const K&, const V&) for every entry, each shard under its shared
  // lock. Go: ranging over the map under rw.RLock(), one shard at a time.
  template <class F>
  void cfor_each(F&& fn) const {
    for (std::size_t i = 0; i <= mask_; ++i) {
      const shard& s = shards_[i];
      std::shared_lock<std::shared_mutex> lock(s.mu);
      for (const auto& [key, value] : s.map) std::invoke(fn, key, value);
    }
  }

  // The number of entries, summed shard by shard (exact when nothing writes
  // concurrently). Go: counting in m.Range.
  std::size_t size() const {
    std::size_t n = 0;
    for (std::size_t i = 0; i <= mask_; ++i) {
      std::shared_lock<std::shared_mutex> lock(shards_[i].mu);
      n += shards_[i].map.size();
    }
    return n;
  }
  // size() == 0, with the same caveat. Go: len(m) == 0.
  bool empty() const { return size() == 0; }

  // Removes every entry, shard by shard. Go: m.Clear().
  void clear() {
    for (std::size_t i = 0; i <= mask_; ++i) {
      std::unique_lock<std::shared_mutex> lock(shards_[i].mu);
      shards_[i].map.clear();
    }
  }

  // The number of shards given at construction (no Go equivalent).
  std::size_t shard_count() const noexcept { return mask_ + 1; }

 private:
  using map_type = std::unordered_map<K, V, Hash, KeyEqual>;

  // The lock: std::shared_mutex (a pthread rwlock). Readers must scale across
  // cores, and writers must be possible at any time:
  //   * a plain spinlock would serialise the readers of a hot shard;
  //   * a seqlock would let readers run truly in parallel, but only over data
  //     that may be read while it is written; std::unordered_map's nodes and
  //     buckets are not (a reader racing a rehash follows freed pointers), and
  //     values of arbitrary V cannot be copied optimistically;
  //   * a reader-writer lock lets readers of one shard overlap, costing each a
  //     single atomic read-modify-write on the shard's lock word; readers of
  //     different shards touch different cache lines (alignas(64) below).
  // Among reader-writer locks the standard one is enough: sections are short
  // and never suspend, a contended writer sleeps in the kernel instead of
  // burning a core the scheduler needs, and ThreadSanitizer understands it.
  // glibc's default prefers readers, so a shard read without pause could delay
  // its writers; with sections this short that needs a pathological load.
  struct alignas(64) shard {
    mutable std::shared_mutex mu;
    map_type map;
  };

  static std::size_t checked_shards(std::size_t n) {
    if (n == 0 || n > max_shards || (n & (n - 1)) != 0) {
      throw std::invalid_argument(
          "sluice::sharded_map: the shard count must be a power of two in [1, 65536] (got " +
          std::to_string(n) + ")");
    }
    return n;
  }
  static unsigned shift_for(std::size_t n) noexcept {
    unsigned bits = 0;
    while ((std::size_t{1} << bits) < n) ++bits;
    return 64 - bits;
  }

  // Fibonacci hashing: the shard comes from the high bits of hash * 2^64/phi,
  // so that a weak Hash (libstdc++'s identity hash for integers) still spreads
  // consecutive keys over the shards, and the shard does not correlate with
  // the bucket the shard's unordered_map picks from the same hash.
  std::size_t index_of(const K& k) const {
    const std::uint64_t h = static_cast<std::uint64_t>(hash_(k)) * 0x9E3779B97F4A7C15ull;
    // shift_ is 64 for a single shard: the & 63 keeps the shift defined and the
    // mask (0) picks shard 0.
    return static_cast<std::size_t>(h >> (shift_ & 63u)) & mask_;
  }
  shard& shard_for(const K& k) { return shards_[index_of(k)]; }
  const shard& shard_for(const K& k) const { return shards_[index_of(k)]; }

  Hash hash_;
  std::size_t mask_;
  unsigned shift_;
  std::unique_ptr<shard[]> shards_;
};

}  // namespace sluice
