// worker_pool: N worker tasks, one bounded priority queue, and the parties that
// wait on it (submitters when it is full, workers when it is empty, shutdown
// callers until the workers are gone), all on the select engine's wait lists.
//
// Invariants (guarded by mu_):
//   * 0 <= queued_ <= capacity_ (a displaced job leaves before its replacement
//     enters);
//   * idle_ (parked workers) is non-empty only while the queue is empty: a job
//     that arrives while a worker is idle is handed to it directly;
//   * submitters_ is non-empty only while the pool is full (queue at capacity,
//     no idle worker) and open: a slot that frees admits the head submitter,
//     and close() turns every submitter away;
//   * once closed_, nothing enters the queue; once the queue is empty and
//     closed_, idle_ is empty (close() and the last pop release the idle
//     workers), so every worker reaches its exit;
//   * drain_waiters_ is non-empty only while live_workers_ > 0.
//
// Every party that takes a node off a wait list claims its waiter first (the
// CAS of select) and hands over under mu_, so a submitter whose context fired
// at the same moment either has its job accepted (and reports success) or
// keeps it (and reports the context's error), never both. Callbacks (on_drop,
// on_error) run outside mu_.
#include <sluice/worker_pool.hpp>

#include <sluice/detail/select_core.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/waiter.hpp>
#include <sluice/runtime.hpp>

#include <array>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <variant>

namespace sluice {

const char* to_string(drop_reason r) noexcept {
  switch (r) {
    case drop_reason::shed: return "shed";
    case drop_reason::expired: return "expired";
    case drop_reason::shutdown: return "shutdown";
  }
  return "unknown";
}

namespace detail {

namespace {

constexpr std::size_t levels = 3;

// What one worker records; only that worker writes it (single-writer stores),
// stats() reads every worker's. Own cache line: workers never share one.
struct alignas(64) worker_slot {
  std::atomic<std::uint64_t> completed{0};
  std::atomic<std::uint64_t> failed{0};
  std::atomic<bool> running{false};
  duration_recorder queue_wait;
  duration_recorder run_time;

  static void bump(std::atomic<std::uint64_t>& c) noexcept {
    c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
};

}  // namespace

class pool_state : public ref_counted {
 public:
  explicit pool_state(worker_pool_options o)
      : opts_(std::move(o)),
        capacity_(static_cast<std::size_t>(opts_.queue_capacity)),
        slots_(std::make_unique<worker_slot[]>(static_cast<std::size_t>(opts_.workers))) {
    auto [ctx, cancel] = with_cancel(context::background());
    ctx_ = std::move(ctx);
    cancel_ = std::move(cancel);
  }
  ~pool_state() {
    // Only reachable once every worker is gone and nothing is queued (the
    // workers and the handle hold references), but be safe with stragglers.
    for (auto& head : head_) {
      while (pool_job* j = head) {
        head = j->next;
        delete j;
      }
    }
  }

  // ---- the cases ---------------------------------------------------------------

  // A submitter: completes by handing its job over (result: empty error_code)
  // or by finding the pool closed (errc::closed).
  class submit_case {
   public:
    using result_type = std::error_code;
    static constexpr bool is_default = false;
    static constexpr wait_reason reason = wait_reason::pool_submit;

    submit_case(pool_state* s, pool_job** job, pool_job** victim) noexcept
        : s_(s), job_(job), victim_(victim) {}
    spinlock* lock() const noexcept { return &s_->mu_; }
    void prepare() const noexcept {}
    bool try_complete(std::error_code& out, wake_batch& wakes) noexcept {
      if (s_->closed_) {
        out = errc::closed;
        return true;
      }
      if (s_->accept_locked(*job_, wakes, *victim_)) {
        *job_ = nullptr;  // the pool owns it now
        out = {};
        return true;
      }
      return false;
    }
    void enqueue(wait_node& n, std::error_code&) noexcept {
      n.slot = *job_;
      s_->submitters_.push_back(&n);
    }
    void cancel(wait_node& n) noexcept { s_->leave(s_->submitters_, n); }
    void finish(wait_node& n, std::error_code& out) noexcept {
      if (n.closed) {
        out = errc::closed;
      } else {
        *job_ = nullptr;  // taken by a worker or admitted to the queue
        out = {};
      }
    }

   private:
    pool_state* s_;
    pool_job** job_;
    pool_job** victim_;
  };

  // An idle worker: completes with the next job, or nullptr when the pool is
  // closed and drained (the worker exits).
  class take_case {
   public:
    using result_type = pool_job*;
    static constexpr bool is_default = false;
    static constexpr wait_reason reason = wait_reason::pool_idle;

    take_case(pool_state* s, bool* parked) noexcept : s_(s), parked_(parked) {}
    spinlock* lock() const noexcept { return &s_->mu_; }
    void prepare() const noexcept {}
    bool try_complete(pool_job*& out, wake_batch& wakes) noexcept {
      out = s_->pop_locked(wakes);
      return out != nullptr || s_->closed_;
    }
    void enqueue(wait_node& n, pool_job*&) noexcept { s_->idle_.push_back(&n); }
    void cancel(wait_node& n) noexcept { s_->leave(s_->idle_, n); }
    void finish(wait_node& n, pool_job*& out) noexcept {
      *parked_ = true;
      out = n.closed ? nullptr : static_cast<pool_job*>(n.slot);
    }

   private:
    pool_state* s_;
    bool* parked_;
  };

  // A shutdown caller: completes once every worker has exited.
  class drain_case {
   public:
    using result_type = std::monostate;
    static constexpr bool is_default = false;
    static constexpr wait_reason reason = wait_reason::pool_shutdown;

    explicit drain_case(pool_state* s) noexcept : s_(s) {}
    spinlock* lock() const noexcept { return &s_->mu_; }
    void prepare() const noexcept {}
    bool try_complete(std::monostate&, wake_batch&) noexcept { return s_->live_workers_ == 0; }
    void enqueue(wait_node& n, std::monostate&) noexcept { s_->drain_waiters_.push_back(&n); }
    void cancel(wait_node& n) noexcept { s_->leave(s_->drain_waiters_, n); }
    void finish(wait_node&, std::monostate&) noexcept {}

   private:
    pool_state* s_;
  };

  // A case's cancel(): takes n off list l (if it is still there).
  void leave(wait_list& l, wait_node& n) noexcept {
    mu_.lock();
    l.remove(&n);
    mu_.unlock();
  }

  // ---- operations -------------------------------------------------------------

  // submit()'s fast path: true when the outcome is known without waiting
  // (accepted: *job nulled, result empty; closed or ctx done: result set).
  bool submit_now(const context* ctx, pool_job*& job, std::error_code& result) {
    if (ctx != nullptr) {
      if (std::error_code e = ctx->err()) {
        result = e;
        rejected_.fetch_add(1, std::memory_order_relaxed);
        return true;
      }
    }
    stamp(job);
    pool_job* victim = nullptr;
    bool decided = true;
    {
      wake_batch wakes;
      mu_.lock();
      if (closed_) {
        result = errc::closed;
      } else if (accept_locked(job, wakes, victim)) {
        job = nullptr;
      } else {
        decided = false;
      }
      mu_.unlock();
    }
    if (decided && job != nullptr) rejected_.fetch_add(1, std::memory_order_relaxed);
    if (victim != nullptr) drop(victim, drop_reason::shed);
    return decided;
  }

  bool try_submit(pool_job* job) {
    std::error_code closed;
    // Full (undecided) counts as rejected here; closed was counted by submit_now.
    if (!submit_now(nullptr, job, closed)) rejected_.fetch_add(1, std::memory_order_relaxed);
    if (job == nullptr) return true;
    delete job;
    return false;
  }

  // A coroutine with its own reference: a submitter woken by close() may run
  // after the handle and every worker are gone.
  static task<std::error_code> submit(ref_ptr<pool_state> self, context ctx, pool_job* job) {
    pool_state* s = self.get();
    // Owned here until accepted (then nulled by the case); freed if never.
    std::unique_ptr<pool_job> guard(job);
    pool_job* pending = job;
    pool_job* victim = nullptr;
    std::error_code result;
    if (std::error_code e = ctx.err()) {
      result = e;
    } else {
      if (ctx.node()->target() == nullptr) {
        select_awaiter<submit_case> wait(submit_case(s, &pending, &victim));
        auto r = co_await wait;
        result = r.get<0>();
      } else {
        select_awaiter<submit_case, done_case> wait(submit_case(s, &pending, &victim),
                                                    sluice::done(ctx));
        auto r = co_await wait;
        result = r.index() == 0 ? r.get<0>() : ctx.err();
      }
    }
    if (pending == nullptr) {
      (void)guard.release();  // accepted: the pool owns it
    } else {
      s->rejected_.fetch_add(1, std::memory_order_relaxed);
    }
    if (victim != nullptr) s->drop(victim, drop_reason::shed);
    co_return result;
  }

  // Stops accepting: waiting submitters get errc::closed; idle workers exit if
  // nothing is left to do.
  void close() noexcept {
    wake_batch wakes;
    mu_.lock();
    if (!closed_) {
      closed_ = true;
      while (wait_node* n = submitters_.claim_front()) {
        n->closed = true;
        wakes.add(n);
      }
      if (queued_ == 0) release_idle_locked(wakes);
    }
    mu_.unlock();
  }

  // The deadline: the queue is dropped and the running jobs' contexts cancelled.
  void stop() noexcept {
    close();
    std::array<pool_job*, levels> gone{};
    mu_.lock();
    gone.swap(head_);
    tail_ = {};
    queued_ = 0;
    mu_.unlock();
    for (pool_job* j : gone) {
      while (j != nullptr) {
        pool_job* next = j->next;
        drop(j, drop_reason::shutdown);
        j = next;
      }
    }
    cancel_();
  }

  // Until every worker has exited, or ctx is done first (*deadline_hit).
  task<void> wait_drained(context ctx, bool* deadline_hit) {
    *deadline_hit = false;
    if (ctx.node()->target() != nullptr) {
      select_awaiter<drain_case, done_case> wait(drain_case(this), sluice::done(ctx));
      auto r = co_await wait;
      *deadline_hit = r.index() != 0;
      co_return;
    }
    select_awaiter<drain_case> wait(drain_case(this));
    co_await wait;
  }

  // One worker. It runs its jobs under a context of its own (a child of the
  // pool's): copying a context per job then touches only this worker's
  // reference count, not a line every worker shares. It reads the clock once
  // per job in the common case: the time a job ended is the next one's start
  // when the next one was taken without parking and no callback (on_error,
  // on_drop) ran in between; otherwise it reads the clock again.
  static task<void> worker_main(ref_ptr<pool_state> st, std::size_t index) {
    pool_state* s = st.get();
    worker_slot& me = s->slots_[index];
    const context_with_cancel mine = with_cancel(s->ctx_);
    clock::time_point now = clock::now();
    for (;;) {
      pool_job* j = nullptr;
      bool parked = false;
      {
        select_awaiter<take_case> take{take_case(s, &parked)};
        auto r = co_await take;
        j = r.get<0>();
      }
      if (j == nullptr) break;  // closed and drained
      if (parked) now = clock::now();
      const clock::time_point start = now;
      // A job handed straight to this (idle) worker was never queued.
      const clock::duration waited =
          j->accepted == clock::time_point{} ? clock::duration::zero() : start - j->accepted;
      if (s->opts_.max_queue_wait > clock::duration::zero() && waited > s->opts_.max_queue_wait) {
        s->drop(j, drop_reason::expired);
        now = clock::now();  // on_drop may have taken a while
        continue;
      }
      me.queue_wait.record(waited);
      me.running.store(true, std::memory_order_relaxed);
      const context_with_cancel job_ctx = s->opts_.job_timeout > clock::duration::zero()
                                              ? with_timeout(mine.ctx, s->opts_.job_timeout)
                                              : context_with_cancel{mine.ctx, cancel_func{}};
      std::exception_ptr failure;
      try {
        co_await j->run(job_ctx.ctx);
      } catch (...) {
        failure = std::current_exception();
      }
      job_ctx.cancel();  // releases the timeout's timer; a no-op without one
      now = clock::now();
      me.run_time.record(now - start);
      me.running.store(false, std::memory_order_relaxed);
      delete j;  // the callable goes only after its task has finished
      if (failure) {
        worker_slot::bump(me.failed);
        s->report(failure);
        now = clock::now();  // the error handler may have taken a while
      } else {
        worker_slot::bump(me.completed);
      }
    }
    mine.cancel();
    s->worker_exited();
  }

  void start_workers() {
    for (int i = 0; i < opts_.workers; ++i) {
      task_origin o = make_origin<decltype(&worker_main)>(task_kind::pool, source_location::current());
      o.entry_address = reinterpret_cast<const void*>(&worker_main);
      mu_.lock();
      ++live_workers_;
      mu_.unlock();
      try {
        root<go_policy, decltype(&worker_main), ref_ptr<pool_state>, std::size_t>::start(
            o, go_policy{}, &worker_main, ref_ptr<pool_state>::share(this),
            static_cast<std::size_t>(i));
      } catch (...) {
        worker_exited();
        stop();  // the ones already started end
        throw;
      }
    }
  }

  worker_pool_stats stats() const {
    worker_pool_stats s;
    mu_.lock();
    s.queued = queued_;
    mu_.unlock();
    for (std::size_t i = 0; i < static_cast<std::size_t>(opts_.workers); ++i) {
      const worker_slot& w = slots_[i];
      s.completed += w.completed.load(std::memory_order_relaxed);
      s.failed += w.failed.load(std::memory_order_relaxed);
      s.running += w.running.load(std::memory_order_relaxed) ? 1 : 0;
      w.queue_wait.add_to(s.queue_wait);
      w.run_time.add_to(s.run_time);
    }
    s.dropped = dropped_.load(std::memory_order_relaxed);
    s.expired = expired_.load(std::memory_order_relaxed);
    s.shed = shed_.load(std::memory_order_relaxed);
    s.rejected = rejected_.load(std::memory_order_relaxed);
    return s;
  }

  const worker_pool_options& options() const noexcept { return opts_; }

 private:
  // ---- queue (requires mu_) -------------------------------------------------------

  void push_locked(pool_job* j) noexcept {
    const auto l = static_cast<std::size_t>(j->priority);
    j->next = nullptr;
    j->prev = tail_[l];
    if (tail_[l] != nullptr) {
      tail_[l]->next = j;
    } else {
      head_[l] = j;
    }
    tail_[l] = j;
    ++queued_;
  }
  void unlink_locked(pool_job* j) noexcept {
    const auto l = static_cast<std::size_t>(j->priority);
    (j->prev != nullptr ? j->prev->next : head_[l]) = j->next;
    (j->next != nullptr ? j->next->prev : tail_[l]) = j->prev;
    j->prev = j->next = nullptr;
    --queued_;
  }

  // Hands `job` to an idle worker, queues it, or displaces a lower-priority
  // queued job for it (returned in `victim`). False: full.
  bool accept_locked(pool_job* job, wake_batch& wakes, pool_job*& victim) noexcept {
    if (wait_node* n = idle_.claim_front()) {
      job->accepted = clock::time_point{};  // never queued: no queue wait
      n->slot = job;
      wakes.add(n);
      return true;
    }
    if (queued_ < capacity_) {
      push_locked(job);
      return true;
    }
    // Full: the newest job of the lowest priority below this one gives way.
    for (std::size_t l = levels; l-- > static_cast<std::size_t>(job->priority) + 1;) {
      if (pool_job* v = tail_[l]) {
        unlink_locked(v);
        victim = v;
        push_locked(job);
        return true;
      }
    }
    return false;
  }

  // The head submitter's job, admitted (its submit reports success), or nullptr.
  pool_job* admit_submitter_locked(wake_batch& wakes) noexcept {
    wait_node* n = submitters_.claim_front();
    if (n == nullptr) return nullptr;
    auto* j = static_cast<pool_job*>(n->slot);
    // Queue wait counts from admission: the time blocked in submit was
    // backpressure on the submitter, not waiting in the queue.
    j->accepted = clock::now();
    wakes.add(n);
    return j;
  }

  // The next job for a worker: the highest-priority queued one (its slot goes to
  // the head submitter), or straight from a submitter when the queue is empty
  // (a zero-capacity pool works this way). Releases the idle workers when the
  // pool is closed and nothing is left.
  pool_job* pop_locked(wake_batch& wakes) noexcept {
    pool_job* j = nullptr;
    for (std::size_t l = 0; l < levels && j == nullptr; ++l) j = head_[l];
    if (j == nullptr) return closed_ ? nullptr : admit_submitter_locked(wakes);
    unlink_locked(j);
    if (!closed_) {
      if (pool_job* k = admit_submitter_locked(wakes)) push_locked(k);
    }
    if (closed_ && queued_ == 0) release_idle_locked(wakes);
    return j;
  }

  void release_idle_locked(wake_batch& wakes) noexcept {
    while (wait_node* n = idle_.claim_front()) {
      n->closed = true;
      wakes.add(n);
    }
  }

  // ---- outside the lock -----------------------------------------------------------

  // The time a job is accepted, read before the lock (a clock read is ~20 ns
  // here: not inside the critical section). Only needed for queue-wait stats.
  static void stamp(pool_job* j) noexcept { j->accepted = clock::now(); }

  void drop(pool_job* j, drop_reason why) noexcept {
    switch (why) {
      case drop_reason::shed: shed_.fetch_add(1, std::memory_order_relaxed); break;
      case drop_reason::expired: expired_.fetch_add(1, std::memory_order_relaxed); break;
      case drop_reason::shutdown: dropped_.fetch_add(1, std::memory_order_relaxed); break;
    }
    if (j->on_drop) {
      try {
        j->on_drop(why);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "sluice: worker_pool \"%s\": on_drop threw: %s\n", opts_.name.c_str(),
                     e.what());
      } catch (...) {
        std::fprintf(stderr, "sluice: worker_pool \"%s\": on_drop threw\n", opts_.name.c_str());
      }
    }
    delete j;
  }

  void report(std::exception_ptr e) noexcept {
    try {
      if (opts_.on_error) {
        opts_.on_error(opts_.name, e);
        return;
      }
      std::fprintf(stderr, "sluice: worker_pool \"%s\": job failed: %s\n", opts_.name.c_str(),
                   describe(e).c_str());
    } catch (...) {
      std::fprintf(stderr, "sluice: worker_pool \"%s\": the error handler threw\n",
                   opts_.name.c_str());
    }
  }

  void worker_exited() noexcept {
    wake_batch wakes;
    mu_.lock();
    if (--live_workers_ == 0) {
      while (wait_node* n = drain_waiters_.claim_front()) wakes.add(n);
    }
    mu_.unlock();
  }

  const worker_pool_options opts_;
  const std::size_t capacity_;
  context ctx_ = context::background();  // the jobs' parent; cancelled by stop()
  cancel_func cancel_;
  std::unique_ptr<worker_slot[]> slots_;

  mutable spinlock mu_;
  std::array<pool_job*, levels> head_{};  // guarded by mu_
  std::array<pool_job*, levels> tail_{};
  std::size_t queued_ = 0;
  bool closed_ = false;
  int live_workers_ = 0;
  wait_list submitters_;
  wait_list idle_;
  wait_list drain_waiters_;

  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> expired_{0};
  std::atomic<std::uint64_t> shed_{0};
  std::atomic<std::uint64_t> rejected_{0};
};

}  // namespace detail

namespace {

void check_options(const worker_pool_options& o) {
  if (o.workers < 1) {
    throw std::invalid_argument("sluice::worker_pool \"" + o.name + "\": workers must be >= 1 (got " +
                                std::to_string(o.workers) + ")");
  }
  if (o.queue_capacity < 0) {
    throw std::invalid_argument("sluice::worker_pool \"" + o.name +
                                "\": queue_capacity must be >= 0 (got " +
                                std::to_string(o.queue_capacity) + ")");
  }
  if (o.job_timeout < clock::duration::zero()) {
    throw std::invalid_argument("sluice::worker_pool \"" + o.name + "\": negative job_timeout");
  }
  if (o.max_queue_wait < clock::duration::zero()) {
    throw std::invalid_argument("sluice::worker_pool \"" + o.name + "\": negative max_queue_wait");
  }
}

}  // namespace

worker_pool::worker_pool(worker_pool_options opts) {
  check_options(opts);
  if (!in_runtime()) {
    throw std::logic_error("sluice::worker_pool \"" + opts.name +
                           "\": must be created inside a runtime (it starts its workers)");
  }
  st_ = detail::ref_ptr<detail::pool_state>::adopt(new detail::pool_state(std::move(opts)));
  st_->start_workers();
}

worker_pool::~worker_pool() {
  if (st_) st_->stop();
}

worker_pool::submit_awaiter::~submit_awaiter() {
  delete job_;  // not accepted (or never awaited)
}

bool worker_pool::submit_awaiter::await_ready() { return st_->submit_now(ctx_, job_, result_); }

std::coroutine_handle<> worker_pool::submit_awaiter::await_suspend(std::coroutine_handle<> h) {
  // job_ is given up only once the coroutine exists: if its frame cannot be
  // allocated, the destructor still frees the job.
  slow_ = detail::pool_state::submit(detail::ref_ptr<detail::pool_state>::share(st_),
                                     ctx_ != nullptr ? *ctx_ : context::background(), job_);
  job_ = nullptr;
  return task<std::error_code>::awaiter(slow_.handle()).await_suspend(h);
}

bool worker_pool::try_submit_job(detail::pool_job* job) { return st_->try_submit(job); }

task<worker_pool_stats> worker_pool::shutdown(context ctx) {
  // The state stays alive for this call even if the handle goes meanwhile.
  detail::ref_ptr<detail::pool_state> st = st_;
  st->close();
  bool deadline_hit = false;
  co_await st->wait_drained(ctx, &deadline_hit);
  if (deadline_hit) {
    st->stop();
    co_await st->wait_drained(context::background(), &deadline_hit);
  }
  co_return st->stats();
}

worker_pool_stats worker_pool::stats() const { return st_->stats(); }

const std::string& worker_pool::name() const noexcept { return st_->options().name; }

}  // namespace sluice
