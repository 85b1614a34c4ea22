// errgroup: run a group of tasks for one job, wait for all of them, and get
// the first failure. Go: golang.org/x/sync/errgroup.
//
// Use it when a job fans out into subtasks that succeed or fail together: the
// first exception cancels the group's context (so the siblings can stop early)
// and wait() rethrows it once every task has finished.
//
//   auto [g, ctx] = sluice::errgroup::with_context(parent);
//   g.set_limit(8);                                 // at most 8 at a time
//   for (auto& url : urls) co_await g.go(fetch, url, ctx);   // suspends at the limit
//   co_await g.wait();                              // rethrows the first exception
//
// go()/try_go() decay-copy the callable and its arguments into the new task
// (std::thread's rule), like sluice::go. An errgroup is a movable handle: tasks
// keep the group's state alive, so it may be destroyed before they finish (they
// are then simply not waited for). A moved-from errgroup may only be assigned
// to or destroyed.
//
// g++ 12: give a lambda that captures by value a name before `co_await g.go(f)`:
// written as a temporary inside the co_await expression it is destroyed twice
// by that compiler (GCC PR 100611). try_go() is not affected (no co_await).
#pragma once

#include <sluice/context.hpp>
#include <sluice/detail/ref_counted.hpp>
#include <sluice/detail/source_location.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/task_record.hpp>
#include <sluice/detail/type_name.hpp>
#include <sluice/detail/waiter.hpp>
#include <sluice/runtime.hpp>
#include <sluice/task.hpp>

#include <coroutine>
#include <cstdint>
#include <exception>
#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace sluice {

namespace detail {

// The state shared by an errgroup handle and its tasks.
// Invariants (guarded by mu_): active_ counts slots taken: running tasks plus go()
// callers that were handed a slot and have not started their task yet;
// slot_waiters_ is non-empty only while active_ == limit_; done_waiters_ is
// empty while active_ == 0.
class errgroup_state : public ref_counted {
 public:
  // Takes a slot if the limit allows. Go: the `g.sem <- token{}` of TryGo.
  bool try_take_slot() noexcept;
  // go()'s await_suspend: takes a slot (false: do not suspend) or parks.
  bool park_for_slot(waiter& w, wait_node& n, std::coroutine_handle<> h);
  // wait()'s: false if nothing is active, else parks.
  bool park_for_done(waiter& w, wait_node& n, std::coroutine_handle<> h);
  void remove_waiter(wait_node& n) noexcept;
  // A task finished (or failed to start): its slot goes to the first go()
  // waiter, or is freed; the last one wakes wait().
  void release_slot() noexcept;
  // Records the first exception and cancels the group's context.
  void fail(std::exception_ptr e) noexcept;
  void set_limit(std::int64_t n);
  // wait()'s result: cancels the context (Go does, to release it) and returns
  // the first exception, if any.
  std::exception_ptr finish_wait() noexcept;

  cancel_func cancel;  // set once by with_context, before the state is shared

 private:
  spinlock mu_;
  std::int64_t limit_ = -1;  // < 0: no limit
  std::int64_t active_ = 0;
  std::exception_ptr error_;
  wait_list slot_waiters_;
  wait_list done_waiters_;
};

// errgroup::go(): the first exception fails the group; the slot is given back.
struct errgroup_policy {
  ref_ptr<errgroup_state> st;
  explicit errgroup_policy(ref_ptr<errgroup_state> s) noexcept : st(std::move(s)) {}
  template <class T>
  bool complete(root_base&, task<T>& t) noexcept {
    if (std::exception_ptr e = t.handle().promise().exception) st->fail(e);
    st->release_slot();
    return true;
  }
  void abandon() noexcept {}
};

// Starts f(a...) as a group task that owns one of st's slots; gives the slot
// back if the task cannot be started.
template <class F, class... A>
void errgroup_start(errgroup_state* st, F&& f, A&&... a) {
  using fn = std::decay_t<F>;
  // A member function cannot take go()'s defaulted call-site argument after its
  // parameter pack, so the origin names this line; entry_type names the callable.
  task_origin o = make_origin<fn>(task_kind::errgroup, source_location::current());
  o.entry_address = entry_address<fn>(f);
  try {
    root<errgroup_policy, fn, std::decay_t<A>...>::start(
        o, errgroup_policy(ref_ptr<errgroup_state>::share(st)), std::forward<F>(f),
        std::forward<A>(a)...);
  } catch (...) {
    st->release_slot();
    throw;
  }
}

}  // namespace detail

class errgroup {
 public:
  // The awaitable of go(): holds decay-copies of the callable and arguments
  // until a slot is free, then starts the task.
  template <class F, class... A>
  class [[nodiscard]] go_awaiter {
   public:
    template <class G, class... B>
    explicit go_awaiter(detail::errgroup_state* st, G&& f, B&&... a)
        : st_(st), call_(std::forward<G>(f), std::forward<B>(a)...) {}
    go_awaiter(const go_awaiter&) = delete;
    go_awaiter& operator=(const go_awaiter&) = delete;
    ~go_awaiter() {
      if (node_.linked) st_->remove_waiter(node_);  // frame destroyed while parked
    }
    bool await_ready() noexcept { return st_->try_take_slot(); }
    [[gnu::noinline]] bool await_suspend(std::coroutine_handle<> h) {
      return st_->park_for_slot(waiter_, node_, h);
    }
    // A slot is ours by now (taken, or handed over by a finishing task).
    void await_resume() {
      std::apply(
          [this](F& f, A&... a) { detail::errgroup_start(st_, std::move(f), std::move(a)...); },
          call_);
    }

   private:
    detail::errgroup_state* st_;
    std::tuple<F, A...> call_;
    detail::waiter waiter_;
    detail::wait_node node_;
  };

  // The awaitable of wait().
  class [[nodiscard]] wait_awaiter {
   public:
    explicit wait_awaiter(detail::errgroup_state* st) noexcept : st_(st) {}
    wait_awaiter(const wait_awaiter&) = delete;
    wait_awaiter& operator=(const wait_awaiter&) = delete;
    ~wait_awaiter() {
      if (node_.linked) st_->remove_waiter(node_);  // frame destroyed while parked
    }
    bool await_ready() const noexcept { return false; }
    [[gnu::noinline]] bool await_suspend(std::coroutine_handle<> h) {
      return st_->park_for_done(waiter_, node_, h);
    }
    void await_resume() {
      if (std::exception_ptr e = st_->finish_wait()) std::rethrow_exception(e);
    }

   private:
    detail::errgroup_state* st_;
    detail::waiter waiter_;
    detail::wait_node node_;
  };

  // A group without a context and without a limit. Go: `var g errgroup.Group`.
  errgroup();
  errgroup(errgroup&&) noexcept = default;
  errgroup& operator=(errgroup&&) noexcept = default;
  errgroup(const errgroup&) = delete;
  errgroup& operator=(const errgroup&) = delete;
  ~errgroup() = default;

  // A group and a child context of `parent` that is cancelled when a task of
  // the group throws, or when wait() returns. Go: errgroup.WithContext(ctx).
  static std::pair<errgroup, context> with_context(const context& parent);

  // At most n tasks of the group run at once; n < 0 removes the limit. Must be
  // called while no task of the group is active (else std::logic_error); n == 0
  // (Go: every Go blocks forever) throws std::invalid_argument. Go: g.SetLimit(n).
  void set_limit(std::int64_t n) { state_->set_limit(n); }

  // Starts f(args...) (f returns a sluice::task) as a task of the group, first
  // suspending while the limit is reached. Its exception, if any, is recorded
  // (the first one cancels the group's context) instead of ending the program.
  // Must be awaited from a task: `co_await g.go(f, args...)`. Go: g.Go(f).
  template <class F, class... Args>
  go_awaiter<std::decay_t<F>, std::decay_t<Args>...> go(F&& f, Args&&... args) {
    static_assert(detail::is_task<detail::invoke_task_t<F, Args...>>::value,
                  "sluice::errgroup::go: the callable must return sluice::task<T>");
    return go_awaiter<std::decay_t<F>, std::decay_t<Args>...>(state_.get(), std::forward<F>(f),
                                                              std::forward<Args>(args)...);
  }

  // Starts f(args...) as a task of the group if the limit allows; false (and
  // nothing started) otherwise. Never suspends; must be called in a runtime.
  // Go: g.TryGo(f).
  template <class F, class... Args>
  bool try_go(F&& f, Args&&... args) {
    static_assert(detail::is_task<detail::invoke_task_t<F, Args...>>::value,
                  "sluice::errgroup::try_go: the callable must return sluice::task<T>");
    if (!state_->try_take_slot()) return false;
    detail::errgroup_start(state_.get(), std::forward<F>(f), std::forward<Args>(args)...);
    return true;
  }

  // Suspends until every task of the group has finished, cancels the group's
  // context, and rethrows the first exception a task threw (each later wait()
  // rethrows it again). Must be awaited from a task. Go: g.Wait().
  wait_awaiter wait() noexcept { return wait_awaiter(state_.get()); }

 private:
  detail::ref_ptr<detail::errgroup_state> state_;
};

}  // namespace sluice
