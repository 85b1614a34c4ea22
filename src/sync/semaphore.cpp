// semaphore: x/sync's Weighted, with the context race settled by the shared
// waiter CAS of select.
//
// Invariants (guarded by mu_):
//   * 0 <= cur_ <= size_;
//   * waiters_ is FIFO; a queued node whose waiter is still unclaimed (-1) is a
//     live acquirer; a node whose waiter was claimed by its context is dead: its
//     task will unlink it (cancel_waiter) once it runs;
//   * after every change (release, a cancelled head, a try), notify_locked has
//     granted units to the longest prefix of live waiters that fits, so a live
//     head never waits while its units are free.
//
// The race between a grant and the context: both parties claim the one waiter
// of the acquiring task (select's CAS). If notify_locked wins, it adds the
// units under mu_ and the task returns success; if the context wins,
// notify_locked skips the node and gives the units to the next waiter. Either
// way no unit is lost or given twice. On top of that, as x/sync does, a task
// that was granted its units but finds its context done by the time it runs
// gives them back and reports the context's error, so "ctx done before acquire
// returned" always means "no units held".
#include <sluice/semaphore.hpp>
#include <sluice/detail/select_core.hpp>

#include <stdexcept>
#include <string>
#include <variant>

namespace sluice {

namespace {

void check_units(std::int64_t n, const char* what) {
  if (n < 0) {
    throw std::invalid_argument(std::string("sluice::semaphore::") + what +
                                ": negative number of units (" + std::to_string(n) + ")");
  }
}

}  // namespace

// acquire(n) as a select case: completes by taking n units.
class semaphore::acquire_case {
 public:
  using result_type = std::monostate;
  static constexpr bool is_default = false;
  static constexpr detail::wait_reason reason = detail::wait_reason::semaphore;

  acquire_case(semaphore* s, std::int64_t n) noexcept : s_(s), n_(n) {}
  detail::spinlock* lock() const noexcept { return &s_->mu_; }
  void prepare() const noexcept {}
  bool try_complete(result_type&, detail::wake_batch& wakes) noexcept {
    s_->notify_locked(wakes);  // serve the queue first: it goes before us
    return s_->try_take_locked(n_);
  }
  void enqueue(detail::wait_node& n, result_type&) noexcept {
    n.slot = &n_;
    s_->waiters_.push_back(&n);
  }
  void cancel(detail::wait_node& n) noexcept { s_->cancel_waiter(n); }
  void finish(detail::wait_node&, result_type&) const noexcept {}

 private:
  semaphore* s_;
  std::int64_t n_;
};

semaphore::semaphore(std::int64_t size) : size_(size) {
  if (size < 0) {
    throw std::invalid_argument("sluice::semaphore: negative size (" + std::to_string(size) + ")");
  }
}

task<std::error_code> semaphore::acquire(const context& ctx, std::int64_t n) {
  check_units(n, "acquire");  // here, not in the coroutine: throws at the call
  return acquire_waiting(ctx, n);
}

task<std::error_code> semaphore::acquire_waiting(context ctx, std::int64_t n) {
  // x/sync: a context that is already done wins even if the units are free.
  if (std::error_code e = ctx.err()) co_return e;
  if (try_acquire(n)) co_return std::error_code{};
  if (n > size_) {
    // Can never be satisfied: wait for the context, as x/sync does.
    auto done = ctx.done();
    co_await done;
    co_return ctx.err();
  }
  if (ctx.node()->target() == nullptr) {
    // Never cancelled: wait on the semaphore alone (shows as "semaphore acquire").
    detail::select_awaiter<acquire_case> wait(acquire_case(this, n));
    co_await wait;
    co_return std::error_code{};
  }
  detail::select_awaiter<acquire_case, done_case> wait(acquire_case(this, n), sluice::done(ctx));
  const auto r = co_await wait;
  if (r.index() == 0) {
    // Granted; but if ctx ended meanwhile, report that and give the units back.
    if (std::error_code e = ctx.err()) {
      release(n);
      co_return e;
    }
    co_return std::error_code{};
  }
  co_return ctx.err();
}

bool semaphore::try_acquire(std::int64_t n) {
  check_units(n, "try_acquire");
  detail::wake_batch wakes;
  mu_.lock();
  notify_locked(wakes);
  const bool ok = try_take_locked(n);
  mu_.unlock();
  return ok;
}

void semaphore::release(std::int64_t n) {
  check_units(n, "release");
  detail::wake_batch wakes;
  mu_.lock();
  if (n > cur_) {
    const std::int64_t held = cur_;
    mu_.unlock();
    throw std::logic_error("sluice::semaphore::release: releasing " + std::to_string(n) +
                           " units but only " + std::to_string(held) + " are held");
  }
  cur_ -= n;
  notify_locked(wakes);
  mu_.unlock();
}

// Requires mu_. Takes n units if they are free and nobody live is queued (call
// notify_locked first, so that the queue is served before us).
bool semaphore::try_take_locked(std::int64_t n) noexcept {
  if (!waiters_.empty() || size_ - cur_ < n) return false;
  cur_ += n;
  return true;
}

// Requires mu_. Grants units to queued waiters in order while the head fits
// (x/sync's notifyWaiters); dead heads (claimed by their context) are dropped.
void semaphore::notify_locked(detail::wake_batch& wakes) noexcept {
  while (detail::wait_node* n = waiters_.front()) {
    // acquire: a claimed waiter is dead; its task unlinks nothing once we did.
    if (n->owner->fired.load(std::memory_order_acquire) != -1) {
      waiters_.remove(n);
      continue;
    }
    const std::int64_t need = *static_cast<const std::int64_t*>(n->slot);
    // Not enough for the head: stop, even if a smaller request behind it would
    // fit (serving it could starve large requests forever).
    if (size_ - cur_ < need) return;
    waiters_.remove(n);
    // The context may claim the waiter between our look and this CAS: then it
    // is dead and the units go to the next one.
    if (!n->owner->try_claim(n->case_index)) continue;
    cur_ += need;
    wakes.add(n);
  }
}

// A waiter's context won (or its frame is going away): leave the queue. If it
// was the head it may have been blocking others that fit: serve them (x/sync).
void semaphore::cancel_waiter(detail::wait_node& n) noexcept {
  detail::wake_batch wakes;
  mu_.lock();
  if (n.linked) {
    const bool head = waiters_.front() == &n;
    waiters_.remove(&n);
    if (head) notify_locked(wakes);
  }
  mu_.unlock();
}

}  // namespace sluice
