// errgroup: a slot counter with two wait lists (go() callers waiting for a
// slot, wait() callers waiting for zero), all under one spinlock.
//
// Interleavings that matter:
//   * a go() caller parks only after seeing, under mu_, that every slot is
//     taken; a finishing task takes mu_ before it decides between handing its
//     slot to the first parked caller and freeing it. So a freed slot is never
//     missed by a parked caller, and a handed-over slot is never also freed
//     (active_ stays the same: the woken caller owns it when it resumes);
//   * wait() parks only after seeing active_ != 0 under mu_; the task that
//     brings active_ to 0 collects the wait() callers under mu_;
//   * the first exception is stored under mu_ before its task releases its
//     slot, so a wait() that sees active_ == 0 also sees the exception.
#include <sluice/errgroup.hpp>
#include <sluice/detail/select_core.hpp>

#include <stdexcept>
#include <string>

namespace sluice {
namespace detail {

bool errgroup_state::try_take_slot() noexcept {
  mu_.lock();
  const bool ok = limit_ < 0 || active_ < limit_;
  if (ok) ++active_;
  mu_.unlock();
  return ok;
}

bool errgroup_state::park_for_slot(waiter& w, wait_node& n, std::coroutine_handle<> h) {
  task_record* t = require_task("errgroup::go");
  mu_.lock();
  if (limit_ < 0 || active_ < limit_) {
    ++active_;
    mu_.unlock();
    return false;
  }
  w.task = t;
  n.owner = &w;
  prepare_park(t, h, wait_reason::errgroup);
  slot_waiters_.push_back(&n);
  mu_.unlock();  // publishes the parked task: touch nothing after this
  return true;
}

bool errgroup_state::park_for_done(waiter& w, wait_node& n, std::coroutine_handle<> h) {
  task_record* t = require_task("errgroup::wait");
  mu_.lock();
  if (active_ == 0) {
    mu_.unlock();
    return false;
  }
  w.task = t;
  n.owner = &w;
  prepare_park(t, h, wait_reason::errgroup);
  done_waiters_.push_back(&n);
  mu_.unlock();  // publishes the parked task: touch nothing after this
  return true;
}

void errgroup_state::remove_waiter(wait_node& n) noexcept {
  mu_.lock();
  slot_waiters_.remove(&n);
  done_waiters_.remove(&n);
  mu_.unlock();
}

void errgroup_state::release_slot() noexcept {
  wake_batch wakes;
  mu_.lock();
  if (wait_node* n = slot_waiters_.claim_front()) {
    wakes.add(n);  // the slot passes to it: active_ unchanged
  } else if (--active_ == 0) {
    while (wait_node* d = done_waiters_.claim_front()) wakes.add(d);
  }
  mu_.unlock();
}

void errgroup_state::fail(std::exception_ptr e) noexcept {
  mu_.lock();
  const bool first = !error_;
  if (first) error_ = std::move(e);
  mu_.unlock();
  if (first) cancel();
}

void errgroup_state::set_limit(std::int64_t n) {
  if (n == 0) {
    throw std::invalid_argument(
        "sluice::errgroup::set_limit: a limit of 0 would block every go(); use n > 0, or n < 0 "
        "for no limit");
  }
  mu_.lock();
  if (active_ != 0) {
    const std::int64_t active = active_;
    mu_.unlock();
    throw std::logic_error("sluice::errgroup::set_limit: modify limit while " +
                           std::to_string(active) + " tasks in the group are still active");
  }
  limit_ = n < 0 ? -1 : n;
  mu_.unlock();
}

std::exception_ptr errgroup_state::finish_wait() noexcept {
  cancel();
  mu_.lock();
  std::exception_ptr e = error_;
  mu_.unlock();
  return e;
}

}  // namespace detail

errgroup::errgroup()
    : state_(detail::ref_ptr<detail::errgroup_state>::adopt(new detail::errgroup_state())) {}

std::pair<errgroup, context> errgroup::with_context(const context& parent) {
  context_with_cancel c = with_cancel(parent);
  errgroup g;
  g.state_->cancel = c.cancel;
  return {std::move(g), std::move(c.ctx)};
}

}  // namespace sluice
