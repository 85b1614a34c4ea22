// Internal: per-worker timer heaps (Go >= 1.14 keeps one 4-ary heap per P; ours
// is 8-ary, see timer_heap).
//
// A timer_node is intrusive: it lives in the frame or object that waits. Two
// firing modes:
//   * fire_locked: called with the heap lock held. Must only claim a waiter and
//     schedule a task (sleep, select's after()). Because firing completes under
//     the lock, whoever later takes the lock to remove the node knows the firing
//     is over and may free it.
//   * fire_unlocked: called after the lock is released (context deadlines,
//     tickers), because the callback takes other locks. The owner must keep the
//     node alive: it holds a reference that the firing path or a successful
//     remove() gives back (see context.cpp, ticker).
// Removing a timer is O(log n) and frees nothing, so abandoned timeouts (every
// select whose after() lost) cost nothing after they are removed.
#pragma once

#include <sluice/clock.hpp>
#include <sluice/detail/spinlock.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

namespace sluice::detail {

class timer_heap;

struct timer_node {
  using fire_fn = void (*)(timer_node*) noexcept;
  clock::time_point when{};
  fire_fn fire = nullptr;
  // At shutdown, nodes of the unlocked kind still in a heap get drop() instead of
  // fire() so their owner can release what it holds.
  fire_fn drop = nullptr;
  bool fire_locked = true;
  // Optional: a line the fire callback will write (a sleeping task's record).
  // A heap that fires a batch prefetches it for every node first, so that those
  // cache misses overlap instead of being paid one after another.
  void* prefetch_hint = nullptr;
  // Which heap holds the node, or nullptr. Written under that heap's lock; read
  // without it only as a hint, then re-checked under the lock.
  std::atomic<timer_heap*> heap{nullptr};
  // The heap the node was last added to; never cleared. remove() always locks
  // it, because a fire_locked callback runs under that lock after the node has
  // already left the heap: taking the lock is what proves the firing is over.
  std::atomic<timer_heap*> home{nullptr};
  std::int32_t index = -1;
};

// A min-heap keyed by deadline, 8-ary and laid out so that the eight children
// of a node fill two whole cache lines: a sift reads two lines per level, and
// 100,000 timers are 6 levels deep instead of 9 (fewer levels also means fewer
// nodes whose `index` a sift rewrites, each a miss in some task's frame).
class timer_heap {
 public:
  timer_heap() { heap_.resize(pad); }
  timer_heap(const timer_heap&) = delete;
  timer_heap& operator=(const timer_heap&) = delete;

  spinlock& lock() noexcept { return mu_; }

  // Requires lock() held.
  void add_locked(timer_node* n);
  // Requires lock() held. Returns false if the node was not in this heap.
  bool remove_locked(timer_node* n) noexcept;

  // Sets n->when, then adds n. Under the lock, so the write is ordered after
  // the reads of whoever last held the lock (a firing that read it).
  void add_locked(timer_node* n, clock::time_point when);

  void add(timer_node* n) {
    mu_.lock();
    add_locked(n);
    mu_.unlock();
  }
  void add(timer_node* n, clock::time_point when) {
    mu_.lock();
    add_locked(n, when);
    mu_.unlock();
  }

  // Removes n from its heap; returns false if it was not in it (it fired, or was
  // never added). When it returns, no fire_locked callback for n is running.
  static bool remove(timer_node* n) noexcept;

  // Runs every timer due at `now` (in batches of 32). Returns the number fired.
  std::size_t run_expired(clock::time_point now) {
    mu_.lock();
    return run_expired_locked(now);
  }
  // As run_expired, but gives up at once if the lock is held (its owner is
  // running them). For idle workers helping a busy one.
  std::size_t try_run_expired(clock::time_point now) {
    if (!mu_.try_lock()) return 0;
    return run_expired_locked(now);
  }

  // Nearest deadline without taking the lock (relaxed hint; exact under the lock).
  std::int64_t earliest_ns() const noexcept { return earliest_.load(std::memory_order_acquire); }
  static constexpr std::int64_t none = INT64_MAX;

  std::size_t size_locked() const noexcept { return heap_.size() - pad; }

  // Shutdown: empties the heap, calling drop() on the nodes that have it.
  void clear();

 private:
  void sift_up(std::size_t i) noexcept;
  void sift_down(std::size_t i) noexcept;
  // The deadline is kept beside the pointer, so comparing children reads the
  // heap's own lines (eight entries are two cache lines) and not eight timer
  // nodes scattered over task frames: with 100,000 sleepers those were a cache
  // miss per child per level, and sift_down was the top of the timers profile.
  struct entry {
    std::int64_t when;
    timer_node* node;
  };
  static constexpr std::size_t arity = 8;
  // Logical index i lives at heap_[i + pad]: the children of i (8i+1 .. 8i+8)
  // then start at a 64-byte boundary, given 64-byte aligned storage.
  static constexpr std::size_t pad = 3;
  static_assert(sizeof(entry) == 16 && (1 + pad) * sizeof(entry) % 64 == 0);
  template <class T>
  struct line_allocator {
    using value_type = T;
    line_allocator() = default;
    template <class U>
    line_allocator(const line_allocator<U>&) noexcept {}
    T* allocate(std::size_t n) {
      return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{64}));
    }
    void deallocate(T* p, std::size_t) noexcept { ::operator delete(p, std::align_val_t{64}); }
    friend bool operator==(line_allocator, line_allocator) noexcept { return true; }
  };
  entry& at(std::size_t i) noexcept { return heap_[i + pad]; }
  std::size_t count() const noexcept { return heap_.size() - pad; }
  void place(std::size_t i, entry e) noexcept {
    at(i) = e;
    e.node->index = static_cast<std::int32_t>(i);
  }
  void update_earliest() noexcept;
  // Requires mu_ held; releases it (unlocked-mode callbacks run after that).
  std::size_t run_expired_locked(clock::time_point now);

  spinlock mu_;
  std::vector<entry, line_allocator<entry>> heap_;
  std::atomic<std::int64_t> earliest_{none};
};

// The timer heap of the worker running this thread; nullptr outside a runtime.
timer_heap* current_timer_heap() noexcept;

inline std::int64_t to_ns(clock::time_point t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

}  // namespace sluice::detail
