// Internal: the M:N scheduler. Workers are OS threads (Go's M+P pairs); tasks are
// task_records whose frames are resumed by workers.
//
// Where a runnable task can be: exactly one of {a worker's run_next slot, a
// worker's local_queue, the global queue, being resumed by a worker}. A parked
// task is in none of them: it is reachable only from the wait list or timer that
// will wake it (and from the registry, which never resumes).
//
// Parking protocol for idle workers (Go's findrunnable/wakep, simplified):
//   * at most one worker is "spinning" per wakep(): new work wakes a sleeper only
//     when nobody spins (nmspinning_ == 0), so a burst of wake-ups costs one
//     futex wake, not one per task (no thundering herd);
//   * a spinning worker that finds work stops spinning and, if it was the last
//     spinner, calls wakep() so that remaining work still gets a spinner;
//   * before sleeping a worker publishes itself as idle (npidle_, seq_cst), then
//     re-checks the global queue and (if it was the last spinner) every local
//     queue; a producer pushes first and checks for idle workers second, both
//     seq_cst. One of the two always sees the other, so no wake-up is lost. A
//     push to a worker's own local queue needs no such care: that worker runs
//     it itself if nobody else does;
//   * one idle worker blocks in epoll_wait (the netpoller), the others on a futex;
//   * timers: one idle worker at a time (not the poller) "watches" them,
//     sleeping until the nearest deadline of any worker plus timer_slack (see
//     park()); the others sleep until woken, until their own nearest deadline
//     plus slack if it is earlier than the watcher's, or else until a backstop
//     1 ms later, in case the watcher got busy. So idle workers do not all wake
//     for the same timer, and a stream of timers fires in batches, not one
//     wake-up each. Not handled (as before the watcher): a task that adds an
//     earlier timer and then keeps its worker busy wakes nobody; that timer
//     waits for the watcher's deadline, the backstop, or its worker's next
//     check between tasks. Go wakes its netpoller for that case.
#pragma once

#include "registry.hpp"
#include "run_queue.hpp"

#include <sluice/detail/task_record.hpp>
#include <sluice/detail/timer.hpp>
#include <sluice/introspection.hpp>
#include <sluice/runtime.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace sluice::detail {

class scheduler;
class poll_cache;

// Something registered with the netpoller (epoll data.ptr). on_ready runs on the
// worker that polled, and makes the waiting tasks runnable.
struct poll_item {
  void (*on_ready)(poll_item* self, std::uint32_t events) noexcept = nullptr;
};

struct alignas(64) worker {
  scheduler* sched = nullptr;
  unsigned index = 0;
  local_queue local;
  std::atomic<task_record*> run_next{nullptr};
  timer_heap timers;
  // Worker-private state.
  std::uint32_t tick = 0;
  std::uint32_t transfers = 0;
  std::uint64_t rng = 0;
  bool spinning = false;
  // Idle/wake handshake: the waker sets `notified` to 1 and wakes the futex or,
  // when `in_poll` (set under idle_mu_ before publishing), the eventfd.
  std::atomic<std::uint32_t> notified{0};
  bool in_poll = false;
  bool idle = false;           // guarded by sched->idle_mu_
  bool wake_spinning = false;  // guarded by sched->idle_mu_: set by wakep()
  // Task ids are handed out in blocks so spawning touches no shared counter.
  std::uint64_t next_id = 0;
  std::uint64_t id_limit = 0;
  std::thread thread;  // empty for worker 0 (the thread that called run)
};

class scheduler {
 public:
  explicit scheduler(const runtime_options& opts);
  ~scheduler();
  scheduler(const scheduler&) = delete;
  scheduler& operator=(const scheduler&) = delete;

  // Starts worker threads 1..n-1 and runs worker 0's loop on this thread until
  // stop() is called (by the main task finishing).
  void run_workers();
  void stop() noexcept;
  bool stopping() const noexcept { return stopping_.load(std::memory_order_acquire); }

  // Destroys every task still alive (newest first, the main task last).
  void destroy_remaining(task_record* main) noexcept;

  void submit_new(task_record* t, const task_origin& origin);
  void ready(task_record* t, bool next) noexcept;

  registry& tasks() noexcept { return registry_; }
  const runtime_options& options() const noexcept { return opts_; }
  unsigned worker_count() const noexcept { return static_cast<unsigned>(workers_.size()); }

  // A snapshot for introspection (runtime_stats); every figure is read
  // without locks, so each is exact only for its own instant.
  void fill_stats(runtime_stats& out) const;

  // Netpoller plumbing (used by net/).
  int epoll_fd() const noexcept { return epfd_; }
  void io_registered() noexcept { io_waiters_.fetch_add(1, std::memory_order_relaxed); }
  void io_unregistered() noexcept { io_waiters_.fetch_sub(1, std::memory_order_relaxed); }
  poll_cache& polls() noexcept { return *polls_; }

  void handle_task_exception(task_record* t, std::exception_ptr e) noexcept;
  // Pushes to the global queue and wakes a worker if none is looking.
  void global_push_batch(task_record* first, task_record* last, std::uint32_t n) noexcept;

 private:
  void execute(worker* w, task_record* t);
  void wake_worker_raw(worker* w, bool poll) noexcept;
  friend struct worker_loop;
  void worker_main(worker* w);
  task_record* find_runnable(worker* w);
  void run_due_timers(worker* w, bool all);
  task_record* steal_work(worker* w);
  bool netpoll(worker* w, int timeout_ms);
  void park(worker* w);
  void wakep() noexcept;
  void reset_spinning(worker* w) noexcept;
  bool any_local_work() const noexcept;
  std::uint64_t allocate_id(worker* w) noexcept;

  runtime_options opts_;
  std::vector<std::unique_ptr<worker>> workers_;
  global_queue global_;
  registry registry_;
  std::atomic<int> nmspinning_{0};
  std::atomic<int> npidle_{0};
  spinlock idle_mu_;
  std::vector<worker*> idle_;
  std::atomic<bool> poller_taken_{false};
  // The timer watcher's role and the time (ns) it sleeps until (none: nobody).
  std::atomic<bool> timer_watch_taken_{false};
  std::atomic<std::int64_t> timer_watch_until_{timer_heap::none};
  std::atomic<long> io_waiters_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<std::uint64_t> id_blocks_{1};
  int epfd_ = -1;
  int evfd_ = -1;
  std::unique_ptr<poll_cache> polls_;
};

// The worker running on this thread (nullptr outside a runtime). Out of line and
// behind a compiler barrier, see current_task().
worker* current_worker() noexcept;
// Snapshot of a task for dumps and panics (introspection.cpp).
task_info describe(const task_record& t);
void set_current(worker* w, task_record* t) noexcept;
// Gives this thread its own frame cache while it is a worker (frame_alloc.cpp).
void attach_frame_cache();
void detach_frame_cache() noexcept;
scheduler* current_scheduler() noexcept;

}  // namespace sluice::detail
