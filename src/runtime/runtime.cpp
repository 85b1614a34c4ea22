// Entry points: run(), go()/spawn() plumbing, join handles, yield, num_tasks.
#include "scheduler.hpp"

#include <sluice/runtime.hpp>

#include <new>
#include <stdexcept>

namespace sluice {
namespace detail {

const char* to_string(wait_reason r) noexcept {
  switch (r) {
    case wait_reason::runnable: return "runnable";
    case wait_reason::running: return "running";
    case wait_reason::chan_recv: return "chan receive";
    case wait_reason::chan_send: return "chan send";
    case wait_reason::select: return "select";
    case wait_reason::mutex: return "mutex lock";
    case wait_reason::rw_mutex: return "rw_mutex lock";
    case wait_reason::sleep: return "sleep";
    case wait_reason::io: return "IO wait";
    case wait_reason::wait_group: return "wait_group wait";
    case wait_reason::join: return "join";
    case wait_reason::context: return "context done";
    case wait_reason::semaphore: return "semaphore acquire";
    case wait_reason::once: return "once";
    case wait_reason::errgroup: return "errgroup";
    case wait_reason::yield: return "yield";
    case wait_reason::pool_idle: return "worker_pool idle";
    case wait_reason::pool_submit: return "worker_pool submit";
    case wait_reason::pool_shutdown: return "worker_pool shutdown";
    case wait_reason::finished: return "finished";
  }
  return "?";
}

const char* to_string(task_kind k) noexcept {
  switch (k) {
    case task_kind::go: return "go";
    case task_kind::spawn: return "spawn";
    case task_kind::run: return "run";
    case task_kind::errgroup: return "errgroup.go";
    case task_kind::pool: return "worker_pool";
  }
  return "?";
}

static_assert(std::is_standard_layout_v<root_base>, "root_of() needs the record first");
static_assert(sizeof(task_record) <= 96, "task_record is part of every parked task's cost");

std::coroutine_handle<> complete_task(std::uintptr_t next) noexcept {
  if ((next & 1U) != 0) {
    // A top-level task: its root takes the result and frees the frames (it may
    // destroy the frame we are suspended in, which is allowed: touch nothing).
    auto* r = reinterpret_cast<root_base*>(next & ~std::uintptr_t{1});
    r->rec.reason.store(wait_reason::finished, std::memory_order_relaxed);
    r->finish(r, false);
    return std::noop_coroutine();
  }
  return transfer_to(std::coroutine_handle<>::from_address(reinterpret_cast<void*>(next)));
}

void start_root(root_base* r, const task_origin& origin) {
  worker* w = current_worker();
  if (w == nullptr) {
    r->finish(r, true);
    throw std::logic_error(
        "sluice::go/spawn must be called from inside a runtime (within sluice::run)");
  }
  w->sched->submit_new(&r->rec, origin);
}

void unregister_root(root_base* r) noexcept {
  if (r->rec.registered) r->rec.sched->tasks().remove(&r->rec);
}

void report_task_exception(root_base* r, std::exception_ptr e) noexcept {
  r->rec.sched->handle_task_exception(&r->rec, std::move(e));
}

void main_finished(root_base& r) noexcept { r.rec.sched->stop(); }

void join_state_base::complete() noexcept {
  mu_.lock();
  done_.store(true, std::memory_order_release);
  task_record* j = std::exchange(joiner_, nullptr);
  mu_.unlock();
  if (j != nullptr) schedule(j);
}

bool join_state_base::park_joiner(task_record* t, std::coroutine_handle<> h) noexcept {
  mu_.lock();
  if (done_.load(std::memory_order_relaxed)) {
    mu_.unlock();
    return false;
  }
  prepare_park(t, h, wait_reason::join);
  joiner_ = t;
  mu_.unlock();
  return true;
}

void join_state_base::unpark_joiner(task_record* t) noexcept {
  mu_.lock();
  if (joiner_ == t) joiner_ = nullptr;
  mu_.unlock();
}

}  // namespace detail

runtime::runtime(runtime_options opts) : opts_(std::move(opts)) {
  if (opts_.workers < 1) {
    throw std::invalid_argument("sluice::runtime_options::workers must be >= 1, got " +
                                std::to_string(opts_.workers));
  }
}

runtime::~runtime() = default;

void runtime::run_main(detail::root_base* main, const detail::task_origin& origin) {
  if (used_ || detail::current_worker() != nullptr) {
    main->finish(main, true);
    throw std::logic_error(used_ ? "sluice::runtime::run: a runtime runs once"
                                 : "sluice::run called from inside a running runtime");
  }
  used_ = true;
  std::unique_ptr<detail::scheduler> sched;
  try {
    sched = std::make_unique<detail::scheduler>(opts_);
  } catch (...) {
    main->finish(main, true);
    throw;
  }
  main->rec.is_main = true;
  sched->submit_new(&main->rec, origin);
  sched->run_workers();
  sched->destroy_remaining(&main->rec);
}

void yield_awaiter::await_suspend(std::coroutine_handle<> h) const {
  detail::task_record* t = detail::require_task("yield");
  detail::prepare_park(t, h, detail::wait_reason::runnable);
  // To the global queue, as Go's Gosched does: an idle worker can pick it up,
  // and every task already queued here runs before it comes back.
  t->sched->global_push_batch(t, t, 1);
}

std::size_t num_tasks() noexcept {
  detail::scheduler* s = detail::current_scheduler();
  return s != nullptr ? s->tasks().count() : 0;
}

bool in_runtime() noexcept { return detail::current_task() != nullptr; }

}  // namespace sluice
