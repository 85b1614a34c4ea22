// Per-worker 4-ary min-heap of timer_nodes.
//
// Invariants (all under mu_):
//   * node->heap == this  <=>  node is in heap_ at node->index;
//   * every entry's `when` is to_ns(entry.node->when): nodes do not change their
//     deadline while in a heap;
//   * earliest_ holds heap_[0].when, or `none` when empty; it is a hint
//     read without the lock by idle workers to compute their sleep timeout.
#include <sluice/detail/timer.hpp>

namespace sluice::detail {

void timer_heap::update_earliest() noexcept {
  earliest_.store(heap_.empty() ? none : heap_[0].when, std::memory_order_release);
}

void timer_heap::add_locked(timer_node* n, clock::time_point when) {
  n->when = when;
  add_locked(n);
}

void timer_heap::add_locked(timer_node* n) {
  heap_.push_back(entry{to_ns(n->when), n});
  place(heap_.size() - 1, heap_.back());
  n->heap.store(this, std::memory_order_relaxed);
  n->home.store(this, std::memory_order_release);
  sift_up(heap_.size() - 1);
  update_earliest();
}

bool timer_heap::remove_locked(timer_node* n) noexcept {
  if (n->heap.load(std::memory_order_relaxed) != this) return false;
  const std::size_t i = static_cast<std::size_t>(n->index);
  const entry last = heap_.back();
  heap_.pop_back();
  n->heap.store(nullptr, std::memory_order_relaxed);
  n->index = -1;
  if (i < heap_.size()) {
    place(i, last);
    sift_up(i);
    sift_down(static_cast<std::size_t>(last.node->index));
  }
  update_earliest();
  return true;
}

bool timer_heap::remove(timer_node* n) noexcept {
  // A fire_locked node: lock its home heap even when the node already left it,
  // since its callback may still be running under that lock (timer_node::home).
  // Such nodes live in task frames, destroyed before any heap. Unlocked-mode
  // owners are kept alive by a reference instead and may outlive the runtime,
  // so for them only the heap that holds the node now is used.
  timer_heap* h = n->fire_locked ? n->home.load(std::memory_order_acquire)
                                 : n->heap.load(std::memory_order_acquire);
  if (h == nullptr) return false;
  h->mu_.lock();
  const bool removed = h->remove_locked(n);
  h->mu_.unlock();
  return removed;
}

void timer_heap::sift_up(std::size_t i) noexcept {
  const entry n = heap_[i];
  while (i > 0) {
    const std::size_t parent = (i - 1) / 4;
    if (heap_[parent].when <= n.when) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, n);
}

void timer_heap::sift_down(std::size_t i) noexcept {
  const entry n = heap_[i];
  const std::size_t size = heap_.size();
  for (;;) {
    const std::size_t first = i * 4 + 1;
    if (first >= size) break;
    std::size_t best = first;
    const std::size_t end = first + 4 < size ? first + 4 : size;
    for (std::size_t c = first + 1; c < end; ++c) {
      if (heap_[c].when < heap_[best].when) best = c;
    }
    if (n.when <= heap_[best].when) break;
    place(i, heap_[best]);
    i = best;
  }
  place(i, n);
}

std::size_t timer_heap::run_expired_locked(clock::time_point now) {
  std::size_t fired = 0;
  // Unlocked-mode callbacks run after the lock is released: they take other
  // locks (a context's, a channel's) and select may hold those while it takes
  // this one. A small fixed batch keeps this allocation-free.
  timer_node* deferred[32];
  std::size_t ndeferred = 0;
  const std::int64_t now_ns = to_ns(now);
  while (!heap_.empty() && heap_[0].when <= now_ns && ndeferred < 32) {
    timer_node* n = heap_[0].node;
    remove_locked(n);
    ++fired;
    if (n->fire_locked) {
      n->fire(n);
    } else {
      deferred[ndeferred++] = n;
    }
  }
  mu_.unlock();
  for (std::size_t i = 0; i < ndeferred; ++i) deferred[i]->fire(deferred[i]);
  return fired;
}

void timer_heap::clear() {
  mu_.lock();
  std::vector<entry> left;
  left.swap(heap_);
  for (const entry& e : left) {
    e.node->heap.store(nullptr, std::memory_order_relaxed);
    e.node->home.store(nullptr, std::memory_order_relaxed);  // this heap is going away
    e.node->index = -1;
  }
  update_earliest();
  mu_.unlock();
  for (const entry& e : left) {
    if (e.node->drop != nullptr) e.node->drop(e.node);
  }
}

}  // namespace sluice::detail
