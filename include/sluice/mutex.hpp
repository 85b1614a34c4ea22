// Mutual exclusion between tasks: mutex and rw_mutex. Go: sync.Mutex, sync.RWMutex.
//
// Use a mutex when tasks share state that a channel would make awkward (a cache,
// a counter map). Locking suspends the task, never the worker thread, and the
// lock is not tied to the task that took it (as in Go, another task may unlock).
// Use rw_mutex when reads far outnumber writes and a read section is long enough
// to be worth sharing.
//
//   sluice::mutex mu;
//   {
//     auto g = co_await mu.lock();   // suspends while another task holds it
//     ++hits[key];
//   }                                // unlocked here
//
//   sluice::rw_mutex rw;
//   { auto r = co_await rw.lock_shared(); read(table); }   // readers share
//   { auto w = co_await rw.lock(); write(table); }         // a writer is alone
//
// Both hand out move-only RAII guards; the try_ variants never suspend and
// return std::nullopt when the lock is not free. Unlocking a lock that is not
// held throws std::logic_error (Go: a fatal error); from a guard's destructor
// that means std::terminate. A lock must be awaited from a task; the try_ forms
// and unlock also work outside a runtime.
//
// Fairness, as Go's: see the class comments. Neither lock is reentrant.
#pragma once

#include <sluice/clock.hpp>
#include <sluice/detail/lock_guard.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/task_record.hpp>
#include <sluice/detail/waiter.hpp>
#include <sluice/task.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <utility>

namespace sluice {

namespace detail {

// A wait_list that can also queue at the front: a mutex waiter that was woken
// in normal mode and lost the race to a running task goes back to the head of
// the line (Go's queueLifo), not to the tail. Not thread-safe: guarded by the
// mutex's spinlock. Same node rules as wait_list.
class mutex_wait_queue {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  void push_back(wait_node* n) noexcept;
  void push_front(wait_node* n) noexcept;
  void remove(wait_node* n) noexcept;
  // Pops nodes until one whose waiter this caller wins (see wait_list).
  wait_node* claim_front() noexcept;

 private:
  wait_node* head_ = nullptr;
  wait_node* tail_ = nullptr;
};

}  // namespace detail

// mutex: a lock for tasks. Go: sync.Mutex.
//
// Normal mode: a running task that finds the mutex free takes it, even if
// others are queued (it is already on a CPU: handing over would cost a context
// switch per lock). unlock wakes the first waiter, which then competes with
// such newcomers; if it loses it goes back to the head of the queue.
// Starvation mode: when a woken waiter has waited more than
// `starvation_threshold` (1 ms) and still loses, the mutex stops letting
// newcomers in: unlock hands ownership directly to the first waiter (FIFO) and
// newcomers queue at the tail. It returns to normal mode when the waiter that
// receives the lock is the last one or waited less than the threshold.
//
// | state                 | lock()                  | unlock()                           |
// |-----------------------|-------------------------|------------------------------------|
// | free                  | takes it (one fetch_or) | throws std::logic_error            |
// | held, no waiters      | queues                  | frees it (one CAS)                 |
// | held, normal mode     | queues                  | frees it, wakes the first waiter   |
// | held, starvation mode | queues at the tail      | hands it to the first waiter       |
class mutex {
 public:
  // How long a waiter may wait before the mutex switches to starvation mode.
  // Go: starvationThresholdNs.
  static constexpr clock::duration starvation_threshold = std::chrono::milliseconds(1);

  // Ownership of a locked mutex; unlocks on destruction. Move-only. Go: the
  // `defer mu.Unlock()` idiom.
  using guard = detail::basic_guard<mutex, false>;

  // The awaitable of lock(). The uncontended path is one fetch_or in await_ready;
  // a contended lock runs a small internal coroutine (inside the same task) that
  // parks and retries until it owns the mutex.
  class lock_awaiter {
   public:
    explicit lock_awaiter(sluice::mutex* m) noexcept : m_(m) {}
    lock_awaiter(const lock_awaiter&) = delete;
    lock_awaiter& operator=(const lock_awaiter&) = delete;
    ~lock_awaiter() = default;
    bool await_ready() noexcept { return m_->try_lock_fast(); }
    [[gnu::noinline]] std::coroutine_handle<> await_suspend(std::coroutine_handle<> h);
    guard await_resume() {
      if (contended_.valid()) finish_contended();
      return guard(m_);
    }

   private:
    void finish_contended();
    sluice::mutex* m_;
    task<void> contended_;  // the retry loop; owns its frame (destroyed with us)
  };

  mutex() noexcept = default;
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  // Suspends until the mutex is ours; the awaited value is the guard. Must be
  // awaited from a task. Go: mu.Lock().
  lock_awaiter lock() noexcept { return lock_awaiter(this); }

  // Takes the mutex if it is free (and not reserved for a starving waiter);
  // std::nullopt otherwise. Never suspends. Go: mu.TryLock().
  std::optional<guard> try_lock() noexcept {
    if (!try_lock_fast()) return std::nullopt;
    return guard(this);
  }

  // Unlocks a mutex taken with lock()/try_lock() whose guard was release()d.
  // Throws std::logic_error if the mutex is not locked. Go: mu.Unlock().
  void unlock() {
    // Fast path: locked, no waiters, no flags. release: publishes the critical
    // section to the next task that takes the lock with an acquire RMW.
    // The load reads a line our lock wrote (nearly free unless other lockers
    // took it since), and it lets the slow path's CAS expect the right value
    // when waiters are queued: freeing the lock while a woken waiter is on its
    // way then costs one CAS, not a failed one and a second.
    std::uint64_t s = state_.load(std::memory_order_relaxed);
    if (s == locked && state_.compare_exchange_strong(s, 0, std::memory_order_release,
                                                      std::memory_order_relaxed)) {
      return;
    }
    unlock_slow(s);
  }

 private:
  class park_awaiter;

  // state_ layout (Go's): bit 0 locked, bit 1 woken (a waiter was woken in
  // normal mode and is on its way: unlock must not wake another), bit 2
  // starving, the rest: number of queued waiters.
  static constexpr std::uint64_t locked = 1;
  static constexpr std::uint64_t woken = 2;
  static constexpr std::uint64_t starving = 4;
  static constexpr std::uint64_t waiter_unit = 8;

  bool try_lock_fast() noexcept {
    // One RMW whatever the waiter bits say: setting `locked` when it is already
    // set changes nothing, and a clear `locked` means the mutex is free to take
    // (starving implies locked, so a mutex reserved for a starving waiter is
    // never taken here). Free with queued waiters is normal mode: barge in, as
    // Go does. acquire: pairs with the release of the previous holder's unlock.
    return (state_.fetch_or(locked, std::memory_order_acquire) & locked) == 0;
  }
  void unlock_slow(std::uint64_t s);
  void unlock_and_wake();
  static task<void> lock_contended(mutex* m);

  std::atomic<std::uint64_t> state_{0};
  detail::spinlock mu_;  // guards waiters_ and every change of the waiter count
  detail::mutex_wait_queue waiters_;
};

// rw_mutex: a reader/writer lock for tasks. Go: sync.RWMutex.
//
// Any number of readers or one writer. Writers are preferred, as in Go: once a
// writer waits, new readers queue behind it (so a stream of readers cannot
// starve it), and when a writer unlocks, every reader that queued behind it is
// admitted at once, before the next writer, which then waits for those readers
// to finish. Among writers the order is FIFO.
//
// | holders     | lock_shared()                      | lock()   |
// |-------------|------------------------------------|----------|
// | none        | takes it (one CAS)                 | takes it |
// | readers     | shares it, unless a writer waits   | queues   |
// | a writer    | queues                             | queues   |
class rw_mutex {
 public:
  // Exclusive (writer) ownership; unlocks on destruction. Move-only.
  // Go: `defer rw.Unlock()`.
  using guard = detail::basic_guard<rw_mutex, false>;

  // Shared (reader) ownership; unlocks on destruction. Move-only.
  // Go: `defer rw.RUnlock()`.
  using shared_guard = detail::basic_guard<rw_mutex, true>;

  // The awaitable of lock() and lock_shared(). The lock is handed over by the
  // unlocking task under the rw_mutex's spinlock, so a woken task owns it.
  template <bool Shared>
  class lock_awaiter {
   public:
    explicit lock_awaiter(rw_mutex* m) noexcept : m_(m) {}
    lock_awaiter(const lock_awaiter&) = delete;
    lock_awaiter& operator=(const lock_awaiter&) = delete;
    ~lock_awaiter() {
      if (node_.linked) m_->remove_waiter(node_, Shared);  // frame destroyed while parked
    }
    bool await_ready() noexcept {
      return Shared ? m_->try_lock_shared_fast() : m_->try_lock_fast();
    }
    [[gnu::noinline]] bool await_suspend(std::coroutine_handle<> h) {
      return m_->park(waiter_, node_, h, Shared);
    }
    std::conditional_t<Shared, shared_guard, guard> await_resume() const noexcept {
      return std::conditional_t<Shared, shared_guard, guard>(m_);
    }

   private:
    rw_mutex* m_;
    detail::waiter waiter_;
    detail::wait_node node_;
  };

  rw_mutex() noexcept = default;
  rw_mutex(const rw_mutex&) = delete;
  rw_mutex& operator=(const rw_mutex&) = delete;

  // Suspends until this task is the only holder; the awaited value is a guard.
  // Must be awaited from a task. Go: rw.Lock().
  lock_awaiter<false> lock() noexcept { return lock_awaiter<false>(this); }
  // Suspends until this task shares the lock with other readers (never while a
  // writer holds or waits for it); the awaited value is a shared_guard. Must be
  // awaited from a task. Go: rw.RLock().
  lock_awaiter<true> lock_shared() noexcept { return lock_awaiter<true>(this); }

  // Takes the lock if nobody holds it; std::nullopt otherwise. Go: rw.TryLock().
  std::optional<guard> try_lock() noexcept {
    if (!try_lock_fast()) return std::nullopt;
    return guard(this);
  }
  // Shares the lock if no writer holds or waits for it; std::nullopt otherwise.
  // Go: rw.TryRLock().
  std::optional<shared_guard> try_lock_shared() noexcept {
    if (!try_lock_shared_fast()) return std::nullopt;
    return shared_guard(this);
  }

  // Releases writer ownership taken without a guard (or after guard::release()).
  // Throws std::logic_error if no writer holds the lock. Go: rw.Unlock().
  void unlock();
  // Releases one reader's share. Throws std::logic_error if no reader holds
  // the lock. Go: rw.RUnlock().
  void unlock_shared();

 private:
  // state_ layout: bits 0-31 readers holding the lock (each is a task, so 2^32
  // cannot be reached); writer_held; the two
  // "waiting" bits mirror whether writers_/readers_ are non-empty (changed only
  // under mu_) so that the lock-free paths know when they must take mu_.
  static constexpr std::uint64_t reader_mask = 0xffffffffu;
  static constexpr std::uint64_t writer_held = std::uint64_t{1} << 32;
  static constexpr std::uint64_t writers_waiting = std::uint64_t{1} << 33;
  static constexpr std::uint64_t readers_waiting = std::uint64_t{1} << 34;

  bool try_lock_fast() noexcept {
    // acquire: pairs with the release of the previous writer's or readers' unlock.
    std::uint64_t s = 0;
    return state_.compare_exchange_strong(s, writer_held, std::memory_order_acquire,
                                          std::memory_order_relaxed);
  }
  bool try_lock_shared_fast() noexcept {
    std::uint64_t s = state_.load(std::memory_order_relaxed);
    while ((s & (writer_held | writers_waiting | readers_waiting)) == 0) {
      // acquire: pairs with the release of the last writer's unlock.
      if (state_.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                       std::memory_order_relaxed)) {
        return true;
      }
    }
    return false;
  }
  bool park(detail::waiter& w, detail::wait_node& n, std::coroutine_handle<> h, bool shared);
  void remove_waiter(detail::wait_node& n, bool shared) noexcept;
  void grant_writer_after_readers();
  std::uint64_t waiting_bits_locked() const noexcept;

  std::atomic<std::uint64_t> state_{0};
  detail::spinlock mu_;  // guards readers_, writers_ and the waiting bits
  detail::wait_list readers_;
  detail::wait_list writers_;
};

}  // namespace sluice
