// pipeline: stages of worker tasks joined by channels, that stop together.
//
// When work flows through steps (parse, enrich, store) that each take time, a
// pipeline runs every step at once on different items: each stage reads its
// input channel, applies a function with `workers` tasks, and writes an output
// channel that the next stage reads. The parts Go programs get wrong by hand
// are built in: the output is closed exactly once, when the input is closed
// and drained or when the context is cancelled; a failing function cancels its
// stage, whose wait() rethrows; and no task is left behind either way.
//
//   auto cc = sluice::with_cancel(parent);
//   auto nums   = sluice::generate(cc.ctx, 64, counter{1, limit});   // std::optional<long>()
//   auto primes = sluice::filter(cc.ctx, nums.out, {.workers = 4}, is_prime);
//   auto sq     = sluice::stage(cc.ctx, primes.out, {.workers = 2, .ordered = true},
//                               [](long p) { return p * p; });
//   while (auto v = co_await sq.out.recv()) use(*v);   // nullopt: done (or cancelled, or failed)
//   co_await sq.wait();                                // rethrows the stage's first exception
//
// The function of a stage is one of
//   U fn(T)          task<U> fn(T)          U fn(context, T)          task<U> fn(context, T)
// (the context form is chosen when it is callable; its context is the stage's,
// cancelled with ctx or when the stage fails, so a long task<U> can stop early).
// It is decay-copied into every worker (std::thread's rule), so each worker
// calls its own copy; state shared between workers must be made thread-safe
// by the caller. filter's predicate is the same with `const T&` and bool;
// generate's source is `std::optional<T>()` (nullopt: end), with the same forms.
//
// A stage that fails closes its output like one that finished, so the stages
// after it drain and end normally: await every stage's wait() (or check its
// failed()) to learn of a failure, and cancel ctx to stop the stages before it.
//
// Cancellation is the caller's: a stage stops when ctx is cancelled, but the
// task that sends into its input must watch the same context (a send with
// select and done(ctx)), or it may wait forever for a reader that is gone.
// Every stage must be started from a task. Go: the pipeline pattern of "Go
// Concurrency Patterns: Pipelines and cancellation", on x/sync/errgroup.
#pragma once

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/errgroup.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/task.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>
#include <variant>

namespace sluice {

// Settings of a stage, in this order (designated initializers). Go: how many
// goroutines you start per stage and the capacity of the channel they write.
struct stage_options {
  // Tasks applying the function concurrently; must be >= 1.
  int workers = 1;
  // Buffer of the output channel; 0: unbuffered. Must be in [0, 2^30].
  std::int64_t out_capacity = 0;
  // true: outputs leave in input order. At most `workers` items are in the
  // stage between the oldest one not yet sent and the newest one taken (plus
  // one read from `in` and waiting for room), so a slow item holds the others
  // back. Costs a dispatcher and an emitter task, and a one-slot channel per
  // item. false: each output leaves as soon as it is ready. With one worker
  // the order is kept either way, at no cost.
  bool ordered = false;
};

namespace detail {

void check_stage_options(const stage_options& o, const char* who);
void check_source_capacity(std::int64_t capacity);
void require_runtime_for(const char* who);

// How a stage ended: read by wait(), failed() and error().
// `finished` is closed once every task of the stage has ended and `out` is
// closed; error_ is written before that close (and before failed_ is set), so
// a reader that saw either may read it.
class stage_status {
 public:
  chan<std::monostate> finished;

  void fail(std::exception_ptr e) noexcept {
    error_ = std::move(e);
    // release: a failed() that sees true (acquire) may read error_.
    failed_.store(true, std::memory_order_release);
  }
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  std::exception_ptr error() const noexcept { return failed() ? error_ : nullptr; }

 private:
  std::exception_ptr error_;
  std::atomic<bool> failed_{false};
};

template <class F, class... A>
inline constexpr bool takes_context_v = std::is_invocable_v<F&, context, A...>;

// What fn returns when called as a stage calls it.
template <class F, class... A>
using stage_call_t = typename std::conditional_t<takes_context_v<F, A...>,
                                                 std::invoke_result<F&, context, A...>,
                                                 std::invoke_result<F&, A...>>::type;

template <class R>
struct unwrap_task {
  using type = R;
  static constexpr bool async = false;
};
template <class R>
struct unwrap_task<task<R>> {
  using type = R;
  static constexpr bool async = true;
};

// fn(ctx, a...) if fn takes a context, else fn(a...).
template <class F, class... A>
decltype(auto) call_stage_fn(F& fn, const context& ctx, A&&... a) {
  if constexpr (takes_context_v<F, A...>) {
    return std::invoke(fn, ctx, std::forward<A>(a)...);
  } else {
    return std::invoke(fn, std::forward<A>(a)...);
  }
}

template <class F, class T>
concept stage_fn = std::is_invocable_v<F&, T> || std::is_invocable_v<F&, context, T>;
template <class F, class T>
concept filter_fn = stage_fn<F, const T&> &&
    std::is_convertible_v<typename unwrap_task<stage_call_t<F, const T&>>::type, bool>;

template <class F, class T>
using map_output_t = typename unwrap_task<stage_call_t<F, T>>::type;

template <class R>
struct optional_value {};
template <class V>
struct optional_value<std::optional<V>> {
  using type = V;
};
template <class F>
using source_output_t = typename optional_value<typename unwrap_task<stage_call_t<F>>::type>::type;

template <class F>
concept source_fn = (std::is_invocable_v<F&> || std::is_invocable_v<F&, context>) &&
                    requires { typename source_output_t<F>; };

enum class stage_kind : std::uint8_t { map, filter };

// One item of an ordered stage: the input and the one-slot channel its result
// goes to (nullopt: filtered out). The emitter reads the slots in input order.
template <class T, class U>
struct ordered_job {
  T item;
  chan<std::optional<U>> result;
};

// Closes a channel this task owns when the task ends, however it ends.
template <class C>
class close_on_exit {
 public:
  explicit close_on_exit(C ch) noexcept : ch_(std::move(ch)) {}
  close_on_exit(const close_on_exit&) = delete;
  close_on_exit& operator=(const close_on_exit&) = delete;
  ~close_on_exit() {
    try {
      ch_.close();
    } catch (const channel_closed&) {
      // Already closed: only the owner closes it, so this cannot happen.
    }
  }

 private:
  C ch_;
};

// A worker: takes items until `in` is closed and drained or ctx is done. In an
// unordered stage it sends each result to `out`; in an ordered one `in` carries
// ordered_jobs and the result goes to the job's slot (capacity 1, this worker
// its only sender: the try_send always succeeds).
template <stage_kind K, bool Ordered, class T, class U, class F>
task<void> stage_worker(context ctx, chan<std::conditional_t<Ordered, ordered_job<T, U>, T>> in,
                        [[maybe_unused]] chan<U> out, F fn) {
  for (;;) {
    auto r = co_await sluice::select(sluice::recv(in), sluice::done(ctx));
    if (r.index() != 0) co_return;
    auto& got = r.template get<0>();
    if (!got) co_return;
    T* item = nullptr;
    if constexpr (Ordered) {
      item = &got->item;
    } else {
      item = &*got;
    }
    std::optional<U> v;
    if constexpr (K == stage_kind::map) {
      if constexpr (unwrap_task<stage_call_t<F, T>>::async) {
        v.emplace(co_await call_stage_fn(fn, ctx, std::move(*item)));
      } else {
        v.emplace(call_stage_fn(fn, ctx, std::move(*item)));
      }
    } else {
      bool keep = false;
      if constexpr (unwrap_task<stage_call_t<F, const T&>>::async) {
        keep = static_cast<bool>(co_await call_stage_fn(fn, ctx, std::as_const(*item)));
      } else {
        keep = static_cast<bool>(call_stage_fn(fn, ctx, std::as_const(*item)));
      }
      if (keep) v.emplace(std::move(*item));
    }
    if constexpr (Ordered) {
      static_cast<void>(got->result.try_send(std::move(v)));
    } else {
      if (!v) continue;
      auto s = co_await sluice::select(sluice::send(out, std::move(*v)), sluice::done(ctx));
      if (s.index() != 0) co_return;
    }
  }
}

// Ordered stages: reads `in`, gives each item a result slot, queues the slot
// in `order` (capacity workers - 1, plus the one the emitter holds: the reorder
// window) and then the job in `jobs`. Owns both and closes them when it ends.
template <class T, class U>
task<void> stage_dispatcher(context ctx, chan<T> in, chan<ordered_job<T, U>> jobs,
                            chan<chan<std::optional<U>>> order) {
  close_on_exit<chan<ordered_job<T, U>>> close_jobs(jobs);
  close_on_exit<chan<chan<std::optional<U>>>> close_order(order);
  for (;;) {
    auto r = co_await sluice::select(sluice::recv(in), sluice::done(ctx));
    if (r.index() != 0) co_return;
    auto& item = r.template get<0>();
    if (!item) co_return;
    chan<std::optional<U>> slot(1);
    auto o = co_await sluice::select(sluice::send(order, slot), sluice::done(ctx));
    if (o.index() != 0) co_return;
    ordered_job<T, U> job{std::move(*item), slot};
    auto j = co_await sluice::select(sluice::send(jobs, std::move(job)), sluice::done(ctx));
    if (j.index() != 0) co_return;
  }
}

// Ordered stages: sends the results to `out` in the order of their slots.
template <class U>
task<void> stage_emitter(context ctx, chan<chan<std::optional<U>>> order, chan<U> out) {
  for (;;) {
    auto r = co_await sluice::select(sluice::recv(order), sluice::done(ctx));
    if (r.index() != 0) co_return;
    auto& slot = r.template get<0>();
    if (!slot) co_return;  // the dispatcher ended and every slot was emitted
    auto v = co_await sluice::select(sluice::recv(*slot), sluice::done(ctx));
    if (v.index() != 0) co_return;
    auto& result = v.template get<0>();
    if (!result || !*result) continue;  // filtered out (slots are never closed)
    auto s = co_await sluice::select(sluice::send(out, std::move(**result)), sluice::done(ctx));
    if (s.index() != 0) co_return;
  }
}

// generate(): calls fn until it returns nullopt or ctx is done.
template <class T, class F>
task<void> source_worker(context ctx, chan<T> out, F fn) {
  for (;;) {
    std::optional<T> v;
    if constexpr (unwrap_task<stage_call_t<F>>::async) {
      v = co_await call_stage_fn(fn, ctx);
    } else {
      v = call_stage_fn(fn, ctx);
    }
    if (!v) co_return;
    auto s = co_await sluice::select(sluice::send(out, std::move(*v)), sluice::done(ctx));
    if (s.index() != 0) co_return;
  }
}

// Waits for the stage's tasks, records the first exception, then closes `out`
// and `finished` (in that order: a receiver that saw `out` closed finds the
// failure recorded).
template <class U>
task<void> stage_closer(errgroup g, chan<U> out, std::shared_ptr<stage_status> st) {
  std::exception_ptr e;
  try {
    co_await g.wait();
  } catch (...) {
    e = std::current_exception();
  }
  if (e) st->fail(std::move(e));
  try {
    out.close();
  } catch (const channel_closed&) {
    // A consumer closed the stage's output (it is the stage's to close); the
    // worker that then sent on it failed the stage with channel_closed.
  }
  st->finished.close();
}

inline task<void> wait_stage(std::shared_ptr<stage_status> st) {
  co_await st->finished.recv();  // nullopt once closed: nothing is ever sent
  if (std::exception_ptr e = st->error()) std::rethrow_exception(e);
}

}  // namespace detail

// stage_handle<U>: a running stage: its output channel and how it ended.
// Copyable; copies refer to the same stage. Go: the `out` channel a pipeline
// stage function returns, plus the errgroup it ran in.
template <class U>
class stage_handle {
 public:
  // The stage's output, closed once every task of the stage has ended: the
  // input was closed and drained, the context was cancelled, or fn threw.
  chan<U> out;

  // Suspends until the stage has ended (every task of it finished, `out`
  // closed) and rethrows the first exception its function threw; returns
  // normally after a cancellation. May be awaited any number of times, by any
  // number of tasks. Go: g.Wait().
  task<void> wait() const { return detail::wait_stage(status_); }
  // True once the stage has failed (its function threw). Set before `out` is
  // closed, so a consumer that received nullopt can tell a failure from an end.
  bool failed() const noexcept { return status_->failed(); }
  // The first exception the function threw (nullptr while failed() is false).
  std::exception_ptr error() const noexcept { return status_->error(); }
  // True once the stage has ended (wait() would not suspend).
  bool done() const noexcept { return status_->finished.closed(); }

  // Internal: made by stage(), filter() and generate().
  stage_handle(chan<U> o, std::shared_ptr<detail::stage_status> st) noexcept
      : out(std::move(o)), status_(std::move(st)) {}

 private:
  std::shared_ptr<detail::stage_status> status_;
};

namespace detail {

// Starts the tasks of a map or filter stage and its closer.
template <stage_kind K, class U, class T, class F>
stage_handle<U> start_stage(context ctx, chan<T> in, const stage_options& opts, F fn,
                            const char* who) {
  check_stage_options(opts, who);
  require_runtime_for(who);
  chan<U> out(opts.out_capacity);
  auto st = std::make_shared<stage_status>();
  auto group = errgroup::with_context(ctx);
  errgroup& g = group.first;
  const context& gctx = group.second;
  if (!opts.ordered || opts.workers == 1) {
    for (int i = 0; i < opts.workers; ++i) {
      g.try_go(&stage_worker<K, false, T, U, F>, gctx, in, out, fn);
    }
  } else {
    // Buffered so a job does not wait for a worker to park; never holds more
    // than `workers`, since each job's slot went through `order` first.
    chan<ordered_job<T, U>> jobs(opts.workers);
    chan<chan<std::optional<U>>> order(opts.workers - 1);
    g.try_go(&stage_dispatcher<T, U>, gctx, in, jobs, order);
    for (int i = 0; i < opts.workers; ++i) {
      g.try_go(&stage_worker<K, true, T, U, F>, gctx, jobs, out, fn);
    }
    g.try_go(&stage_emitter<U>, gctx, order, out);
  }
  sluice::go(&stage_closer<U>, std::move(g), out, st);
  return stage_handle<U>(std::move(out), std::move(st));
}

}  // namespace detail

// Starts a stage: opts.workers tasks that take items from `in`, call fn on each
// (one of the four forms above) and send the results to the returned handle's
// `out`. `out` is closed when `in` is closed and every item has been sent, when
// ctx is cancelled, or when fn throws (which cancels the stage's other tasks;
// wait() rethrows it). Must be called from a task (std::logic_error otherwise);
// throws std::invalid_argument for invalid options. Go: a stage function of the
// pipelines pattern, `func sq(ctx, in <-chan T) <-chan U`, run by N goroutines.
template <class T, class F>
  requires detail::stage_fn<F, T>
auto stage(context ctx, chan<T> in, stage_options opts, F fn)
    -> stage_handle<detail::map_output_t<F, T>> {
  using U = detail::map_output_t<F, T>;
  static_assert(!std::is_void_v<U> && !std::is_reference_v<U>,
                "sluice::stage: the function must return a value (U or task<U>)");
  return detail::start_stage<detail::stage_kind::map, U>(std::move(ctx), std::move(in), opts,
                                                         std::move(fn), "sluice::stage");
}

// A stage that passes on the items for which pred (bool or task<bool>, taking
// `const T&`, optionally after a context) is true, and drops the others. Same
// workers, order, closing and failure rules as stage(). Go: a filtering stage.
template <class T, class F>
  requires detail::filter_fn<F, T>
stage_handle<T> filter(context ctx, chan<T> in, stage_options opts, F pred) {
  return detail::start_stage<detail::stage_kind::filter, T>(std::move(ctx), std::move(in), opts,
                                                            std::move(pred), "sluice::filter");
}

// The first stage of a pipeline: one task that calls fn (std::optional<T>() or
// task<std::optional<T>>(), optionally taking a context) and sends each value
// to `out` (buffered by out_capacity, in [0, 2^30]) until fn returns nullopt,
// ctx is cancelled or fn throws; then `out` is closed. Must be called from a
// task. Go: the `gen` function of the pipelines pattern.
template <class F>
  requires detail::source_fn<F>
auto generate(context ctx, std::int64_t out_capacity, F fn)
    -> stage_handle<detail::source_output_t<F>> {
  using T = detail::source_output_t<F>;
  detail::check_source_capacity(out_capacity);
  detail::require_runtime_for("sluice::generate");
  chan<T> out(out_capacity);
  auto st = std::make_shared<detail::stage_status>();
  auto group = errgroup::with_context(ctx);
  group.first.try_go(&detail::source_worker<T, F>, group.second, out, std::move(fn));
  sluice::go(&detail::stage_closer<T>, std::move(group.first), out, st);
  return stage_handle<T>(std::move(out), std::move(st));
}

// generate(ctx, 0, fn): an unbuffered source.
template <class F>
  requires detail::source_fn<F>
auto generate(context ctx, F fn) -> stage_handle<detail::source_output_t<F>> {
  return generate(std::move(ctx), 0, std::move(fn));
}

}  // namespace sluice
