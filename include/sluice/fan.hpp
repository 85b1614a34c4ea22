// fan: spread work over tasks and gather results back — fan_in, fan_out and a
// bounded parallel for_each. Go: the pipeline patterns of "Go Concurrency
// Patterns: Pipelines and cancellation" (merge, distributing work over N
// workers) and the errgroup + SetLimit loop.
//
// Which one:
//   * fan_in   — several producers each own a channel and you want one stream:
//                every value of every input arrives on one output channel,
//                which is closed once all inputs are closed (or ctx is done).
//   * fan_out  — one channel of jobs, N identical workers draining it; the
//                first exception stops them all and reaches whoever waits.
//   * for_each — you already hold the items (a vector, a range): run
//                fn(ctx, item) for each, at most `limit` at once, stop at the
//                first exception and rethrow it.
//
//   std::vector<sluice::chan<row>> shards = open_shards();
//   auto rows = sluice::fan_in(ctx, shards, 64);
//   while (auto r = co_await rows.recv()) write(*r);    // nullopt: all done
//
//   auto workers = sluice::fan_out(ctx, jobs, 8, handle);   // handle(ctx, job)
//   co_await workers.wait();                                // rethrows the first failure
//
//   auto fetch = [](sluice::context c, std::string url) -> sluice::task<void> { ... };
//   if (auto ec = co_await sluice::for_each(ctx, urls, 4, fetch)) co_return ec;
//
// All three decay-copy fn into every task they start (std::thread's rule) and
// must be called from a task of a running runtime. g++ 12: give a lambda that
// captures by value a name before awaiting a call that takes it (GCC PR 100611).
#pragma once

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/detail/ref_counted.hpp>
#include <sluice/errgroup.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/task.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <optional>
#include <ranges>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace sluice {

namespace detail {

// Argument checks (src/flow/fan.cpp): std::invalid_argument with the caller's name.
std::int64_t checked_fan_in_capacity(std::size_t out_capacity);
void check_fan_out_workers(int workers);
void check_for_each_limit(std::int64_t limit);

// What fan_in's forwarders share: the output and how many of them still run.
// Invariant: live counts the forwarders that have not finished (or, for those
// that could not be started, have been counted off); out is closed once, by
// whoever brings live to zero, after every forwarder's last send.
template <class T>
class fan_in_state : public ref_counted {
 public:
  fan_in_state(chan<T> o, std::size_t forwarders) : out(std::move(o)), live(forwarders) {}
  chan<T> out;
  std::atomic<std::size_t> live;

  // One forwarder has stopped; the last one closes the output.
  void forwarder_done() {
    // acq_rel: the last forwarder must close after every other forwarder's
    // final send (a send after close would throw channel_closed).
    if (live.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    try {
      out.close();
    } catch (const channel_closed&) {
      // Somebody else closed our output (a misuse); closing twice is not ours to report.
    }
  }
};

// Moves every value of `in` to the shared output until `in` is closed and
// drained or ctx is done. A value already taken from `in` when ctx ends is
// dropped (it was never delivered). Parameters by value: a detached task.
template <class T>
task<void> fan_in_forward(context ctx, chan<T> in, ref_ptr<fan_in_state<T>> st) {
  try {
    while (!ctx.err()) {
      auto r = co_await sluice::select(sluice::recv(in), sluice::done(ctx));
      if (r.index() == 1) break;
      std::optional<T>& v = r.template get<0>();
      if (!v) break;  // closed and drained
      auto s = co_await sluice::select(sluice::send(st->out, std::move(*v)), sluice::done(ctx));
      if (s.index() == 1) break;
    }
  } catch (const channel_closed&) {
    // The output was closed behind our back: nothing left to forward to.
  } catch (...) {
    st->forwarder_done();  // T's move threw: the others may still close the output
    throw;
  }
  st->forwarder_done();
}

// One fan_out worker: fn(ctx, v) for each value received, until `in` is closed
// and drained or ctx is done. fn's exception ends this worker and reaches the
// errgroup, which cancels ctx for the others.
template <class T, class F>
task<void> fan_out_worker(context ctx, chan<T> in, F fn) {
  while (!ctx.err()) {
    auto r = co_await sluice::select(sluice::recv(in), sluice::done(ctx));
    if (r.index() == 1) break;
    std::optional<T>& v = r.template get<0>();
    if (!v) break;
    // Named: no temporary in the co_await expression (GCC PR 100611).
    auto t = std::invoke(fn, ctx, std::move(*v));
    co_await std::move(t);
  }
}

// One for_each item. The slot was granted by errgroup::go, but the group may
// have failed (or the parent ended) while this task waited for it: then fn is
// not called, and the skip is recorded for for_each's result.
template <class F, class Item>
task<void> for_each_item(context ctx, F fn, Item item, std::atomic<bool>* skipped) {
  if (ctx.err()) {
    // relaxed: for_each reads it after errgroup::wait(), which orders it.
    skipped->store(true, std::memory_order_relaxed);
    co_return;
  }
  auto t = std::invoke(fn, ctx, std::move(item));
  co_await std::move(t);
}

// Invariant: every task started here is finished before this frame goes
// (for_each_item points into it), so every path, even a failure to start an
// item, goes through g.wait().
template <class Range, class F>
task<std::error_code> for_each_impl(context ctx, Range items, std::int64_t limit, F fn) {
  // Our own child of ctx, so that a failure to start an item can stop the
  // items already running the way a failing item would.
  context_with_cancel own = with_cancel(ctx);
  auto group = errgroup::with_context(own.ctx);
  errgroup& g = group.first;
  const context& gctx = group.second;
  g.set_limit(limit);
  std::atomic<bool> skipped{false};
  std::exception_ptr start_failure;
  using item_type = std::ranges::range_value_t<Range>;
  try {
    for (auto it = std::ranges::begin(items); it != std::ranges::end(items); ++it) {
      // The first exception (or the parent's end) cancels gctx: start nothing new.
      if (gctx.err()) {
        skipped.store(true, std::memory_order_relaxed);
        break;
      }
      // An owning range was taken by value, so its elements are ours to move;
      // a view's elements belong to the caller and are copied.
      if constexpr (std::ranges::view<Range>) {
        item_type item(*it);
        co_await g.go(&for_each_item<F, item_type>, gctx, fn, std::move(item), &skipped);
      } else {
        item_type item(std::ranges::iter_move(it));
        co_await g.go(&for_each_item<F, item_type>, gctx, fn, std::move(item), &skipped);
      }
    }
  } catch (...) {
    start_failure = std::current_exception();  // copying an item or starting its task
    own.cancel();
  }
  std::exception_ptr item_failure;
  try {
    co_await g.wait();  // rethrows the first exception an item threw
  } catch (...) {
    item_failure = std::current_exception();
  }
  own.cancel();
  if (item_failure) std::rethrow_exception(item_failure);
  if (start_failure) std::rethrow_exception(start_failure);
  co_return skipped.load(std::memory_order_relaxed) ? ctx.err() : std::error_code();
}

}  // namespace detail

// Merges `inputs` into one channel of capacity `out_capacity`: every value sent
// on any input is received once from the output (values of one input keep
// their order; inputs interleave arbitrarily). The output is closed when every
// input has been closed and drained, or once ctx is done; either way every
// forwarding task ends, so nothing is left behind. On ctx's end, values still
// buffered in the output stay receivable, values still in the inputs stay
// there, and a value a forwarder had taken but not yet delivered is dropped.
// No inputs: the output is returned closed. Throws std::invalid_argument if
// out_capacity exceeds a channel's maximum (2^30). Must be called from a task.
// Go: the `merge` function of the pipelines article.
template <class T>
chan<T> fan_in(const context& ctx, std::vector<chan<T>> inputs, std::size_t out_capacity) {
  chan<T> out(detail::checked_fan_in_capacity(out_capacity));
  if (inputs.empty()) {
    out.close();
    return out;
  }
  auto st = detail::ref_ptr<detail::fan_in_state<T>>::adopt(
      new detail::fan_in_state<T>(out, inputs.size()));
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    try {
      sluice::go(&detail::fan_in_forward<T>, ctx, std::move(inputs[i]), st);
    } catch (...) {
      // Not started: count it and the rest as stopped, so the output still
      // closes once the started ones end.
      for (std::size_t k = i; k < inputs.size(); ++k) st->forwarder_done();
      throw;
    }
  }
  return out;
}

// What fan_out returns: the running workers and their context, movable, to
// be waited for once. Go: the errgroup.Group and ctx of errgroup.WithContext.
class fan_out_group {
 public:
  fan_out_group(errgroup g, context ctx) noexcept : group_(std::move(g)), ctx_(std::move(ctx)) {}
  fan_out_group(fan_out_group&&) noexcept = default;
  fan_out_group& operator=(fan_out_group&&) noexcept = default;
  fan_out_group(const fan_out_group&) = delete;
  fan_out_group& operator=(const fan_out_group&) = delete;
  ~fan_out_group() = default;

  // Suspends until every worker has returned (the input closed and drained,
  // ctx done, or a failure), then rethrows the first exception fn threw. Must
  // be awaited from a task. Go: g.Wait() of the workers' errgroup.
  errgroup::wait_awaiter wait() noexcept { return group_.wait(); }

  // The workers' context: a child of fan_out's ctx, cancelled by the first
  // failure and when wait() returns. A producer should select on it when
  // sending to the input, so that it does not block forever once the workers
  // have stopped. Go: the ctx of errgroup.WithContext.
  const context& ctx() const noexcept { return ctx_; }

 private:
  errgroup group_;
  context ctx_;
};

// Starts `workers` tasks that each receive from `in` and run fn(ctx, value)
// (fn returns task<void>; ctx is the group's context), until `in` is closed
// and drained, ctx is done, or fn throws (the first exception cancels the
// others' context and is rethrown by wait()). Values left in `in` after a
// failure or cancellation stay there. Throws std::invalid_argument if
// workers < 1. Must be called from a task. Go: N goroutines ranging over one
// channel in an errgroup.
template <class T, class F>
fan_out_group fan_out(const context& ctx, chan<T> in, int workers, F&& fn) {
  static_assert(std::is_same_v<std::invoke_result_t<std::decay_t<F>&, context, T>, task<void>>,
                "sluice::fan_out: fn must be callable as fn(context, T) and return task<void>");
  detail::check_fan_out_workers(workers);
  auto group = errgroup::with_context(ctx);
  for (int i = 0; i < workers; ++i) {
    group.first.try_go(&detail::fan_out_worker<T, std::decay_t<F>>, group.second, in, fn);
  }
  return fan_out_group(std::move(group.first), std::move(group.second));
}

// Runs fn(ctx, item) (fn returns task<void>) for every element of `items`,
// at most `limit` at once, in the range's order of starting. The first
// exception stops new items from starting, cancels the context the running
// ones got, waits for them, and is rethrown. Returns ctx.err() if the parent
// context ended before every item was started (the remaining ones were
// skipped), an empty error_code otherwise. `items` is taken by value: move an
// owning container in (its elements are then moved into the tasks) or pass a
// view (elements copied; the viewed data must outlive the call). Throws
// std::invalid_argument if limit < 1. Must be awaited from a task.
// Go: errgroup.WithContext + g.SetLimit(limit) + a loop of g.Go.
template <class Range, class F>
  requires std::ranges::input_range<std::remove_cvref_t<Range>>
task<std::error_code> for_each(const context& ctx, Range&& items, std::int64_t limit, F&& fn) {
  using range_type = std::remove_cvref_t<Range>;
  using item_type = std::ranges::range_value_t<range_type>;
  static_assert(
      std::is_same_v<std::invoke_result_t<std::decay_t<F>&, context, item_type>, task<void>>,
      "sluice::for_each: fn must be callable as fn(context, item) and return task<void>");
  detail::check_for_each_limit(limit);
  return detail::for_each_impl<range_type, std::decay_t<F>>(
      ctx, range_type(std::forward<Range>(items)), limit, std::forward<F>(fn));
}

}  // namespace sluice
