// worker_pool: a fixed set of worker tasks that run jobs from a bounded queue.
//
// When an HTTP handler must hand work to the background (send an email, fan an
// event out to webhooks), starting a task per request lets a burst start
// without bound. A worker_pool bounds both the work running (`workers`) and the
// work waiting (`queue_capacity`), and makes the caller decide what happens
// when both are full:
//
//   sluice::worker_pool pool({.workers = 8, .queue_capacity = 1000, .name = "mail"});
//   auto job = [msg](sluice::context ctx) -> sluice::task<void> { co_await send(ctx, msg); };
//   if (!pool.try_submit(job)) co_return reply_503_retry_after(1s);   // shed, tell the client
//   ...
//   auto final_stats = co_await pool.shutdown(deadline_ctx);          // drain, then cancel
//
// A job is a callable taking a sluice::context and returning task<void>; it is
// decay-copied into the pool (std::thread's rule), so a capturing lambda stays
// alive until the job has finished. Its context is the pool's, with the
// per-job timeout if one is set: it is *not* the submitter's context, because
// background work outlives the request that queued it. The context is
// cancelled when shutdown's deadline passes.
//
// Admission, in order: an idle worker takes the job at once; else it joins the
// queue if there is room; else, if a queued job has a lower priority, the
// newest such job of the lowest priority is displaced (counted `shed`, its
// on_drop told drop_reason::shed) and the new job takes its place; else the pool
// is full: submit() suspends (backpressure), try_submit() returns false.
// Workers take the highest-priority job first, FIFO within a priority.
//
// Go has no pool in its standard library; this is the pattern Go services write
// by hand with a buffered channel and N goroutines (and x/sync/semaphore).
#pragma once

#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/detail/ref_counted.hpp>
#include <sluice/stats.hpp>
#include <sluice/task.hpp>

#include <concepts>
#include <coroutine>
#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

namespace sluice {

// Priority of a job: higher-priority jobs run first and may displace queued
// lower-priority jobs when the queue is full.
enum class job_priority : std::uint8_t { high = 0, normal = 1, low = 2 };

// Why a job accepted by a pool never ran.
enum class drop_reason : std::uint8_t {
  shed,      // displaced from a full queue by a higher-priority job
  expired,   // waited in the queue longer than max_queue_wait
  shutdown,  // still queued when shutdown's deadline passed (or the pool was destroyed)
};
// "shed", "expired", "shutdown".
const char* to_string(drop_reason r) noexcept;

// Per-job settings for submit() and try_submit().
struct job_options {
  job_priority priority = job_priority::normal;
  // Called (from the task that dropped the job, outside every pool lock) if the
  // job is accepted but never started; this is how its owner learns it was lost.
  std::function<void(drop_reason)> on_drop;
};

// Settings of a worker_pool, in this order (designated initializers).
struct worker_pool_options {
  // Worker tasks: jobs running at once. Must be >= 1.
  int workers = 1;
  // Jobs that may wait for a worker. 0: no queue, a job is accepted only when a
  // worker is idle (a rendezvous, like an unbuffered channel). Must be >= 0.
  int queue_capacity = 0;
  // Shown in logs, errors and task dumps.
  std::string name = "worker_pool";
  // Deadline of each job's context, from its start; zero: none. Must be >= 0.
  clock::duration job_timeout = clock::duration::zero();
  // A job that waited longer than this in the queue is dropped unstarted and
  // counted `expired` (its client has given up); zero: no limit. Must be >= 0.
  clock::duration max_queue_wait = clock::duration::zero();
  // Called with the pool's name and the exception when a job throws (from the
  // worker, which then goes on). Default (empty): one line on stderr.
  std::function<void(std::string_view pool, std::exception_ptr)> on_error;
};

// Counters and timings of a pool: what stats() and shutdown() return.
struct worker_pool_stats {
  std::uint64_t queued = 0;     // now waiting in the queue
  std::uint64_t running = 0;    // now running
  std::uint64_t completed = 0;  // returned normally (also after a cancellation)
  std::uint64_t failed = 0;     // threw
  std::uint64_t dropped = 0;    // accepted, dropped unstarted at shutdown
  std::uint64_t expired = 0;    // accepted, dropped unstarted after max_queue_wait
  std::uint64_t shed = 0;       // accepted, displaced by a higher-priority job
  std::uint64_t rejected = 0;   // not accepted: try_submit false, submit ended by ctx or close
  duration_summary queue_wait;  // accepted -> started, for started jobs
  duration_summary run_time;    // started -> finished
};

namespace detail {

class pool_state;

// A type-erased job in the queue (intrusive doubly linked list per priority).
class pool_job {
 public:
  pool_job() = default;
  pool_job(const pool_job&) = delete;
  pool_job& operator=(const pool_job&) = delete;
  virtual ~pool_job() = default;
  // Starts the job's task; the callable stays alive in *this until it is destroyed.
  virtual task<void> run(context ctx) = 0;

  static void* operator new(std::size_t n) { return allocate_frame(n); }
  static void operator delete(void* p, std::size_t n) noexcept { deallocate_frame(p, n); }

  pool_job* prev = nullptr;  // queue links, guarded by the pool's lock
  pool_job* next = nullptr;
  clock::time_point accepted{};  // when it entered the queue (or went to a worker)
  std::function<void(drop_reason)> on_drop;
  job_priority priority = job_priority::normal;
};

template <class F>
class pool_job_of final : public pool_job {
 public:
  template <class G>
  explicit pool_job_of(G&& g) : f_(std::forward<G>(g)) {}
  task<void> run(context ctx) override { return std::invoke(f_, std::move(ctx)); }

 private:
  F f_;
};

template <class F>
concept pool_job_callable = std::is_invocable_r_v<task<void>, std::decay_t<F>&, context>;

template <class F>
pool_job* make_pool_job(F&& f, job_options&& o) {
  auto* j = new pool_job_of<std::decay_t<F>>(std::forward<F>(f));
  j->priority = o.priority;
  j->on_drop = std::move(o.on_drop);
  return j;
}

}  // namespace detail

class worker_pool {
 public:
  // Starts the worker tasks. Must be called inside a runtime (std::logic_error
  // otherwise); throws std::invalid_argument for workers < 1, queue_capacity < 0
  // or a negative duration.
  explicit worker_pool(worker_pool_options opts);
  worker_pool(const worker_pool&) = delete;
  worker_pool& operator=(const worker_pool&) = delete;
  // If shutdown() did not finish first: stops accepting, drops the queued jobs
  // (counted, on_drop told drop_reason::shutdown) and cancels the running ones'
  // contexts, without waiting; the workers end on their own once their jobs
  // return. Prefer `co_await shutdown(ctx)`.
  ~worker_pool();

  // The awaitable of submit(): accepts the job without suspending when it can,
  // else waits in a task of its own (see submit()).
  class [[nodiscard]] submit_awaiter {
   public:
    submit_awaiter(detail::pool_state* st, const context* ctx, detail::pool_job* job) noexcept
        : st_(st), ctx_(ctx), job_(job) {}
    submit_awaiter(const submit_awaiter&) = delete;
    submit_awaiter& operator=(const submit_awaiter&) = delete;
    ~submit_awaiter();
    bool await_ready();
    [[gnu::noinline]] std::coroutine_handle<> await_suspend(std::coroutine_handle<> h);
    std::error_code await_resume() {
      return slow_.valid() ? slow_.handle().promise().take() : result_;
    }

   private:
    detail::pool_state* st_;
    const context* ctx_;  // nullptr: no context
    detail::pool_job* job_;  // owned until accepted or handed to the slow path
    std::error_code result_;
    task<std::error_code> slow_;
  };

  // Queues f (a callable `task<void>(context)`), suspending while the pool is
  // full. Returns an empty error_code once accepted, errc::closed if the pool
  // is (or gets) shut down first, in which case f was not accepted. Must be
  // awaited from a task.
  template <class F>
    requires detail::pool_job_callable<F>
  submit_awaiter submit(F&& f, job_options opts = {}) {
    return submit_awaiter(st_.get(), nullptr,
                          detail::make_pool_job(std::forward<F>(f), std::move(opts)));
  }
  // As submit(f), but gives up when ctx is done: returns ctx.err() and f was not
  // accepted. ctx bounds the wait only; the job does not run under it.
  template <class F>
    requires detail::pool_job_callable<F>
  submit_awaiter submit(const context& ctx, F&& f, job_options opts = {}) {
    return submit_awaiter(st_.get(), &ctx,
                          detail::make_pool_job(std::forward<F>(f), std::move(opts)));
  }
  // Accepts f if it can be done without waiting (an idle worker, room in the
  // queue, or a lower-priority job to displace); false when full or shut down
  // (the caller answers 503 with Retry-After). Never suspends.
  template <class F>
    requires detail::pool_job_callable<F>
  bool try_submit(F&& f, job_options opts = {}) {
    return try_submit_job(detail::make_pool_job(std::forward<F>(f), std::move(opts)));
  }

  // Stops accepting (waiting submitters get errc::closed), lets the workers
  // drain the queue, and returns the final stats once every worker has ended.
  // If ctx is done first: drops the jobs still queued (counted `dropped`,
  // on_drop told drop_reason::shutdown), cancels the running jobs' contexts,
  // and waits for those jobs to return. May be called more than once (and
  // concurrently); each call returns when the pool is down. Must be awaited
  // from a task. Go: the close(jobs); cancel(); wg.Wait() dance, in one call.
  task<worker_pool_stats> shutdown(context ctx);

  // A snapshot of the counters and timings; callable from any thread.
  worker_pool_stats stats() const;
  // The name given in the options.
  const std::string& name() const noexcept;

 private:
  bool try_submit_job(detail::pool_job* job);

  detail::ref_ptr<detail::pool_state> st_;
};

}  // namespace sluice
