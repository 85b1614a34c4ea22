// The context tree. See context.hpp for the invariants.
//
// Lock order: a node's mu_ is never held while another node's mu_ is taken,
// except parent-then-child is never needed either: cancel() collects children
// under the parent's lock (taking a reference so they cannot die), releases it,
// then cancels each child. A child leaving its parent (cancel func, destructor)
// takes only the parent's lock. select may hold a node's lock together with
// channel and timer-heap locks (in address order); the deadline timer fires in
// unlocked mode, so the heap lock is never held while a node's lock is taken.
#include <sluice/context.hpp>
#include <sluice/error.hpp>

#include <string>

namespace sluice {
namespace detail {

context_node* context_node::background() noexcept {
  // Never freed: one reference is held forever by this static.
  static context_node* const bg = [] {
    auto* n = new context_node();
    n->is_background_ = true;
    return n;
  }();
  return bg;
}

context_node* context_node::make_cancel(context_node* parent,
                                        std::optional<clock::time_point> deadline) {
  auto* n = new context_node();
  n->parent_ = ref_ptr<context_node>::share(parent);
  n->cancellable_ = true;
  n->target_ = n;
  n->cancel_parent_ = parent->target_;
  n->deadline_ = parent->deadline_;
  n->deadline_owner_ = parent->deadline_owner_;
  if (deadline && (!n->deadline_ || *deadline < *n->deadline_)) {
    n->deadline_ = deadline;
    n->deadline_owner_ = n;
  }
  n->timer_.owner = n;
  n->timer_.fire = &fire_deadline;
  n->timer_.drop = &drop_deadline;
  n->timer_.fire_locked = false;
  if (context_node* p = n->cancel_parent_) {
    p->mu_.lock();
    const int parent_state = p->state_.load(std::memory_order_relaxed);
    if (parent_state == 0) {
      n->sib_next_ = p->children_;
      if (p->children_ != nullptr) p->children_->sib_prev_ = n;
      p->children_ = n;
      n->linked_ = true;
    } else {
      n->state_.store(parent_state, std::memory_order_release);
    }
    p->mu_.unlock();
  }
  return n;
}

context_node* context_node::make_value(context_node* parent, const void* key,
                                       std::unique_ptr<context_value_base> value) {
  auto* n = new context_node();
  n->parent_ = ref_ptr<context_node>::share(parent);
  n->target_ = parent->target_;
  n->cancel_parent_ = parent->target_;
  n->deadline_ = parent->deadline_;
  n->deadline_owner_ = parent->deadline_owner_;
  n->key_ = key;
  n->value_ = std::move(value);
  return n;
}

namespace {
// Releasing a context can free its parent, whose release can free its parent...
// A million-deep chain of with_value must not recurse a million times: nested
// releases on this thread are queued and run by the outermost one.
thread_local bool releasing_parents = false;
thread_local std::vector<context_node*>* pending_parents = nullptr;

void release_parent(context_node* p) noexcept {
  if (releasing_parents) {
    pending_parents->push_back(p);
    return;
  }
  std::vector<context_node*> pending;
  releasing_parents = true;
  pending_parents = &pending;
  ref_counted::release(p);
  while (!pending.empty()) {
    context_node* next = pending.back();
    pending.pop_back();
    ref_counted::release(next);
  }
  pending_parents = nullptr;
  releasing_parents = false;
}
}  // namespace

context_node::~context_node() {
  // A signal_context dropped without being cancelled must still unregister.
  if (on_cancel != nullptr && state_.load(std::memory_order_acquire) == 0) on_cancel(this);
  leave_parent();
  // Last: the parent chain keeps cancel_parent_ (an ancestor) alive until here.
  if (context_node* p = parent_.detach()) release_parent(p);
}

void context_node::expire_if_due() const noexcept {
  // Deadlines are checked lazily too, so err() is right even when no timer was
  // armed (nobody waited) or outside a runtime.
  if (deadline_owner_ != nullptr && clock::now() >= *deadline_) {
    deadline_owner_->cancel(errc::deadline_exceeded);
  }
}

std::error_code context_node::err() const noexcept {
  if (target_ == nullptr) return {};
  int s = target_->state_.load(std::memory_order_acquire);
  if (s == 0 && deadline_owner_ != nullptr) {
    expire_if_due();
    s = target_->state_.load(std::memory_order_acquire);
  }
  return s == 0 ? std::error_code{} : make_error_code(static_cast<errc>(s));
}

const context_value_base* context_node::find(const void* key) const noexcept {
  for (const context_node* n = this; n != nullptr; n = n->parent_.get()) {
    if (n->key_ == key) return n->value_.get();
  }
  return nullptr;
}

bool context_node::cancel_collect(errc why, wake_batch& wakes,
                                  std::vector<context_node*>& work) noexcept {
  mu_.lock();
  if (state_.load(std::memory_order_relaxed) != 0) {
    mu_.unlock();
    return false;
  }
  state_.store(static_cast<int>(why), std::memory_order_release);
  while (wait_node* w = waiters_.claim_front()) wakes.add(w);
  for (context_node* c = children_; c != nullptr;) {
    context_node* next = c->sib_next_;
    c->linked_ = false;
    c->sib_prev_ = c->sib_next_ = nullptr;
    // A child whose count reached zero is being destroyed and waits for our
    // lock in its destructor; it finds itself unlinked and leaves us alone.
    if (c->try_add_ref()) work.push_back(c);
    c = next;
  }
  children_ = nullptr;
  mu_.unlock();
  return true;
}

void context_node::cancel(errc why) noexcept {
  // Iterative (a worklist, not recursion): a chain of 100,000 nested contexts
  // must not overflow the stack. Every descendant's state is set before any
  // waiter is woken, so once done() returns for a context, err() is already
  // set on all of its descendants.
  wake_batch wakes;
  std::vector<context_node*> work;  // each holds a reference taken in cancel_collect
  if (!cancel_collect(why, wakes, work)) return;
  std::vector<context_node*> cancelled;  // the same references, for phase two
  while (!work.empty()) {
    context_node* c = work.back();
    work.pop_back();
    if (c->cancel_collect(why, wakes, work)) {
      cancelled.push_back(c);
    } else {
      ref_counted::release(c);
    }
  }
  wakes.wake_all();
  finish_cancel();
  for (context_node* c : cancelled) {
    c->finish_cancel();
    ref_counted::release(c);
  }
}

void context_node::finish_cancel() noexcept {
  if (on_cancel != nullptr) on_cancel(this);
  // The deadline no longer matters: free the timer slot now rather than at the
  // deadline (100k abandoned timeouts must not pin memory).
  if (timer_armed_.load(std::memory_order_acquire) && timer_heap::remove(&timer_)) {
    ref_counted::release(this);
  }
}

void context_node::cancel_by_owner() noexcept {
  if (!cancellable_) return;
  cancel(errc::canceled);
  leave_parent();
}

void context_node::leave_parent() noexcept {
  if (!cancellable_ || cancel_parent_ == nullptr) return;
  cancel_parent_->mu_.lock();
  if (linked_) {
    if (sib_prev_ != nullptr) {
      sib_prev_->sib_next_ = sib_next_;
    } else {
      cancel_parent_->children_ = sib_next_;
    }
    if (sib_next_ != nullptr) sib_next_->sib_prev_ = sib_prev_;
    sib_prev_ = sib_next_ = nullptr;
    linked_ = false;
  }
  cancel_parent_->mu_.unlock();
}

void context_node::prepare_wait() noexcept {
  context_node* owner = deadline_owner_;
  if (owner == nullptr || owner->state_.load(std::memory_order_acquire) != 0) return;
  if (clock::now() >= *owner->deadline_) {
    owner->cancel(errc::deadline_exceeded);
    return;
  }
  timer_heap* heap = current_timer_heap();
  if (heap == nullptr) return;
  if (owner->timer_armed_.exchange(true, std::memory_order_acq_rel)) return;
  owner->add_ref();  // held by the heap until the timer fires or is removed
  heap->add(&owner->timer_, *owner->deadline_);
}

void context_node::fire_deadline(timer_node* n) noexcept {
  context_node* self = static_cast<deadline_timer*>(n)->owner;
  self->cancel(errc::deadline_exceeded);
  ref_counted::release(self);
}

void context_node::drop_deadline(timer_node* n) noexcept {
  // Runtime shutdown: let a later runtime arm it again.
  context_node* self = static_cast<deadline_timer*>(n)->owner;
  self->timer_armed_.store(false, std::memory_order_release);
  ref_counted::release(self);
}

}  // namespace detail

context context::background() noexcept {
  return context(detail::ref_ptr<detail::context_node>::share(detail::context_node::background()));
}

context_with_cancel with_cancel(const context& parent) {
  auto n = detail::ref_ptr<detail::context_node>::adopt(
      detail::context_node::make_cancel(parent.node(), std::nullopt));
  return {context(n), cancel_func(n)};
}

context_with_cancel with_deadline(const context& parent, clock::time_point deadline) {
  auto n = detail::ref_ptr<detail::context_node>::adopt(
      detail::context_node::make_cancel(parent.node(), deadline));
  if (clock::now() >= deadline) n->cancel(errc::deadline_exceeded);
  return {context(n), cancel_func(n)};
}

context_with_cancel with_timeout(const context& parent, clock::duration timeout) {
  return with_deadline(parent, detail::deadline_after(timeout));
}

namespace {
class sluice_category : public std::error_category {
 public:
  const char* name() const noexcept override { return "sluice"; }
  std::string message(int ev) const override {
    switch (static_cast<errc>(ev)) {
      case errc::canceled: return "context canceled";
      case errc::deadline_exceeded: return "context deadline exceeded";
      case errc::exceeds_burst: return "rate: wait(n) n exceeds limiter's burst";
      case errc::would_exceed_deadline: return "rate: wait(n) would exceed context deadline";
      case errc::closed: return "closed";
    }
    return "unknown sluice error";
  }
};
}  // namespace

std::string describe(std::exception_ptr e) {
  if (!e) return "unknown exception";
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
  }
  return "unknown exception";
}

const std::error_category& error_category() noexcept {
  static const sluice_category cat;
  return cat;
}

}  // namespace sluice
