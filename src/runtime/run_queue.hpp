// Internal: the per-worker run queue (Go's runq) and the global injection queue.
//
// local_queue invariants (Go's runtime/proc.go runqput/runqget/runqgrab):
//   * only the owning worker writes tail_ and the slots in [tail, head + N);
//   * any thread may advance head_, only by CAS, after reading the slots it takes;
//   * a thief that loses the CAS discards what it read (the slots it read may be
//     overwritten concurrently, which is why slots are relaxed atomics);
//   * owner's push: release-store of tail_ publishes the slot written before it;
//     a consumer's acquire-load of tail_ sees that slot.
//   * consumer's CAS on head_ is release, so the owner (which acquire-loads head_
//     before reusing a slot) never overwrites a slot a consumer is still reading.
#pragma once

#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/task_record.hpp>

#include <array>
#include <atomic>
#include <cstdint>

namespace sluice::detail {

class local_queue {
 public:
  static constexpr std::uint32_t capacity = 256;

  // Owner only. Returns false when full.
  bool push(task_record* t) noexcept {
    const std::uint32_t h = head_.load(std::memory_order_acquire);
    const std::uint32_t tl = tail_.load(std::memory_order_relaxed);
    if (tl - h >= capacity) return false;
    buf_[tl % capacity].store(t, std::memory_order_relaxed);
    tail_.store(tl + 1, std::memory_order_release);
    return true;
  }

  // Owner only: moves half of the queue plus `extra` into `batch` (linked through
  // next_run) for the global queue when the local queue is full. Returns the
  // count moved, or 0 if a thief raced us and there is room again.
  std::uint32_t take_half(task_record*& first, task_record*& last) noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    const std::uint32_t tl = tail_.load(std::memory_order_relaxed);
    const std::uint32_t n = (tl - h) / 2;
    if (n == 0 || tl - h < capacity) return 0;
    task_record* batch[capacity / 2];
    for (std::uint32_t i = 0; i < n; ++i) {
      batch[i] = buf_[(h + i) % capacity].load(std::memory_order_relaxed);
    }
    if (!head_.compare_exchange_strong(h, h + n, std::memory_order_release,
                                       std::memory_order_relaxed)) {
      return 0;
    }
    for (std::uint32_t i = 0; i + 1 < n; ++i) batch[i]->next_run = batch[i + 1];
    batch[n - 1]->next_run = nullptr;
    first = batch[0];
    last = batch[n - 1];
    return n;
  }

  // Any thread.
  task_record* pop() noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint32_t tl = tail_.load(std::memory_order_acquire);
      if (tl == h) return nullptr;
      task_record* t = buf_[h % capacity].load(std::memory_order_relaxed);
      if (head_.compare_exchange_weak(h, h + 1, std::memory_order_release,
                                      std::memory_order_acquire)) {
        // Tasks often arrive here from another worker (stolen, or made by a
        // spawner on another core), so their records are on lines that core
        // wrote. Start fetching the next one while this one runs.
        if (tl - h > 1) {
          const char* next = reinterpret_cast<const char*>(
              buf_[(h + 1) % capacity].load(std::memory_order_relaxed));
          __builtin_prefetch(next);
          __builtin_prefetch(next + 64);
        }
        return t;
      }
    }
  }

  // Thief: moves half of `victim`'s tasks into this (empty, owned-by-caller)
  // queue. Returns one of them to run now, or nullptr.
  task_record* steal_from(local_queue& victim) noexcept {
    const std::uint32_t my_tail = tail_.load(std::memory_order_relaxed);
    std::uint32_t h = victim.head_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint32_t tl = victim.tail_.load(std::memory_order_acquire);
      std::uint32_t n = tl - h;
      n -= n / 2;
      if (n == 0) return nullptr;
      if (n > capacity / 2) {  // inconsistent snapshot (head moved under us)
        h = victim.head_.load(std::memory_order_acquire);
        continue;
      }
      for (std::uint32_t i = 0; i < n; ++i) {
        buf_[(my_tail + i) % capacity].store(
            victim.buf_[(h + i) % capacity].load(std::memory_order_relaxed),
            std::memory_order_relaxed);
      }
      if (victim.head_.compare_exchange_strong(h, h + n, std::memory_order_acq_rel,
                                               std::memory_order_acquire)) {
        --n;
        task_record* t = buf_[(my_tail + n) % capacity].load(std::memory_order_relaxed);
        if (n != 0) tail_.store(my_tail + n, std::memory_order_release);
        return t;
      }
    }
  }

  bool empty() const noexcept {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
  }
  std::uint32_t size() const noexcept {
    return tail_.load(std::memory_order_acquire) - head_.load(std::memory_order_acquire);
  }

 private:
  alignas(64) std::atomic<std::uint32_t> head_{0};
  alignas(64) std::atomic<std::uint32_t> tail_{0};
  std::array<std::atomic<task_record*>, capacity> buf_{};
};

// Global FIFO for tasks made runnable from outside a worker and for local-queue
// overflow. A lock is fine: it is only touched every 61 scheduling rounds, on
// overflow, and by idle workers.
class global_queue {
 public:
  void push(task_record* t) noexcept { push_batch(t, t, 1); }
  void push_batch(task_record* first, task_record* last, std::uint32_t n) noexcept {
    last->next_run = nullptr;
    mu_.lock();
    if (tail_ != nullptr) {
      tail_->next_run = first;
    } else {
      head_ = first;
    }
    tail_ = last;
    // seq_cst: pairs with park()'s seq_cst increment of npidle_ then load of
    // size_ (store-load handshake; see scheduler.hpp).
    size_.store(size_.load(std::memory_order_relaxed) + n, std::memory_order_seq_cst);
    mu_.unlock();
  }
  task_record* pop() noexcept {
    if (empty()) return nullptr;
    mu_.lock();
    task_record* t = head_;
    if (t != nullptr) {
      head_ = t->next_run;
      if (head_ == nullptr) tail_ = nullptr;
      size_.store(size_.load(std::memory_order_relaxed) - 1, std::memory_order_release);
    }
    mu_.unlock();
    return t;
  }
  // Takes up to `max` tasks: returns the first, pushes the others into `local`.
  task_record* pop_batch(local_queue& local, std::uint32_t max) noexcept {
    if (empty()) return nullptr;
    mu_.lock();
    task_record* first = head_;
    if (first == nullptr) {
      mu_.unlock();
      return nullptr;
    }
    head_ = first->next_run;
    std::uint32_t taken = 1;
    while (head_ != nullptr && taken < max) {
      task_record* t = head_;
      // Read the link before the push: once in the local queue, t can be stolen,
      // run, and re-queued (rewriting next_run) or freed by another worker.
      task_record* next = t->next_run;
      if (!local.push(t)) break;
      head_ = next;
      ++taken;
    }
    if (head_ == nullptr) tail_ = nullptr;
    size_.store(size_.load(std::memory_order_relaxed) - taken, std::memory_order_release);
    mu_.unlock();
    return first;
  }
  bool empty() const noexcept { return size_.load(std::memory_order_seq_cst) == 0; }
  std::size_t size() const noexcept { return size_.load(std::memory_order_acquire); }

 private:
  spinlock mu_;
  task_record* head_ = nullptr;
  task_record* tail_ = nullptr;
  std::atomic<std::size_t> size_{0};
};

}  // namespace sluice::detail
