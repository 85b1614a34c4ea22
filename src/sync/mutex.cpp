// mutex and rw_mutex.
//
// mutex invariants (state_ bits: locked, woken, starving, waiter count):
//   * the waiter count equals the number of nodes in waiters_; both change only
//     under mu_ (the lock-free paths touch only `locked`, by an atomic fetch_or
//     or a CAS from an exact expected value, so they never lose a concurrent
//     count change);
//   * a waiter joins the queue and bumps the count in one critical section of
//     mu_, and an unlock that sees the count > 0 takes mu_ before it looks at the
//     queue: so a waiter is either seen by the unlock or sees the mutex free
//     (no lost wake-up);
//   * woken is set only by an unlock that wakes a waiter in normal mode (none
//     wakes a second waiter while it is set) and cleared by the woken waiter's
//     next attempt, whether it then takes the lock or queues again;
//   * starving implies locked and at least one waiter: it is set only by a
//     waiter that queues while the mutex is locked, and the hand-off keeps
//     `locked` set (ownership passes to the first waiter) and clears starving
//     when it gives the lock to the last waiter or to one that waited < 1 ms;
//   * an unlock's last touch of the mutex is either its releasing CAS (nobody
//     to wake) or the release of mu_ after it chose, still holding the lock,
//     the waiter to wake; a task may therefore destroy a mutex as soon as its
//     own use is over, as with std::mutex.
//
// Interleavings of the lock-free paths with the locked ones (all settled by
// atomic RMWs on state_: lock's fetch_or, and CASes that fail and retry
// whenever another party changed the value):
//   * an unlock racing a waiter that queues: either the waiter's CAS (count+1)
//     comes first and the unlock sees the count and takes mu_ (where the waiter
//     is already queued), or the unlock's CAS comes first and the waiter sees
//     the mutex free and takes it;
//   * a running task barging while a woken waiter is on its way: allowed (that
//     is normal mode); the waiter's next attempt fails and it re-queues at the
//     head, setting starving in the same CAS if it has waited > 1 ms;
//   * a holder unlocking while a waiter sets starving: the waiter's CAS needs
//     `locked` set, the holder's releasing CAS needs the old value; whichever
//     loses retries, so the holder either hands off or the waiter takes it.
//
// Why a contended lock runs a helper coroutine: in normal mode a woken waiter
// does not own the mutex; it has to retry and may have to park again. A single
// co_await can suspend only once, so the retry loop (lock_contended) runs as a
// nested task<void> inside the locking task and resumes the caller only once
// the mutex is its own. Its frame costs one allocation per contended lock; the
// uncontended path allocates nothing.
//
// rw_mutex invariants (state_: reader count, writer_held, writers_waiting,
// readers_waiting):
//   * writer_held implies reader count 0;
//   * writers_waiting == !writers_.empty() and readers_waiting ==
//     !readers_.empty(), maintained under mu_;
//   * readers_ is non-empty only while a writer holds or waits (readers queue
//     only then, and a writer's unlock admits all of them at once);
//   * the lock is handed over under mu_ (to every queued reader, or to the first
//     writer), so a woken task owns it: no retry loop is needed;
//   * when the reader count drops to 0 with writers_waiting set, that last
//     reader hands the lock to the first writer (no reader can join meanwhile:
//     writers_waiting turns the readers' fast path off).
// Interleaving that matters: a writer queuing (CAS: set writers_waiting, under
// mu_) against the last reader leaving (CAS: count - 1, lock-free). If the
// reader's CAS wins, the writer's retry sees no readers and takes the lock; if
// the writer's wins, the reader sees writers_waiting and takes mu_ to hand the
// lock over, by which time the writer is queued.
#include <sluice/mutex.hpp>
#include <sluice/detail/select_core.hpp>

#include <stdexcept>

namespace sluice {

// ---- mutex_wait_queue --------------------------------------------------------

namespace detail {

void mutex_wait_queue::push_back(wait_node* n) noexcept {
  n->prev = tail_;
  n->next = nullptr;
  if (tail_ != nullptr) {
    tail_->next = n;
  } else {
    head_ = n;
  }
  tail_ = n;
  n->linked = true;
}

void mutex_wait_queue::push_front(wait_node* n) noexcept {
  n->prev = nullptr;
  n->next = head_;
  if (head_ != nullptr) {
    head_->prev = n;
  } else {
    tail_ = n;
  }
  head_ = n;
  n->linked = true;
}

void mutex_wait_queue::remove(wait_node* n) noexcept {
  if (!n->linked) return;
  if (n->prev != nullptr) {
    n->prev->next = n->next;
  } else {
    head_ = n->next;
  }
  if (n->next != nullptr) {
    n->next->prev = n->prev;
  } else {
    tail_ = n->prev;
  }
  n->prev = n->next = nullptr;
  n->linked = false;
}

wait_node* mutex_wait_queue::claim_front() noexcept {
  while (wait_node* n = head_) {
    remove(n);
    if (n->owner->try_claim(n->case_index)) return n;
  }
  return nullptr;
}

}  // namespace detail

// ---- mutex -------------------------------------------------------------------

// One contended lock() in flight: the task's place in the queue. Lives in the
// frame of lock_contended and is awaited once per attempt.
class mutex::park_awaiter {
 public:
  explicit park_awaiter(mutex* m) noexcept : m_(m) {
    node_.owner = &waiter_;
    node_.slot = this;  // unlock_and_wake reads wait_start_, sets handed_off_ through it
  }
  park_awaiter(const park_awaiter&) = delete;
  park_awaiter& operator=(const park_awaiter&) = delete;
  ~park_awaiter() {
    // Only when the frame is destroyed while parked (runtime shutdown).
    if (node_.linked) {
      m_->mu_.lock();
      m_->waiters_.remove(&node_);
      m_->state_.fetch_sub(waiter_unit, std::memory_order_relaxed);
      m_->mu_.unlock();
    }
  }

  bool await_ready() const noexcept { return false; }

  // Takes the mutex if normal mode lets us (returns false), else queues: at the
  // tail the first time, at the head after a lost race (Go's queueLifo).
  [[gnu::noinline]] bool await_suspend(std::coroutine_handle<> h) {
    detail::task_record* t = detail::require_task("mutex::lock");
    const bool requeue = queued_before_;
    if (!queued_before_) wait_start_ = clock::now();  // read under mu_ by unlock_and_wake
    m_->mu_.lock();
    std::uint64_t s = m_->state_.load(std::memory_order_relaxed);
    bool take = false;
    for (;;) {
      take = (s & (locked | starving)) == 0;
      std::uint64_t next = take ? s | locked : s + waiter_unit;
      // Go: switch to starvation mode only while the mutex is held, so that the
      // unlock that follows finds a waiter to hand it to.
      if (!take && starving_ && (s & locked) != 0) next |= starving;
      if (awoke_) next &= ~woken;
      // acquire: when we take the lock, pairs with the previous unlock's release.
      if (m_->state_.compare_exchange_weak(s, next, std::memory_order_acquire,
                                           std::memory_order_relaxed)) {
        break;
      }
    }
    if (take) {
      m_->mu_.unlock();
      owns_ = true;
      return false;
    }
    queued_before_ = true;
    // The previous wake claimed the waiter (fired = 0); re-arm it. No waker
    // can see this node before it is pushed below.
    waiter_.fired.store(-1, std::memory_order_relaxed);
    waiter_.task = t;
    detail::prepare_park(t, h, detail::wait_reason::mutex);
    if (requeue) {
      m_->waiters_.push_front(&node_);
    } else {
      m_->waiters_.push_back(&node_);
    }
    m_->mu_.unlock();  // publishes the parked task: touch nothing after this
    return true;
  }

  void await_resume() noexcept {
    if (owns_) return;
    if (handed_off_) {  // starvation mode: the unlock kept `locked` set for us
      owns_ = true;
      return;
    }
    // Normal-mode wake: the mutex was freed and we must compete for it.
    awoke_ = true;
    if (!starving_ && clock::now() - wait_start_ > starvation_threshold) starving_ = true;
  }

  bool owns() const noexcept { return owns_; }

 private:
  friend class mutex;
  mutex* m_;
  detail::waiter waiter_;
  detail::wait_node node_;
  clock::time_point wait_start_{};
  bool queued_before_ = false;
  bool awoke_ = false;      // woken in normal mode: our next attempt clears `woken`
  bool starving_ = false;   // we waited longer than the threshold
  bool owns_ = false;
  bool handed_off_ = false;  // written by the unlock under mu_, read after the wake
};

task<void> mutex::lock_contended(mutex* m) {
  park_awaiter p(m);
  do {
    co_await p;
  } while (!p.owns());
}

std::coroutine_handle<> mutex::lock_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::require_task("mutex::lock");
  contended_ = lock_contended(m_);
  // Runs the retry loop inside this task; it resumes h once the mutex is ours.
  return contended_.operator co_await().await_suspend(h);
}

void mutex::lock_awaiter::finish_contended() {
  contended_.operator co_await().await_resume();  // rethrows its failure
}

void detail::throw_empty_guard() {
  throw std::logic_error("sluice: unlock through an empty guard (already unlocked or released)");
}

void mutex::unlock_slow(std::uint64_t s) {
  for (;;) {
    if ((s & locked) == 0) throw std::logic_error("sluice::mutex::unlock: the mutex is not locked");
    // Go's rule: in normal mode wake someone only if there are waiters and
    // nobody is on the way already (woken); in starvation mode always hand off.
    if ((s & starving) != 0 || (s >= waiter_unit && (s & woken) == 0)) break;
    // release: publishes the critical section to whoever takes the lock next.
    // This CAS is our last touch of the mutex.
    if (state_.compare_exchange_weak(s, s & ~locked, std::memory_order_release,
                                     std::memory_order_relaxed)) {
      return;
    }
  }
  unlock_and_wake();
}

// Requires: we hold the lock and a waiter must be woken (normal mode) or handed
// the lock (starvation mode). Everything is decided under mu_ while we still
// hold the lock, and mu_.unlock() is our last touch of the mutex: the waiter we
// pick is still a user of the mutex until it has run, so the mutex cannot be
// legitimately destroyed before that (a "last user frees it" pattern is safe).
void mutex::unlock_and_wake() {
  detail::wake_batch wakes;  // destroyed after mu_ is released: wakes then
  mu_.lock();
  // While we hold the lock and mu_, nobody else changes state_: the waiter
  // count and starving change under mu_, woken is set only by an unlock, and
  // a lock-free lock attempt on the held mutex rewrites the same value. The
  // CAS loops are for form.
  std::uint64_t s = state_.load(std::memory_order_relaxed);
  detail::wait_node* n = waiters_.claim_front();
  if (n == nullptr) {
    // Only if the waiters' frames were destroyed (runtime shutdown): just free it.
    while (!state_.compare_exchange_weak(s, s & ~(locked | starving), std::memory_order_release,
                                         std::memory_order_relaxed)) {
    }
  } else if ((s & starving) != 0) {
    // Starvation mode: ownership goes straight to the first waiter; `locked`
    // stays set, so newcomers cannot barge in before it runs.
    auto* p = static_cast<park_awaiter*>(n->slot);
    p->handed_off_ = true;
    const bool last = s / waiter_unit == 1;
    const bool leave_starvation = last || clock::now() - p->wait_start_ < starvation_threshold;
    const std::uint64_t next = s - waiter_unit - (leave_starvation ? starving : 0);
    // relaxed: the new owner is ordered after our critical section by mu_ and
    // by schedule(), not through state_ (nobody acquires while locked stays set).
    while (!state_.compare_exchange_weak(s, next, std::memory_order_relaxed,
                                         std::memory_order_relaxed)) {
    }
  } else {
    // Normal mode: free the lock (a running task may barge in from now on) and
    // wake the first waiter to compete for it.
    // release: publishes the critical section to whoever takes the lock next.
    while (!state_.compare_exchange_weak(s, ((s & ~locked) - waiter_unit) | woken,
                                         std::memory_order_release, std::memory_order_relaxed)) {
    }
  }
  if (n != nullptr) wakes.add(n);
  mu_.unlock();
}

// ---- rw_mutex ----------------------------------------------------------------


std::uint64_t rw_mutex::waiting_bits_locked() const noexcept {
  return (writers_.empty() ? 0 : writers_waiting) | (readers_.empty() ? 0 : readers_waiting);
}

bool rw_mutex::park(detail::waiter& w, detail::wait_node& n, std::coroutine_handle<> h,
                    bool shared) {
  detail::task_record* t = detail::require_task(shared ? "rw_mutex::lock_shared" : "rw_mutex::lock");
  mu_.lock();
  std::uint64_t s = state_.load(std::memory_order_relaxed);
  for (;;) {
    const bool take =
        shared ? (s & (writer_held | writers_waiting | readers_waiting)) == 0 : s == 0;
    const std::uint64_t next =
        take ? (shared ? s + 1 : s | writer_held) : s | (shared ? readers_waiting : writers_waiting);
    // acquire: when we take the lock, pairs with the release of the last unlock.
    if (state_.compare_exchange_weak(s, next, std::memory_order_acquire,
                                     std::memory_order_relaxed)) {
      if (take) {
        mu_.unlock();
        return false;
      }
      break;
    }
  }
  w.task = t;
  n.owner = &w;
  detail::prepare_park(t, h, detail::wait_reason::rw_mutex);
  (shared ? readers_ : writers_).push_back(&n);
  mu_.unlock();  // publishes the parked task: touch nothing after this
  return true;
}

void rw_mutex::remove_waiter(detail::wait_node& n, bool shared) noexcept {
  mu_.lock();
  (shared ? readers_ : writers_).remove(&n);
  std::uint64_t s = state_.load(std::memory_order_relaxed);
  while (!state_.compare_exchange_weak(
      s, (s & ~(writers_waiting | readers_waiting)) | waiting_bits_locked(),
      std::memory_order_relaxed, std::memory_order_relaxed)) {
  }
  mu_.unlock();
}

void rw_mutex::unlock() {
  std::uint64_t s = writer_held;
  // release: publishes the writer's critical section to the next holder.
  if (state_.compare_exchange_strong(s, 0, std::memory_order_release,
                                     std::memory_order_relaxed)) {
    return;
  }
  if ((s & writer_held) == 0) {
    throw std::logic_error("sluice::rw_mutex::unlock: the rw_mutex is not locked for writing");
  }
  detail::wake_batch wakes;
  mu_.lock();
  // Go: the readers that queued behind this writer go first, all of them; the
  // next writer then waits for them (writers_waiting stays set).
  std::uint64_t admitted = 0;
  while (detail::wait_node* r = readers_.claim_front()) {
    wakes.add(r);
    ++admitted;
  }
  detail::wait_node* next_writer = admitted == 0 ? writers_.claim_front() : nullptr;
  if (next_writer != nullptr) wakes.add(next_writer);
  const std::uint64_t waiting = waiting_bits_locked();
  s = state_.load(std::memory_order_relaxed);
  // While a writer holds the lock and we hold mu_, only a failing lock-free
  // attempt can touch state_; the loop is for form. release: publishes the
  // critical section (the new holders are also ordered by schedule()).
  while (!state_.compare_exchange_weak(
      s, admitted | (next_writer != nullptr ? writer_held : 0) | waiting,
      std::memory_order_release, std::memory_order_relaxed)) {
  }
  mu_.unlock();
}

void rw_mutex::unlock_shared() {
  std::uint64_t s = state_.load(std::memory_order_relaxed);
  do {
    if ((s & reader_mask) == 0) {
      throw std::logic_error(
          "sluice::rw_mutex::unlock_shared: the rw_mutex is not locked for reading");
    }
    // acq_rel: release publishes this reader's section; acquire makes the last
    // reader (who hands the lock to a writer) carry every earlier reader's
    // section along (the decrements form one release sequence).
  } while (!state_.compare_exchange_weak(s, s - 1, std::memory_order_acq_rel,
                                         std::memory_order_relaxed));
  if ((s & reader_mask) == 1 && (s & writers_waiting) != 0) grant_writer_after_readers();
}

// The last reader left while a writer waits: give the lock to the first writer.
void rw_mutex::grant_writer_after_readers() {
  detail::wake_batch wakes;
  mu_.lock();
  std::uint64_t s = state_.load(std::memory_order_relaxed);
  if ((s & (reader_mask | writer_held)) == 0) {
    if (detail::wait_node* w = writers_.claim_front()) {
      wakes.add(w);
      const std::uint64_t waiting = waiting_bits_locked();
      // Nobody can join while writers_waiting was set and we hold mu_.
      while (!state_.compare_exchange_weak(s, writer_held | waiting, std::memory_order_release,
                                           std::memory_order_relaxed)) {
      }
    }
  }
  mu_.unlock();
}

}  // namespace sluice
