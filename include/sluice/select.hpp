// select: wait on several channel operations, timeouts and contexts at once.
//
//   auto r = co_await sluice::select(sluice::recv(jobs), sluice::after(50ms),
//                                    sluice::done(ctx));
//   switch (r.index()) {
//     case 0: handle(r.get<0>()); break;   // std::optional<job>, nullopt: closed
//     case 1: timed_out(); break;
//     case 2: co_return;                   // ctx cancelled
//   }
//
// Go's semantics exactly: if several cases are ready one is chosen uniformly at
// random; a losing case never takes or delivers a value; with default_case() the
// select never suspends. Go: the select statement.
#pragma once

#include <sluice/chan.hpp>
#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/detail/select_core.hpp>
#include <sluice/detail/timer.hpp>

#include <variant>

namespace sluice {

// The case that fires when no other case is ready. Go: `default:`.
class default_case_t {
 public:
  using result_type = std::monostate;
  static constexpr bool is_default = true;
  static constexpr detail::wait_reason reason = detail::wait_reason::select;
  default_case_t() noexcept = default;
  detail::spinlock* lock() const noexcept { return nullptr; }
  void prepare() const noexcept {}
};
inline default_case_t default_case() noexcept { return default_case_t(); }

// A case that fires after `d` has elapsed. Go: `case <-time.After(d):` (without
// Go's leak: the timer is removed as soon as the select finishes).
class after_case {
 public:
  using result_type = std::monostate;
  static constexpr bool is_default = false;
  static constexpr detail::wait_reason reason = detail::wait_reason::sleep;

  explicit after_case(clock::time_point when) noexcept : when_(when) {}
  after_case(const after_case& o) noexcept : when_(o.when_) {}
  after_case& operator=(const after_case&) = delete;
  ~after_case() = default;

  void prepare();
  detail::spinlock* lock() const noexcept { return heap_ != nullptr ? &heap_->lock() : nullptr; }
  bool try_complete(result_type&, detail::wake_batch&) const noexcept {
    return when_ <= clock::now();
  }
  void enqueue(detail::wait_node& n, result_type&);
  void cancel(detail::wait_node&) noexcept { detail::timer_heap::remove(&timer_); }
  void finish(detail::wait_node&, result_type&) const noexcept {}
  bool try_fast(result_type&, detail::wake_batch&) const noexcept { return when_ <= clock::now(); }

 private:
  struct node : detail::timer_node {
    detail::wait_node* wait = nullptr;
  };
  static void fire(detail::timer_node* n) noexcept;

  clock::time_point when_;
  detail::timer_heap* heap_ = nullptr;
  node timer_;
};

inline after_case after(clock::duration d) noexcept { return after_case(detail::deadline_after(d)); }
inline after_case at(clock::time_point t) noexcept { return after_case(t); }

// select(cases...): suspends until one case can proceed, completes it, and
// returns which one (and its value). Must be awaited from a task.
template <class... Cases>
detail::select_awaiter<Cases...> select(Cases... cases) {
  static_assert(sizeof...(Cases) > 0, "sluice::select needs at least one case");
  return detail::select_awaiter<Cases...>(std::move(cases)...);
}

}  // namespace sluice
