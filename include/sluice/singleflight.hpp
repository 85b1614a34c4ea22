// singleflight: collapse concurrent calls for the same key into one execution.
// Go: golang.org/x/sync/singleflight.
//
// Use it in front of an expensive, idempotent fetch (a cache fill, a token
// refresh, an upstream lookup) when a burst of requests would otherwise all miss
// at once and stampede the backend. The first caller for a key runs fn; every
// caller that arrives for that key while fn runs suspends (the task, not the
// thread) and receives a copy of the same value, or the same exception. Once fn
// has finished the key is free again: singleflight is not a cache, the next
// call runs fn anew.
//
//   sluice::singleflight<std::string, profile> profiles;
//   auto load = [id]() -> sluice::task<profile> { co_return co_await db_load(id); };
//   auto r = co_await profiles.run(id, load);    // r.value; r.shared: others got it too
//
//   // A request with a deadline stops waiting at its deadline while the shared
//   // load goes on for everyone else. Go: DoChan + select on ctx.Done().
//   auto w = co_await profiles.run(ctx, id, load);
//   if (w.err) co_return reply(504);              // errc::deadline_exceeded / canceled
//   use(*w.value);
//
// | call               | key idle                          | key in flight                  |
// |--------------------|-----------------------------------|--------------------------------|
// | run(key, fn)       | runs fn inside this task          | waits for the running fn       |
// | run(ctx, key, fn)  | runs fn in a new task, waits      | waits for the running fn or ctx|
// | forget(key)        | nothing                           | the next call starts a new fn  |
//
// Lifetime: a singleflight is a handle to shared state. A running fn (and
// every waiter) keeps that state alive, so the singleflight may be destroyed
// while a run(ctx, ...) execution whose waiters all left is still going.
//
// g++ 12: give a lambda that captures by value a name before awaiting run()
// (as above). Written as a temporary inside the co_await expression it is
// destroyed twice by that compiler (GCC PR 100611).
#pragma once

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/detail/ref_counted.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/task.hpp>

#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <system_error>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>

namespace sluice {

// What run(key, fn) returns: fn's value and whether it was handed to more than
// one caller. Go: the (v, err, shared) of Group.Do (the error is an exception).
template <class T>
struct singleflight_result {
  T value;
  bool shared = false;
};

// What run(ctx, key, fn) returns. err is ctx.err() when the context ended the
// wait first (value is then empty); otherwise err is empty and value holds fn's
// value. Go: the Result received from DoChan, or ctx.Err() from the select.
template <class T>
struct singleflight_wait_result {
  std::error_code err;
  std::optional<T> value;
  bool shared = false;
};

namespace detail {

// One execution of fn for one key.
// Invariants:
//   * value/error are written once, by the executing task, before done is
//     closed; they are read only after done is seen closed (the channel's lock
//     orders the two: close() and every recv() take it);
//   * dups is guarded by the group's mu_ and only changes while the call is in
//     the group's map; the executor removes it (under mu_) before closing done,
//     so anyone who has seen done closed reads a final dups without the lock.
template <class T>
class singleflight_call : public ref_counted {
 public:
  singleflight_call() : done(0) {}

  chan<std::monostate> done;  // closed once the result is in: wakes every waiter
  std::optional<T> value;
  std::exception_ptr error;
  int dups = 0;  // callers that joined this execution instead of starting one

  // The result for one caller. `only_reader` means nobody else can read value
  // any more (no one joined), so it is moved rather than copied.
  T take(bool only_reader) {
    if (error) std::rethrow_exception(error);
    if (only_reader) return std::move(*value);
    return *value;
  }
};

// The state shared by a singleflight handle and its executions.
// Invariant (guarded by mu_): calls_ maps a key to the execution that a new
// caller for that key joins; an execution is removed when it finishes (if it
// is still the mapped one: forget() may have replaced it) or by forget().
template <class Key, class T, class Hash, class KeyEqual>
class singleflight_state : public ref_counted {
 public:
  using call = singleflight_call<T>;

  // Joins the execution in flight for key (leader = false) or registers a new
  // one that the caller must start (leader = true).
  std::pair<ref_ptr<call>, bool> join(const Key& key) {
    std::lock_guard<std::mutex> g(mu_);
    auto it = calls_.find(key);
    if (it != calls_.end()) {
      ++it->second->dups;
      return {it->second, false};
    }
    auto c = ref_ptr<call>::adopt(new call());
    calls_.emplace(key, c);
    return {std::move(c), true};
  }

  // Removes c from the map if it is still the execution mapped to key.
  void unmap(const Key& key, const call* c) {
    std::lock_guard<std::mutex> g(mu_);
    auto it = calls_.find(key);
    if (it != calls_.end() && it->second.get() == c) calls_.erase(it);
  }

  // The execution is over: new callers start afresh, then the waiters wake.
  void finish(const Key& key, call* c) {
    unmap(key, c);
    c->done.close();
  }

  void forget(const Key& key) {
    std::lock_guard<std::mutex> g(mu_);
    calls_.erase(key);
  }

 private:
  // A std::mutex rather than a spinlock: the critical sections run the user's
  // Hash and KeyEqual and allocate map nodes, so they are short but not tiny,
  // and a preempted holder should put contenders to sleep, not make them spin.
  // It is never held across a suspension.
  std::mutex mu_;
  std::unordered_map<Key, ref_ptr<call>, Hash, KeyEqual> calls_;
};

// If an execution's frame is destroyed before fn finished (only at runtime
// shutdown, when every frame is destroyed), the key is released so that the
// group stays usable. Nobody is woken: the waiters are being destroyed too.
template <class State, class Call, class Key>
class singleflight_release_on_abandon {
 public:
  singleflight_release_on_abandon(State* st, const Key* key, const Call* c) noexcept
      : st_(st), key_(key), c_(c) {}
  singleflight_release_on_abandon(const singleflight_release_on_abandon&) = delete;
  singleflight_release_on_abandon& operator=(const singleflight_release_on_abandon&) = delete;
  ~singleflight_release_on_abandon() {
    if (st_ != nullptr) st_->unmap(*key_, c_);
  }
  void dismiss() noexcept { st_ = nullptr; }

 private:
  State* st_;
  const Key* key_;
  const Call* c_;
};

// Runs fn once for c and publishes its value or exception to every waiter.
// Parameters by value: when started by go() this frame outlives the caller's.
template <class Key, class T, class Hash, class KeyEqual, class F>
task<void> singleflight_execute(ref_ptr<singleflight_state<Key, T, Hash, KeyEqual>> st,
                                ref_ptr<singleflight_call<T>> c, Key key, F fn) {
  singleflight_release_on_abandon<singleflight_state<Key, T, Hash, KeyEqual>,
                                  singleflight_call<T>, Key>
      guard(st.get(), &key, c.get());
  try {
    // Named: no temporary in the co_await expression (GCC PR 100611).
    auto t = std::invoke(fn);
    c->value.emplace(co_await std::move(t));
  } catch (...) {
    c->error = std::current_exception();
  }
  guard.dismiss();
  st->finish(key, c.get());
}

template <class Key, class T, class Hash, class KeyEqual, class F>
task<singleflight_result<T>> singleflight_run(
    ref_ptr<singleflight_state<Key, T, Hash, KeyEqual>> st, Key key, F fn) {
  auto joined = st->join(key);
  ref_ptr<singleflight_call<T>> c = std::move(joined.first);
  if (!joined.second) {
    co_await c->done.recv();  // nullopt: closed, the result is in
    co_return singleflight_result<T>{c->take(false), true};
  }
  task<void> body;
  try {
    body = singleflight_execute<Key, T, Hash, KeyEqual, F>(st, c, key, std::move(fn));
  } catch (...) {
    // Not started (no memory for the frame, a throwing copy): whoever joined
    // in the meantime gets the same exception rather than waiting forever.
    c->error = std::current_exception();
    st->finish(key, c.get());
    throw;
  }
  co_await std::move(body);
  // finish() ran: dups is final (see singleflight_call).
  const bool shared = c->dups > 0;
  co_return singleflight_result<T>{c->take(!shared), shared};
}

template <class Key, class T, class Hash, class KeyEqual, class F>
task<singleflight_wait_result<T>> singleflight_run_ctx(
    ref_ptr<singleflight_state<Key, T, Hash, KeyEqual>> st, context ctx, Key key, F fn) {
  if (std::error_code e = ctx.err()) co_return singleflight_wait_result<T>{e, std::nullopt, false};
  auto joined = st->join(key);
  ref_ptr<singleflight_call<T>> c = std::move(joined.first);
  const bool leader = joined.second;
  if (leader) {
    // In its own task, so that this caller can stop waiting without stopping
    // the execution the others share.
    try {
      sluice::go(&singleflight_execute<Key, T, Hash, KeyEqual, F>, st, c, key, std::move(fn));
    } catch (...) {
      // Not started (outside a runtime, out of memory): whoever joined in the
      // meantime gets the same exception.
      c->error = std::current_exception();
      st->finish(key, c.get());
      throw;
    }
  }
  auto r = co_await sluice::select(sluice::recv(c->done), sluice::done(ctx));
  // When both were ready select picked at random; a finished result wins.
  // closed() takes the channel's lock, which orders the result's writes.
  if (r.index() == 1 && !c->done.closed()) {
    co_return singleflight_wait_result<T>{ctx.err(), std::nullopt, false};
  }
  const bool shared = !leader || c->dups > 0;
  co_return singleflight_wait_result<T>{std::error_code(), c->take(!shared), shared};
}

}  // namespace detail

// singleflight<Key, T>: duplicate call suppression. Go: singleflight.Group.
//
// fn is a callable taking no arguments and returning task<T>; T must be
// copy-constructible (every waiter gets its own copy; the caller that is alone
// gets the value moved). An exception thrown by fn is rethrown to every waiter
// of that execution: the same exception object, possibly on several threads at
// once, so catch it by const reference and do not modify it. (ThreadSanitizer
// may report a race between one waiter reading that object and another freeing
// it: libstdc++'s reference count on it is atomic but not instrumented.)
// Thread-safe: any task on any worker may call any member.
template <class Key, class T, class Hash = std::hash<Key>, class KeyEqual = std::equal_to<Key>>
class singleflight {
  using state = detail::singleflight_state<Key, T, Hash, KeyEqual>;

 public:
  static_assert(std::is_copy_constructible_v<T>,
                "sluice::singleflight: T must be copy-constructible (each waiter gets a copy)");

  // An empty group. Go: `var g singleflight.Group`.
  singleflight() : st_(detail::ref_ptr<state>::adopt(new state())) {}
  singleflight(const singleflight&) = delete;
  singleflight& operator=(const singleflight&) = delete;
  // A moved-from singleflight may only be assigned to or destroyed.
  singleflight(singleflight&&) noexcept = default;
  singleflight& operator=(singleflight&&) noexcept = default;
  ~singleflight() = default;

  // Runs fn (decay-copied) inside the calling task unless an execution for key
  // is in flight, in which case it waits for that one; returns the value (or
  // rethrows fn's exception) and whether it was shared. Must be awaited from a
  // task. Go: g.Do(key, fn).
  template <class F>
  task<singleflight_result<T>> run(Key key, F&& fn) {
    check_fn<F>();
    return detail::singleflight_run<Key, T, Hash, KeyEqual, std::decay_t<F>>(
        st_, std::move(key), std::forward<F>(fn));
  }

  // Like run(key, fn), but fn runs in a task of its own and this caller stops
  // waiting when ctx is done: the result then carries ctx.err() and no value,
  // and the execution goes on for the other waiters (it is never cancelled by
  // a waiter's context; give fn a context of its own if it must end). A ctx
  // already done returns at once without starting or joining anything. fn's
  // exception is rethrown, not turned into err. Must be awaited from a task.
  // Go: g.DoChan(key, fn) with `select { case r := <-ch: case <-ctx.Done(): }`.
  template <class F>
  task<singleflight_wait_result<T>> run(context ctx, Key key, F&& fn) {
    check_fn<F>();
    return detail::singleflight_run_ctx<Key, T, Hash, KeyEqual, std::decay_t<F>>(
        st_, std::move(ctx), std::move(key), std::forward<F>(fn));
  }

  // Makes the next call for key start a new execution instead of joining the
  // one in flight; that one still completes for its own waiters. Never
  // suspends; works outside a runtime. Go: g.Forget(key).
  void forget(const Key& key) { st_->forget(key); }

 private:
  template <class F>
  static constexpr void check_fn() {
    static_assert(std::is_invocable_v<std::decay_t<F>&>,
                  "sluice::singleflight: fn must be callable with no arguments");
    static_assert(std::is_same_v<std::invoke_result_t<std::decay_t<F>&>, task<T>>,
                  "sluice::singleflight: fn must return sluice::task<T>");
  }

  detail::ref_ptr<state> st_;
};

}  // namespace sluice
