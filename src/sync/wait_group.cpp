// wait_group: an atomic counter plus a wait list.
//
// Interleaving that matters: a waiter checks count == 0 under mu_ before it
// parks; add() that brings the count to zero takes mu_ before it collects the
// waiters. So either the waiter sees zero, or it is parked before add() looks.
#include <sluice/wait_group.hpp>
#include <sluice/detail/select_core.hpp>

#include <stdexcept>
#include <string>

namespace sluice {

void wait_group::add(std::int64_t delta) {
  const std::int64_t before = count_.fetch_add(delta, std::memory_order_acq_rel);
  const std::int64_t after = before + delta;
  if (after < 0) {
    count_.fetch_sub(delta, std::memory_order_acq_rel);
    throw std::invalid_argument("sluice::wait_group: negative counter (" + std::to_string(after) +
                                ")");
  }
  if (after != 0 || delta == 0) return;
  detail::wake_batch wakes;
  mu_.lock();
  // Re-check: an add() after ours may have raised the counter again, in which
  // case the waiters keep waiting for that one.
  if (count_.load(std::memory_order_acquire) == 0) {
    while (detail::wait_node* n = waiters_.claim_front()) wakes.add(n);
  }
  mu_.unlock();
}

wait_group::wait_awaiter::~wait_awaiter() {
  if (node_.linked) {
    g_->mu_.lock();
    g_->waiters_.remove(&node_);
    g_->mu_.unlock();
  }
}

bool wait_group::wait_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::task_record* t = detail::require_task("wait_group::wait");
  g_->mu_.lock();
  if (g_->count_.load(std::memory_order_acquire) == 0) {
    g_->mu_.unlock();
    return false;
  }
  waiter_.task = t;
  node_.owner = &waiter_;
  detail::prepare_park(t, h, detail::wait_reason::wait_group);
  g_->waiters_.push_back(&node_);
  g_->mu_.unlock();  // publishes the parked task
  return true;
}

}  // namespace sluice
