// Internal: the engine behind select() and every wait that several parties can end.
//
// A "case" is a class with:
//   using result_type = ...;                 // default-constructible; what get<I>() returns
//   static constexpr bool is_default;        // the default_case() marker
//   detail::spinlock* lock() const noexcept; // guards the case's wait list; nullptr: none
//   void prepare();                          // before any lock is taken (may throw)
//   bool try_complete(result_type& out, wake_batch& wakes);  // lock held: finish now if ready
//   void enqueue(wait_node& n, result_type& out);  // lock held: join the wait list
//   void cancel(wait_node& n) noexcept;      // takes its lock: leave the wait list if still in it
//   void finish(wait_node& n, result_type& out);  // won by a waker: post-process (may throw)
//
// Protocol (Go's selectgo): take every distinct lock in address order (so two
// selects over the same channels cannot deadlock), poll the cases in a random
// order, complete the first ready one; otherwise enqueue on every case, park,
// and release the locks, the last release being the moment a waker may win.
// After the wake, the task unlinks its losing nodes (each under its own lock).
#pragma once

#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/task_record.hpp>
#include <sluice/detail/waiter.hpp>

#include <algorithm>
#include <functional>
#include <array>
#include <coroutine>
#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

namespace sluice::detail {

// Waiters claimed while locks are held, woken after every lock is released
// (chained through wait_node::next, which is free once a node is unlinked).
class wake_batch {
 public:
  void add(wait_node* n) noexcept {
    n->next = head_;
    head_ = n;
  }
  void wake_all() noexcept {
    wait_node* n = head_;
    head_ = nullptr;
    while (n != nullptr) {
      // Read next and owner before waking: once woken the node's frame may go.
      wait_node* next = n->next;
      waiter* w = n->owner;
      w->wake();
      n = next;
    }
  }
  ~wake_batch() { wake_all(); }

 private:
  wait_node* head_ = nullptr;
};

// A fast per-thread PRNG (not in the header: see current_task()).
std::uint32_t fast_rand() noexcept;

template <std::size_t N>
class lock_set {
 public:
  void add(spinlock* l) noexcept {
    if (l != nullptr) locks_[n_++] = l;
  }
  // Address order, duplicates dropped (two cases on one channel lock it once).
  // Insertion sort: N is tiny, and std::sort trips g++ 12's -Warray-bounds here.
  void sort() noexcept {
    std::size_t out = 0;
    for (std::size_t i = 0; i < n_; ++i) {
      spinlock* l = locks_[i];
      std::size_t j = out;
      bool dup = false;
      while (j > 0 && !std::less<spinlock*>()(locks_[j - 1], l)) {
        if (locks_[j - 1] == l) {
          dup = true;
          break;
        }
        --j;
      }
      if (dup) continue;
      for (std::size_t k = out; k > j; --k) locks_[k] = locks_[k - 1];
      locks_[j] = l;
      ++out;
    }
    n_ = out;
  }
  void lock_all() noexcept {
    for (std::size_t i = 0; i < n_; ++i) locks_[i]->lock();
  }
  void unlock_all() noexcept {
    for (std::size_t i = n_; i > 0; --i) locks_[i - 1]->unlock();
  }

 private:
  std::array<spinlock*, N> locks_{};
  std::size_t n_ = 0;
};

}  // namespace sluice::detail

namespace sluice {

// The outcome of select(): which case fired and its value.
template <class... R>
class select_result {
 public:
  select_result(std::size_t index, std::tuple<R...>&& values)
      : index_(index), values_(std::move(values)) {}
  // Index of the case that fired, in argument order.
  std::size_t index() const noexcept { return index_; }
  // The fired case's value: std::optional<T> for recv (nullopt: channel closed),
  // std::monostate for the others.
  template <std::size_t I>
  auto& get() noexcept {
    return std::get<I>(values_);
  }
  template <std::size_t I>
  const auto& get() const noexcept {
    return std::get<I>(values_);
  }

 private:
  std::size_t index_;
  std::tuple<R...> values_;
};

namespace detail {

template <class... Cases>
class select_awaiter {
  static constexpr std::size_t n = sizeof...(Cases);
  using result_tuple = std::tuple<typename Cases::result_type...>;
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

 public:
  explicit select_awaiter(Cases... cases) : cases_(std::move(cases)...) {
    for (std::size_t i = 0; i < n; ++i) {
      nodes_[i].owner = &waiter_;
      nodes_[i].case_index = static_cast<int>(i);
    }
  }
  select_awaiter(const select_awaiter&) = delete;
  select_awaiter& operator=(const select_awaiter&) = delete;
  ~select_awaiter() {
    // Only when the frame is destroyed while parked (runtime shutdown).
    if (parked_) cancel_all(npos);
  }

  bool await_ready() {
    // Fast path: cases that can tell without a lock that they are ready (a
    // buffered channel with values or room) are tried one at a time, in random
    // order, each under its own lock only. Uniform among hinted-ready cases;
    // anything else takes the full path below.
    // Only when every case can hint: a case that cannot would never win here,
    // and uniformity among ready cases would be lost.
    if constexpr (n > 1 && (has_fast<Cases> && ...)) {
      std::array<std::size_t, n> order;
      shuffle(order);
      wake_batch wakes;
      for (std::size_t k = 0; k < n; ++k) {
        if (at_index(order[k], [&](auto i) { return try_fast_one<decltype(i)::value>(wakes); })) {
          return true;
        }
      }
    }
    prepare_all(std::index_sequence_for<Cases...>{});
    locks_ = make_locks(std::index_sequence_for<Cases...>{});
    wake_batch wakes;
    locks_.lock_all();
    const bool done = poll_locked(wakes);
    locks_.unlock_all();
    return done;
  }

  [[gnu::noinline]] bool await_suspend(std::coroutine_handle<> h) {
    task_record* t = require_task("select");
    waiter_.task = t;
    wake_batch wakes;
    locks_.lock_all();
    if (poll_locked(wakes)) {
      locks_.unlock_all();
      return false;
    }
    enqueue_all(std::index_sequence_for<Cases...>{});
    parked_ = true;
    prepare_park(t, h, reason_ != wait_reason::runnable ? reason_ : single_reason());
    // Releasing the last lock publishes the parked task: from here on a waker
    // may resume it on another worker, so nothing below touches the frame.
    locks_.unlock_all();
    return true;
  }

  select_result<typename Cases::result_type...> await_resume() {
    if (parked_) {
      parked_ = false;
      index_ = static_cast<std::size_t>(waiter_.fired.load(std::memory_order_acquire));
      cancel_all(index_);
      finish_one(std::index_sequence_for<Cases...>{});
    }
    return select_result<typename Cases::result_type...>(index_, std::move(results_));
  }

  std::size_t fired_index() const noexcept { return index_; }
  // Overrides what dump_tasks shows while parked (e.g. "IO wait" for an I/O
  // wait that a context can also end).
  void set_reason(wait_reason r) noexcept { reason_ = r; }
  result_tuple& results() noexcept { return results_; }

 private:
  template <std::size_t... I>
  void prepare_all(std::index_sequence<I...>) {
    (std::get<I>(cases_).prepare(), ...);
  }
  template <std::size_t... I>
  lock_set<n> make_locks(std::index_sequence<I...>) {
    lock_set<n> s;
    (s.add(std::get<I>(cases_).lock()), ...);
    s.sort();
    return s;
  }

  template <std::size_t I>
  bool try_one(wake_batch& wakes) {
    auto& c = std::get<I>(cases_);
    if constexpr (std::tuple_element_t<I, std::tuple<Cases...>>::is_default) {
      return false;
    } else {
      if (c.try_complete(std::get<I>(results_), wakes)) {
        index_ = I;
        return true;
      }
      return false;
    }
  }
  // Calls f(std::integral_constant<std::size_t, i>{}) for the runtime index i.
  template <class F, std::size_t... I>
  static bool at_index(std::size_t i, F&& f, std::index_sequence<I...>) {
    bool done = false;
    (void)((i == I ? (done = f(std::integral_constant<std::size_t, I>{}), true) : false) || ...);
    return done;
  }
  template <class F>
  static bool at_index(std::size_t i, F&& f) {
    return at_index(i, std::forward<F>(f), std::index_sequence_for<Cases...>{});
  }

  template <class C>
  static constexpr bool has_fast = C::is_default || requires(C c, typename C::result_type r,
                                                             wake_batch w) { c.try_fast(r, w); };

  static void shuffle(std::array<std::size_t, n>& order) noexcept {
    for (std::size_t i = 0; i < n; ++i) order[i] = i;
    if constexpr (n > 1) {
      for (std::size_t i = n - 1; i > 0; --i) {
        std::swap(order[i], order[fast_rand() % (i + 1)]);
      }
    }
  }

  template <std::size_t I>
  bool try_fast_one(wake_batch& wakes) {
    using C = std::tuple_element_t<I, std::tuple<Cases...>>;
    if constexpr (!C::is_default) {
      if (std::get<I>(cases_).try_fast(std::get<I>(results_), wakes)) {
        index_ = I;
        return true;
      }
    }
    return false;
  }

  // poll() with the locks held; if a case throws (send on a closed channel, as
  // Go panics), the locks are released before the exception leaves.
  bool poll_locked(wake_batch& wakes) {
    try {
      return poll(wakes);
    } catch (...) {
      locks_.unlock_all();
      throw;
    }
  }

  // Locks held. Polls in a random order (uniform among ready cases, as Go does);
  // falls back to the default case if there is one.
  bool poll(wake_batch& wakes) {
    std::array<std::size_t, n> order;
    shuffle(order);
    for (std::size_t k = 0; k < n; ++k) {
      if (at_index(order[k], [&](auto i) { return try_one<decltype(i)::value>(wakes); })) return true;
    }
    constexpr std::size_t def = default_index();
    if constexpr (def != npos) {
      index_ = def;
      return true;
    }
    return false;
  }

  static constexpr std::size_t default_index() {
    std::size_t found = npos;
    std::size_t i = 0;
    ((Cases::is_default ? (found = i, ++i) : ++i), ...);
    return found;
  }

  static constexpr wait_reason single_reason() {
    if constexpr (n == 1) {
      return std::tuple_element_t<0, std::tuple<Cases...>>::reason;
    } else {
      return wait_reason::select;
    }
  }

  template <std::size_t... I>
  void enqueue_all(std::index_sequence<I...>) {
    (enqueue_one<I>(), ...);
  }
  template <std::size_t I>
  void enqueue_one() {
    if constexpr (!std::tuple_element_t<I, std::tuple<Cases...>>::is_default) {
      std::get<I>(cases_).enqueue(nodes_[I], std::get<I>(results_));
    }
  }

  void cancel_all(std::size_t except) noexcept {
    cancel_each(except, std::index_sequence_for<Cases...>{});
  }
  template <std::size_t... I>
  void cancel_each(std::size_t except, std::index_sequence<I...>) noexcept {
    ((I != except ? cancel_one<I>() : void()), ...);
  }
  template <std::size_t I>
  void cancel_one() noexcept {
    if constexpr (!std::tuple_element_t<I, std::tuple<Cases...>>::is_default) {
      std::get<I>(cases_).cancel(nodes_[I]);
    }
  }

  template <std::size_t... I>
  void finish_one(std::index_sequence<I...>) {
    ((index_ == I ? finish_case<I>() : void()), ...);
  }
  template <std::size_t I>
  void finish_case() {
    if constexpr (!std::tuple_element_t<I, std::tuple<Cases...>>::is_default) {
      std::get<I>(cases_).finish(nodes_[I], std::get<I>(results_));
    }
  }

  std::tuple<Cases...> cases_;
  result_tuple results_{};
  waiter waiter_;
  std::array<wait_node, n> nodes_{};
  lock_set<n> locks_;
  std::size_t index_ = npos;
  wait_reason reason_ = wait_reason::runnable;
  bool parked_ = false;
};

}  // namespace detail
}  // namespace sluice
