// Internal: parking a task on one or more wait lists.
//
// A task blocked in select (or in any wait that a context, a timer and a channel
// can all end) sits in several wait lists at once, through one wait_node per
// list, all pointing at one shared `waiter`. Exactly one party wins, by the CAS
// in try_claim() (Go's g.selectDone). Rules every list follows:
//   * a party only touches a node while holding the lock of the list it is in;
//   * it claims the waiter before it hands over a value, and hands the value over
//     under that same lock, so a losing case never takes or delivers anything;
//   * it unlinks the node it fired (under the lock) and only then wakes the task;
//   * the woken task unlinks its remaining nodes, taking each list's lock, before
//     its frame (which holds every node) can go away.
#pragma once

#include <sluice/detail/task_record.hpp>

#include <atomic>

namespace sluice::detail {

struct waiter {
  task_record* task = nullptr;
  // -1 while waiting; then the index of the case that won.
  std::atomic<int> fired{-1};

  // acq_rel: the winner's later writes (the value handed over) are published to
  // the task by schedule(); acquire on failure so a loser sees the winner's claim.
  bool try_claim(int case_index) noexcept {
    int expected = -1;
    return fired.compare_exchange_strong(expected, case_index, std::memory_order_acq_rel,
                                         std::memory_order_acquire);
  }
  void wake() noexcept { schedule(task); }
};

// One entry of one wait list. Lives in the waiting task's frame.
struct wait_node {
  wait_node* prev = nullptr;
  wait_node* next = nullptr;
  waiter* owner = nullptr;
  void* slot = nullptr;  // channel value slot: source for a sender, destination for a receiver
  int case_index = 0;
  bool linked = false;   // guarded by the lock of the list the node is in
  bool closed = false;   // set when the channel was closed instead of completing
};

// Intrusive FIFO of wait_nodes. Not thread-safe: guarded by its owner's lock.
// The head is an atomic (relaxed) only so that select's lock-free readiness
// hints may peek at "anyone waiting?" without the lock.
class wait_list {
 public:
  bool empty() const noexcept { return head() == nullptr; }
  wait_node* front() const noexcept { return head(); }
  // Without the lock: a possibly stale "someone may be waiting".
  bool maybe_nonempty() const noexcept { return head() != nullptr; }

  void push_back(wait_node* n) noexcept {
    n->prev = tail_;
    n->next = nullptr;
    if (tail_ != nullptr) {
      tail_->next = n;
    } else {
      head_.store(n, std::memory_order_relaxed);
    }
    tail_ = n;
    n->linked = true;
  }

  void remove(wait_node* n) noexcept {
    if (!n->linked) return;
    if (n->prev != nullptr) {
      n->prev->next = n->next;
    } else {
      head_.store(n->next, std::memory_order_relaxed);
    }
    if (n->next != nullptr) {
      n->next->prev = n->prev;
    } else {
      tail_ = n->prev;
    }
    n->prev = n->next = nullptr;
    n->linked = false;
  }

  // Pops nodes until one whose waiter this caller wins; losers (already claimed
  // by another party) are unlinked and skipped. Returns nullptr when none is left.
  wait_node* claim_front() noexcept {
    while (wait_node* n = head()) {
      remove(n);
      if (n->owner->try_claim(n->case_index)) return n;
    }
    return nullptr;
  }

 private:
  wait_node* head() const noexcept { return head_.load(std::memory_order_relaxed); }
  std::atomic<wait_node*> head_{nullptr};
  wait_node* tail_ = nullptr;
};

}  // namespace sluice::detail
