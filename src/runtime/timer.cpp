// Per-worker 8-ary min-heap of timer_nodes (layout: timer.hpp).
//
// Invariants (all under mu_):
//   * node->heap == this  <=>  node is in the heap at logical index node->index
//     (heap_[index + pad]; heap_'s first `pad` entries are never used);
//   * every entry's `when` is to_ns(entry.node->when): nodes do not change their
//     deadline while in a heap;
//   * earliest_ holds the root's `when`, or `none` when empty; it is a hint
//     read without the lock by idle workers to compute their sleep timeout.
#include <sluice/detail/timer.hpp>

namespace sluice::detail {

void timer_heap::update_earliest() noexcept {
  earliest_.store(count() == 0 ? none : at(0).when, std::memory_order_release);
}

void timer_heap::add_locked(timer_node* n, clock::time_point when) {
  n->when = when;
  add_locked(n);
}

void timer_heap::add_locked(timer_node* n) {
  heap_.push_back(entry{to_ns(n->when), n});
  place(count() - 1, heap_.back());
  n->heap.store(this, std::memory_order_relaxed);
  n->home.store(this, std::memory_order_release);
  sift_up(count() - 1);
  update_earliest();
}

bool timer_heap::remove_locked(timer_node* n) noexcept {
  if (n->heap.load(std::memory_order_relaxed) != this) return false;
  const std::size_t i = static_cast<std::size_t>(n->index);
  const entry last = heap_.back();
  heap_.pop_back();
  n->heap.store(nullptr, std::memory_order_relaxed);
  n->index = -1;
  if (i < count()) {
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
  const entry n = at(i);
  while (i > 0) {
    const std::size_t parent = (i - 1) / arity;
    if (at(parent).when <= n.when) break;
    place(i, at(parent));
    i = parent;
  }
  place(i, n);
}

void timer_heap::sift_down(std::size_t i) noexcept {
  const entry n = at(i);
  const std::size_t size = count();
  for (;;) {
    const std::size_t first = i * arity + 1;
    if (first >= size) break;
    std::size_t best = first;
    const std::size_t end = first + arity < size ? first + arity : size;
    for (std::size_t c = first + 1; c < end; ++c) {
      if (at(c).when < at(best).when) best = c;
    }
    if (n.when <= at(best).when) break;
    place(i, at(best));
    i = best;
  }
  place(i, n);
}

std::size_t timer_heap::run_expired_locked(clock::time_point now) {
  // Collect a batch of due nodes, then prefetch what their callbacks will
  // write, then fire them: the nodes and the task records behind them were
  // last touched long ago, and one miss after another was most of the cost of
  // firing. Unlocked-mode callbacks run after the lock is released: they take
  // other locks (a context's, a channel's) and select may hold those while it
  // takes this one. A small fixed batch keeps this allocation-free.
  // Batches repeat (re-taking the lock) until nothing due is left.
  constexpr std::size_t batch = 32;
  const std::int64_t now_ns = to_ns(now);
  std::size_t fired = 0;
  for (;;) {
    timer_node* due[batch];
    std::size_t ndue = 0;
    while (ndue < batch && count() != 0 && at(0).when <= now_ns) {
      timer_node* n = at(0).node;
      remove_locked(n);
      if (n->prefetch_hint != nullptr) __builtin_prefetch(n->prefetch_hint, 1);
      due[ndue++] = n;
    }
    std::size_t ndeferred = 0;
    for (std::size_t i = 0; i < ndue; ++i) {
      timer_node* n = due[i];
      if (n->fire_locked) {
        n->fire(n);
      } else {
        due[ndeferred++] = n;  // compacts the unlocked ones to the front, in order
      }
    }
    const bool more = ndue == batch && count() != 0 && at(0).when <= now_ns;
    mu_.unlock();
    for (std::size_t i = 0; i < ndeferred; ++i) due[i]->fire(due[i]);
    fired += ndue;
    if (!more) return fired;
    mu_.lock();
  }
}

void timer_heap::clear() {
  std::vector<entry, line_allocator<entry>> left(pad);  // allocated before locking
  mu_.lock();
  left.swap(heap_);
  left.erase(left.begin(), left.begin() + pad);
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
