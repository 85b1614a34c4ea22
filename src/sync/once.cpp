// once: a three-state word (idle -> running -> finished) plus a wait list.
//
// Interleaving that matters: a caller that lost the idle -> running race parks
// only after checking, under mu_, that the state is not yet finished; finish()
// stores finished under mu_ before it collects the waiters. So a waiter either
// sees finished and does not park, or is in the list when finish() looks.
#include <sluice/once.hpp>
#include <sluice/detail/select_core.hpp>

namespace sluice {

bool once::try_begin() noexcept {
  int expected = idle;
  // relaxed: the winner publishes nothing here; what f does is published by
  // finish()'s release store.
  return state_.compare_exchange_strong(expected, running, std::memory_order_relaxed,
                                        std::memory_order_relaxed);
}

void once::finish() noexcept {
  detail::wake_batch wakes;
  mu_.lock();
  // release: pairs with done()'s acquire, so a caller that sees finished sees
  // everything f did.
  state_.store(finished, std::memory_order_release);
  while (detail::wait_node* n = waiters_.claim_front()) wakes.add(n);
  mu_.unlock();
}

bool once::park(detail::waiter& w, detail::wait_node& n, detail::task_record* t,
                std::coroutine_handle<> h) noexcept {
  mu_.lock();
  if (state_.load(std::memory_order_acquire) == finished) {
    mu_.unlock();
    return false;
  }
  w.task = t;
  n.owner = &w;
  detail::prepare_park(t, h, detail::wait_reason::once);
  waiters_.push_back(&n);
  mu_.unlock();  // publishes the parked task: touch nothing after this
  return true;
}

void once::remove_waiter(detail::wait_node& n) noexcept {
  mu_.lock();
  waiters_.remove(&n);
  mu_.unlock();
}

}  // namespace sluice
