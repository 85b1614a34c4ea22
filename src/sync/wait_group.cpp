// wait_group: one atomic word (counter, waiter count) plus a wait list.
//
// Interleavings that matter:
//   * a waiter increments the waiter count (CAS, under mu_) only while the
//     counter is non-zero, and parks before releasing mu_; add() that brings
//     the counter to zero and sees waiters takes mu_ and wakes them all. So a
//     waiter either sees zero, or is parked and counted before add() looks;
//   * add() that brings the counter to zero with no waiters returns without
//     touching the object again: a waiter that saw zero (without the lock) may
//     already have destroyed it.
#include <sluice/detail/select_core.hpp>
#include <sluice/wait_group.hpp>

#include <stdexcept>
#include <string>

namespace sluice {

namespace {
constexpr std::uint64_t counter_one = std::uint64_t{1} << 32;
constexpr std::uint64_t waiter_mask = counter_one - 1;
}  // namespace

void wait_group::add(std::int64_t delta) {
  if (delta == 0) return;
  std::uint64_t state = state_.load(std::memory_order_relaxed);
  std::uint64_t next = 0;
  do {
    const std::int64_t counter = static_cast<std::int64_t>(state >> 32) + delta;
    if (counter < 0) {
      throw std::invalid_argument("sluice::wait_group: negative counter (" +
                                  std::to_string(counter) + ")");
    }
    if (counter > INT32_MAX) throw std::invalid_argument("sluice::wait_group: counter overflow");
    next = (static_cast<std::uint64_t>(counter) << 32) | (state & waiter_mask);
    // acq_rel: a waiter that sees zero must see everything done before each
    // done(); the last done() must see the waiter count.
  } while (!state_.compare_exchange_weak(state, next, std::memory_order_acq_rel,
                                         std::memory_order_relaxed));
  if ((next >> 32) != 0 || (next & waiter_mask) == 0) return;
  // Counter is zero and waiters are parked: they keep this object alive.
  detail::wake_batch wakes;
  mu_.lock();
  while (detail::wait_node* n = waiters_.claim_front()) wakes.add(n);
  state_.fetch_and(~waiter_mask, std::memory_order_acq_rel);
  mu_.unlock();
}

wait_group::wait_awaiter::~wait_awaiter() {
  if (node_.linked) {  // frame destroyed while parked (runtime shutdown)
    g_->mu_.lock();
    g_->waiters_.remove(&node_);
    g_->state_.fetch_sub(1, std::memory_order_acq_rel);
    g_->mu_.unlock();
  }
}

bool wait_group::wait_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::task_record* t = detail::require_task("wait_group::wait");
  g_->mu_.lock();
  std::uint64_t state = g_->state_.load(std::memory_order_acquire);
  do {
    if ((state >> 32) == 0) {
      g_->mu_.unlock();
      return false;
    }
  } while (!g_->state_.compare_exchange_weak(state, state + 1, std::memory_order_acq_rel,
                                             std::memory_order_acquire));
  waiter_.task = t;
  node_.owner = &waiter_;
  detail::prepare_park(t, h, detail::wait_reason::wait_group);
  g_->waiters_.push_back(&node_);
  g_->mu_.unlock();  // publishes the parked task
  return true;
}

}  // namespace sluice
