// context: cancellation, deadlines and request-scoped values (Go's context).
//
// A context is a cheap copyable handle to an immutable node in a tree. Deriving
// a child (with_cancel, with_deadline, with_timeout, with_value) never changes
// the parent; cancelling a context cancels all its descendants, promptly and in
// O(children). Every blocking sluice call that takes a context wakes when it is
// cancelled.
//
//   auto [ctx, cancel] = sluice::with_timeout(parent, 2s);
//   auto r = co_await sluice::select(sluice::recv(results), sluice::done(ctx));
//   cancel();   // always call it: it releases the timer and the parent's link
//
// err() is empty while the context is live, then errc::canceled or
// errc::deadline_exceeded. Works outside a runtime for its non-blocking calls.
#pragma once

#include <sluice/clock.hpp>
#include <sluice/detail/ref_counted.hpp>
#include <sluice/detail/select_core.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/timer.hpp>
#include <sluice/detail/waiter.hpp>
#include <sluice/error.hpp>

#include <atomic>
#include <csignal>
#include <initializer_list>
#include <memory>
#include <optional>
#include <system_error>
#include <utility>
#include <variant>
#include <vector>

namespace sluice {

// A typed key for with_value/value. Identity is the key object's address, so
// define keys as long-lived (static) objects. Go: an unexported key type.
template <class T>
class context_key {
 public:
  explicit constexpr context_key(const char* name) noexcept : name_(name) {}
  context_key(const context_key&) = delete;
  context_key& operator=(const context_key&) = delete;
  const char* name() const noexcept { return name_; }

 private:
  const char* name_;
};

namespace detail {

struct context_value_base {
  virtual ~context_value_base() = default;
};
template <class T>
struct context_value : context_value_base {
  explicit context_value(T v) : value(std::move(v)) {}
  T value;
};

// One node of the context tree. Cancellable nodes (made by with_cancel and
// with_deadline) own a lock, a cancellation state, their done-waiters and an
// intrusive list of cancellable children. Value nodes delegate all of that to
// their nearest cancellable ancestor (`target`).
//
// Invariants:
//   * state_ goes 0 -> (canceled | deadline_exceeded) once, under mu;
//   * a node is in its cancel_parent's children list iff `linked` (guarded by
//     the parent's mu); a cancelled parent empties its list;
//   * parent (ref_ptr) keeps every ancestor alive as long as the node lives,
//     so raw cancel_parent/target/deadline_owner pointers stay valid.
class context_node : public ref_counted {
 public:
  static context_node* background() noexcept;
  static context_node* make_cancel(context_node* parent, std::optional<clock::time_point> deadline);
  static context_node* make_value(context_node* parent, const void* key,
                                  std::unique_ptr<context_value_base> value);
  ~context_node();

  // The node that holds cancellation state for this one (nullptr: never cancelled).
  context_node* target() const noexcept { return target_; }
  std::error_code err() const noexcept;
  std::optional<clock::time_point> deadline() const noexcept { return deadline_; }
  const context_value_base* find(const void* key) const noexcept;

  void cancel(errc why) noexcept;  // cancel this node and its descendants
  void cancel_by_owner() noexcept;  // the cancel func: cancel, detach from parent, drop timer

  // done-waiting (on target() nodes). lock() guards waiters.
  spinlock& lock() noexcept { return mu_; }
  bool done_locked() const noexcept { return state_.load(std::memory_order_relaxed) != 0; }
  void enqueue_locked(wait_node* n) noexcept { waiters_.push_back(n); }
  void dequeue(wait_node* n) noexcept {
    mu_.lock();
    waiters_.remove(n);
    mu_.unlock();
  }
  // Before waiting on done() (no lock held): cancels the context now if its
  // deadline already passed, otherwise arms the deadline timer on the current
  // worker so the wait ends at the deadline. Lazy: contexts nobody waits on
  // never touch a timer heap.
  void prepare_wait() noexcept;

  // Called once, after this node is cancelled (signal_context unregisters here).
  // Set before the node is shared.
  void (*on_cancel)(context_node*) noexcept = nullptr;

 private:
  context_node() = default;
  // Sets the state and collects waiters and children (each with a reference).
  bool cancel_collect(errc why, wake_batch& wakes, std::vector<context_node*>& work) noexcept;
  // After the waiters are woken: signal hook and timer slot.
  void finish_cancel() noexcept;
  // Unlinks this node from its cancel parent's children, if linked (takes the
  // parent's lock).
  void leave_parent() noexcept;
  static void fire_deadline(timer_node* n) noexcept;
  static void drop_deadline(timer_node* n) noexcept;
  void expire_if_due() const noexcept;

  ref_ptr<context_node> parent_;
  context_node* target_ = nullptr;          // nearest cancellable self-or-ancestor
  context_node* cancel_parent_ = nullptr;   // nearest cancellable strict ancestor
  context_node* deadline_owner_ = nullptr;  // node whose deadline is ours
  std::optional<clock::time_point> deadline_;
  bool cancellable_ = false;
  bool is_background_ = false;

  mutable spinlock mu_;
  std::atomic<int> state_{0};
  wait_list waiters_;
  context_node* children_ = nullptr;  // guarded by mu_
  context_node* sib_prev_ = nullptr;  // guarded by cancel_parent_->mu_
  context_node* sib_next_ = nullptr;
  bool linked_ = false;

  struct deadline_timer : timer_node {
    context_node* owner = nullptr;
  };
  deadline_timer timer_;
  std::atomic<bool> timer_armed_{false};

  const void* key_ = nullptr;
  std::unique_ptr<context_value_base> value_;
};

}  // namespace detail

class context;

// done(ctx) as a select case: fires once ctx is cancelled or its deadline passes.
class done_case {
 public:
  using result_type = std::monostate;
  static constexpr bool is_default = false;
  static constexpr detail::wait_reason reason = detail::wait_reason::context;

  explicit done_case(detail::context_node* target) noexcept : target_(target) {}
  detail::spinlock* lock() const noexcept { return target_ != nullptr ? &target_->lock() : nullptr; }
  void prepare() const noexcept {
    if (target_ != nullptr) target_->prepare_wait();
  }
  bool try_complete(result_type&, detail::wake_batch&) const noexcept {
    return target_ != nullptr && target_->done_locked();
  }
  void enqueue(detail::wait_node& n, result_type&) const noexcept {
    if (target_ != nullptr) target_->enqueue_locked(&n);
  }
  void cancel(detail::wait_node& n) const noexcept {
    if (target_ != nullptr) target_->dequeue(&n);
  }
  void finish(detail::wait_node&, result_type&) const noexcept {}
  bool try_fast(result_type&, detail::wake_batch&) const noexcept {
    if (target_ == nullptr) return false;
    target_->prepare_wait();  // a passed deadline cancels now
    return target_->done_locked();  // an atomic load: fine without the lock
  }

 private:
  detail::context_node* target_;
};

// Awaitable returned by context::done(): resumes once the context is done.
class done_awaiter : public detail::select_awaiter<done_case> {
 public:
  explicit done_awaiter(detail::context_node* target)
      : detail::select_awaiter<done_case>(done_case(target)) {}
  void await_resume() { detail::select_awaiter<done_case>::await_resume(); }
};

class context {
 public:
  // The root context: never cancelled, no deadline, no values. Go: context.Background().
  static context background() noexcept;

  // Empty while live; errc::canceled or errc::deadline_exceeded once done.
  // Go: ctx.Err().
  std::error_code err() const noexcept { return node_->err(); }
  // The time at which this context will be cancelled, if any. Go: ctx.Deadline().
  std::optional<clock::time_point> deadline() const noexcept { return node_->deadline(); }
  // Awaitable that resumes once the context is done (never for background()).
  // Go: <-ctx.Done().
  done_awaiter done() const { return done_awaiter(node_->target()); }
  // The value stored under `key` by with_value in this context or an ancestor;
  // nullptr if none. Go: ctx.Value(key).
  template <class T>
  const T* value(const context_key<T>& key) const noexcept {
    const auto* v = node_->find(&key);
    return v != nullptr ? &static_cast<const detail::context_value<T>*>(v)->value : nullptr;
  }

  // Internal.
  explicit context(detail::ref_ptr<detail::context_node> n) noexcept : node_(std::move(n)) {}
  detail::context_node* node() const noexcept { return node_.get(); }

 private:
  detail::ref_ptr<detail::context_node> node_;
};

// Cancels its context (and the context's descendants); idempotent, copyable,
// callable from any thread. Go: context.CancelFunc.
class cancel_func {
 public:
  cancel_func() noexcept = default;
  explicit cancel_func(detail::ref_ptr<detail::context_node> n) noexcept : node_(std::move(n)) {}
  void operator()() const noexcept {
    if (node_) node_->cancel_by_owner();
  }
  // Internal.
  detail::context_node* node() const noexcept { return node_.get(); }

 private:
  detail::ref_ptr<detail::context_node> node_;
};

// What with_cancel/with_deadline/with_timeout return: `auto [ctx, cancel] = ...`.
struct context_with_cancel {
  context ctx;
  cancel_func cancel;
};

// A child of `parent` cancelled by `cancel` or with the parent. Go: context.WithCancel.
context_with_cancel with_cancel(const context& parent);
// A child cancelled at `deadline` (errc::deadline_exceeded), by `cancel`, or with
// the parent; keeps the parent's deadline if it is earlier. Go: context.WithDeadline.
context_with_cancel with_deadline(const context& parent, clock::time_point deadline);
// with_deadline(parent, now + timeout). Go: context.WithTimeout.
context_with_cancel with_timeout(const context& parent, clock::duration timeout);

// A child carrying `value` under `key`. Go: context.WithValue.
template <class T, class U>
context with_value(const context& parent, const context_key<T>& key, U&& value) {
  return context(detail::ref_ptr<detail::context_node>::adopt(detail::context_node::make_value(
      parent.node(), &key, std::make_unique<detail::context_value<T>>(T(std::forward<U>(value))))));
}

// A child cancelled when one of `signals` arrives (from any thread of the
// process), by `stop`, or with the parent. `stop` also restores the signals'
// previous handling once no signal_context wants them. Go: signal.NotifyContext.
context_with_cancel signal_context(const context& parent, std::initializer_list<int> signals);

// done(ctx) select case. Go: `case <-ctx.Done():`.
inline done_case done(const context& ctx) noexcept { return done_case(ctx.node()->target()); }

}  // namespace sluice
