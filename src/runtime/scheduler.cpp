// The M:N scheduler: worker loop, run queues, stealing, parking, netpoll.
// See scheduler.hpp for the protocol; the comments here say why each step is safe.
#include "scheduler.hpp"
#include "netpoll.hpp"

#include <sluice/runtime.hpp>

#include <linux/futex.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>

namespace sluice::detail {

namespace {

constexpr unsigned max_workers = 1024;
// Symmetric transfers a worker makes before it forces the chain back through its
// loop. Each non-tail-called transfer costs two stack frames (a few hundred bytes
// at -O0 or under ASan), so 64 keeps the worst case well under 100 KiB.
constexpr std::uint32_t transfer_budget = 64;
constexpr std::uint64_t id_block = 1024;

void futex_wait(std::atomic<std::uint32_t>* word, std::uint32_t expected,
                std::int64_t timeout_ns) noexcept {
  timespec ts{};
  timespec* tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = static_cast<time_t>(timeout_ns / 1000000000);
    ts.tv_nsec = static_cast<long>(timeout_ns % 1000000000);
    tsp = &ts;
  }
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, tsp,
          nullptr, 0);
}

void futex_wake(std::atomic<std::uint32_t>* word) noexcept {
  syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE, 1, nullptr,
          nullptr, 0);
}

std::uint64_t xorshift(std::uint64_t& s) noexcept {
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return s;
}

// Idle workers fire timers in batches: they sleep until the nearest deadline
// plus this slack, so that the timers due within it are fired by one wake-up
// instead of one wake-up (and one pass through park) each. It bounds how late a
// timer fires when its worker is idle, on top of the wake-up latency; Linux puts
// the same 50 us of slack on a thread's timed sleeps by default, and workers
// set their own to 1 us (worker_main) so that the two do not add up. A busy
// worker fires its due timers without slack, between tasks.
constexpr clock::duration timer_slack = std::chrono::microseconds(50);
// A worker that is not the timer watcher still wakes this long after the
// nearest deadline, in case the watcher woke and is now busy in a long task.
constexpr clock::duration timer_backstop = std::chrono::milliseconds(1);

// The nearest deadline of any worker's timers, in ns; timer_heap::none if none.
// The timer watcher sleeps until that plus slack (see park()), so a timer whose
// worker is stuck in a long task still fires on time: the watcher runs it from
// run_due_timers.
std::int64_t earliest_timer_ns(const std::vector<std::unique_ptr<worker>>& workers) noexcept {
  std::int64_t e = timer_heap::none;
  for (const auto& w : workers) e = std::min(e, w->timers.earliest_ns());
  return e;
}

void push_local(worker* w, task_record* t) noexcept {
  if (w->local.push(t)) return;
  // Full: move half of it to the global queue (Go's runqputslow), then retry.
  task_record* first = nullptr;
  task_record* last = nullptr;
  const std::uint32_t n = w->local.take_half(first, last);
  if (n != 0) {
    last->next_run = t;
    w->sched->global_push_batch(first, t, n + 1);
    return;
  }
  if (!w->local.push(t)) w->sched->global_push_batch(t, t, 1);
}

}  // namespace

// ---- scheduler ------------------------------------------------------------------

namespace {
unsigned checked_workers(const runtime_options& opts) {
  if (opts.workers < 1 || static_cast<unsigned>(opts.workers) > max_workers) {
    throw std::invalid_argument("sluice::runtime_options::workers must be between 1 and " +
                                std::to_string(max_workers) + ", got " +
                                std::to_string(opts.workers));
  }
  return static_cast<unsigned>(opts.workers);
}
}  // namespace

scheduler::scheduler(const runtime_options& opts)
    : opts_(opts), registry_(checked_workers(opts)) {
  const auto n = static_cast<unsigned>(opts.workers);
  workers_.reserve(n);
  for (unsigned i = 0; i < n; ++i) {
    auto w = std::make_unique<worker>();
    w->sched = this;
    w->index = i;
    w->rng = 0x9E3779B97F4A7C15ULL * (i + 1);
    workers_.push_back(std::move(w));
  }
  idle_.reserve(n);
  polls_ = std::make_unique<poll_cache>();
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  evfd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (evfd_ < 0) {
    close(epfd_);
    throw std::system_error(errno, std::generic_category(), "eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // nullptr marks the wake-up eventfd
  epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev);
}

scheduler::~scheduler() {
  for (auto& w : workers_) w->timers.clear();
  close(evfd_);
  close(epfd_);
}

std::uint64_t scheduler::allocate_id(worker* w) noexcept {
  if (w->next_id == w->id_limit) {
    w->next_id = id_blocks_.fetch_add(id_block, std::memory_order_relaxed);
    w->id_limit = w->next_id + id_block;
  }
  return w->next_id++;
}

void scheduler::global_push_batch(task_record* first, task_record* last,
                                  std::uint32_t n) noexcept {
  global_.push_batch(first, last, n);
  wakep();
}

void scheduler::submit_new(task_record* t, const task_origin& origin) {
  worker* w = current_worker();
  t->sched = this;
  t->origin = origin;
  if (w != nullptr && w->sched == this) {
    t->id = allocate_id(w);
    registry_.add(t, w->index);
    push_local(w, t);
    wakep();
  } else {
    t->id = id_blocks_.fetch_add(1, std::memory_order_relaxed);
    registry_.add(t, 0);
    global_push_batch(t, t, 1);
  }
}

void scheduler::ready(task_record* t, bool next) noexcept {
  t->reason.store(wait_reason::runnable, std::memory_order_relaxed);
  worker* w = current_worker();
  if (w == nullptr || w->sched != this) {
    global_push_batch(t, t, 1);
    return;
  }
  if (next) {
    // The woken task runs right after the current one (Go's runnext), so a
    // hand-off between two tasks stays on one core. No wakep() here: the slot
    // holds one task that this worker will run next; waking another worker for
    // it only makes it bounce between cores. Surplus work gets a helper from
    // the check in execute().
    task_record* old = w->run_next.exchange(t, std::memory_order_acq_rel);
    if (old == nullptr) return;
    t = old;
  }
  push_local(w, t);
  wakep();
}

void scheduler::wakep() noexcept {
  // seq_cst loads: they pair with the seq_cst increment of npidle_ / decrement of
  // nmspinning_ in park() (a store-load handshake; acquire/release cannot order a
  // store before a later load).
  if (npidle_.load(std::memory_order_seq_cst) == 0) return;
  if (nmspinning_.load(std::memory_order_seq_cst) != 0) return;
  int expected = 0;
  if (!nmspinning_.compare_exchange_strong(expected, 1, std::memory_order_seq_cst)) return;
  idle_mu_.lock();
  if (idle_.empty() || stopping()) {
    idle_mu_.unlock();
    nmspinning_.fetch_sub(1, std::memory_order_seq_cst);
    return;
  }
  worker* v = idle_.back();
  idle_.pop_back();
  npidle_.fetch_sub(1, std::memory_order_seq_cst);
  v->idle = false;
  v->wake_spinning = true;  // it owns the spinning slot we just took
  v->notified.store(1, std::memory_order_release);
  const bool poll = v->in_poll;
  idle_mu_.unlock();
  wake_worker_raw(v, poll);
}

void scheduler::wake_worker_raw(worker* v, bool poll) noexcept {
  if (poll) {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = write(evfd_, &one, sizeof one);
  } else {
    futex_wake(&v->notified);
  }
}

void scheduler::stop() noexcept {
  stopping_.store(true, std::memory_order_seq_cst);
  idle_mu_.lock();
  std::vector<std::pair<worker*, bool>> to_wake;
  for (worker* v : idle_) {
    v->idle = false;
    v->wake_spinning = false;
    v->notified.store(1, std::memory_order_release);
    to_wake.emplace_back(v, v->in_poll);
  }
  npidle_.fetch_sub(static_cast<int>(idle_.size()), std::memory_order_seq_cst);
  idle_.clear();
  idle_mu_.unlock();
  for (auto& [v, poll] : to_wake) wake_worker_raw(v, poll);
}

void scheduler::reset_spinning(worker* w) noexcept {
  w->spinning = false;
  // The last spinner found work: there may be more, make sure someone looks.
  if (nmspinning_.fetch_sub(1, std::memory_order_seq_cst) == 1) wakep();
}

bool scheduler::any_local_work() const noexcept {
  for (const auto& w : workers_) {
    if (!w->local.empty() || w->run_next.load(std::memory_order_acquire) != nullptr) return true;
  }
  return false;
}

task_record* scheduler::steal_work(worker* w) {
  const auto n = static_cast<unsigned>(workers_.size());
  if (n == 1) return nullptr;
  for (int round = 0; round < 4; ++round) {
    const bool last_round = round == 3;
    const unsigned start = static_cast<unsigned>(xorshift(w->rng) % n);
    for (unsigned k = 0; k < n; ++k) {
      worker* v = workers_[(start + k) % n].get();
      if (v == w) continue;
      if (stopping()) return nullptr;
      if (task_record* t = w->local.steal_from(v->local)) return t;
      if (last_round && v->run_next.load(std::memory_order_relaxed) != nullptr) {
        // The victim is probably about to run its run_next task (a hand-off that
        // should stay on its core): give it ~3 us first, as Go does, and steal
        // only if the task is still waiting after that.
        const std::int64_t until = to_ns(clock::now()) + 3000;
        while (to_ns(clock::now()) < until && v->run_next.load(std::memory_order_relaxed) != nullptr) {
          cpu_relax();
        }
        if (task_record* t = v->run_next.exchange(nullptr, std::memory_order_acq_rel)) return t;
      }
    }
  }
  return nullptr;
}

void scheduler::fill_stats(runtime_stats& out) const {
  out.tasks = registry_.count();
  out.workers = static_cast<unsigned>(workers_.size());
  const int idle = npidle_.load(std::memory_order_relaxed);
  const int spinning = nmspinning_.load(std::memory_order_relaxed);
  out.idle_workers = static_cast<unsigned>(idle < 0 ? 0 : idle);
  out.spinning_workers = static_cast<unsigned>(spinning < 0 ? 0 : spinning);
  out.global_queue = global_.size();
  out.local_queues.clear();
  for (const auto& w : workers_) {
    // head and tail are two loads: a steal between them can make the
    // difference wrap; such a reading is dropped as 0.
    const std::uint32_t n = w->local.size();
    out.local_queues.push_back(n > (1u << 20) ? 0 : n);
  }
  const long io = io_waiters_.load(std::memory_order_relaxed);
  out.io_registrations = static_cast<std::size_t>(io < 0 ? 0 : io);
}

bool scheduler::netpoll(worker* w, int timeout_ms) {
  epoll_event events[128];
  const int n = epoll_wait(epfd_, events, 128, timeout_ms);
  bool found = false;
  for (int i = 0; i < n; ++i) {
    auto* item = static_cast<poll_item*>(events[i].data.ptr);
    if (item == nullptr) {
      std::uint64_t v;
      while (read(evfd_, &v, sizeof v) > 0) {
      }
      continue;
    }
    item->on_ready(item, events[i].events);
    found = true;
  }
  (void)w;
  return found;
}

void scheduler::park(worker* w) {
  // `spinning` is this worker's own field; once we are on the idle list a waker
  // may write `wake_spinning` (under idle_mu_), never `spinning`.
  const bool was_spinning = w->spinning;
  w->spinning = false;
  idle_mu_.lock();
  if (stopping() || !global_.empty()) {
    idle_mu_.unlock();
    w->spinning = was_spinning;
    return;
  }
  bool poll = false;
  if (io_waiters_.load(std::memory_order_relaxed) > 0) {
    poll = !poller_taken_.exchange(true, std::memory_order_acq_rel);
  }
  w->in_poll = poll;
  w->idle = true;
  w->wake_spinning = false;
  w->notified.store(0, std::memory_order_relaxed);
  idle_.push_back(w);
  npidle_.fetch_add(1, std::memory_order_seq_cst);
  idle_mu_.unlock();

  // A producer outside the workers pushes to the global queue (seq_cst) and
  // then reads npidle_ (seq_cst); we incremented npidle_ and now read the
  // queue. One of the two sees the other, so that push is never stranded.
  bool recheck = !global_.empty();
  // The last spinner to stop must look at every queue once more: a producer
  // that saw it spinning did not wake anyone.
  if (was_spinning && nmspinning_.fetch_sub(1, std::memory_order_seq_cst) == 1) {
    recheck = recheck || any_local_work();
  }
  bool watching = false;
  if (!recheck) {
    // How long to sleep (ns; -1: until woken). With timers pending, one idle
    // worker (never the poller) watches them and sleeps until the nearest
    // deadline plus slack. Another idle worker sleeps that long only if its deadline is earlier
    // than the watcher's (a timer added since the watcher went to sleep),
    // otherwise until the backstop. The watcher's deadline may be read stale:
    // the worst outcome is a second sleeper with the same deadline, or a
    // timer fired at the backstop when a woken watcher then ran a long task.
    std::int64_t timeout = -1;
    const std::int64_t e = earliest_timer_ns(workers_);
    if (e != timer_heap::none) {
      const clock::time_point now = clock::now();
      const clock::time_point target = saturating_add(
          clock::time_point(std::chrono::duration_cast<clock::duration>(std::chrono::nanoseconds(e))),
          timer_slack);
      const auto ns_until = [now](clock::time_point t) {
        return std::chrono::duration_cast<std::chrono::nanoseconds>(t - now).count();
      };
      if (target <= now) {
        timeout = 0;
      } else if (!poll && !timer_watch_taken_.exchange(true, std::memory_order_acq_rel)) {
        // Not the poller: epoll_wait's timeout is in whole milliseconds, so it
        // would make every timer up to 1 ms late; a futex sleep is to the us.
        watching = true;
        timer_watch_until_.store(to_ns(target), std::memory_order_relaxed);
        timeout = ns_until(target);
      } else if (to_ns(target) < timer_watch_until_.load(std::memory_order_relaxed)) {
        timeout = ns_until(target);
      } else {
        timeout = ns_until(saturating_add(target, timer_backstop));
      }
    }
    if (poll) {
      const int ms = timeout < 0 ? -1 : static_cast<int>(std::min<std::int64_t>(
                                            (timeout + 999999) / 1000000, INT32_MAX));
      if (w->notified.load(std::memory_order_acquire) == 0) netpoll(w, ms);
    } else if (timeout != 0) {
      futex_wait(&w->notified, 0, timeout);
    }
  }
  if (watching) {
    timer_watch_until_.store(timer_heap::none, std::memory_order_relaxed);
    timer_watch_taken_.store(false, std::memory_order_release);
  }
  if (poll) poller_taken_.store(false, std::memory_order_release);

  idle_mu_.lock();
  if (w->idle) {
    // Timeout, I/O, recheck or spurious: take ourselves off the idle list.
    idle_.erase(std::find(idle_.begin(), idle_.end(), w));
    npidle_.fetch_sub(1, std::memory_order_seq_cst);
    w->idle = false;
    if (recheck) {
      w->spinning = true;
      nmspinning_.fetch_add(1, std::memory_order_seq_cst);
    }
  } else {
    // wakep() or stop() took us off the list; wakep() handed us a spinning slot.
    w->spinning = w->wake_spinning;
  }
  idle_mu_.unlock();
}

void scheduler::run_due_timers(worker* w, bool all) {
  // Own timers first; then (now and then, and before parking) due timers of
  // workers busy in a long task. Their heap lock is only tried: a held lock
  // means its owner is running them.
  // The clock is read once, and only if some heap has a timer at all.
  std::optional<clock::time_point> now;
  const std::size_t count = all ? workers_.size() : 1;
  for (std::size_t k = 0; k < count; ++k) {
    worker* v = workers_[(w->index + k) % workers_.size()].get();
    const std::int64_t e = v->timers.earliest_ns();
    if (e == timer_heap::none) continue;
    if (!now) now = clock::now();
    if (e > to_ns(*now)) continue;
    if (v == w) {
      w->timers.run_expired(*now);
    } else {
      v->timers.try_run_expired(*now);
    }
  }
}

task_record* scheduler::find_runnable(worker* w) {
  const auto nworkers = static_cast<int>(workers_.size());
  for (;;) {
    if (stopping()) return nullptr;
    // Timers are checked every few rounds and whenever the local queue runs dry,
    // not every round: reading the clock is the dominant cost of a round on
    // some VMs. A busy worker delays a due timer by at most 8 task slices (it
    // then fires every timer that is due, in batches of 32).
    if (w->tick % 8 == 0 || (w->local.empty() && w->run_next.load(std::memory_order_relaxed) == nullptr)) {
      run_due_timers(w, w->tick % 61 == 0);
    }
    // Fairness: now and then take from the global queue first so that tasks
    // woken from outside cannot be starved by two tasks ping-ponging locally.
    if (w->tick % 61 == 0 && !global_.empty()) {
      if (task_record* t = global_.pop_batch(w->local, 1)) return t;
    }
    if (w->run_next.load(std::memory_order_relaxed) != nullptr) {
      if (task_record* t = w->run_next.exchange(nullptr, std::memory_order_acq_rel)) return t;
    }
    if (task_record* t = w->local.pop()) return t;
    if (!global_.empty()) {
      const auto share = static_cast<std::uint32_t>(global_.size() / workers_.size() + 1);
      if (task_record* t = global_.pop_batch(w->local, std::min<std::uint32_t>(share, 128))) {
        return t;
      }
    }
    if (io_waiters_.load(std::memory_order_relaxed) > 0 &&
        !poller_taken_.load(std::memory_order_relaxed)) {
      if (!poller_taken_.exchange(true, std::memory_order_acq_rel)) {
        const bool got = netpoll(w, 0);
        poller_taken_.store(false, std::memory_order_release);
        if (got) continue;
      }
    }
    // Steal, but limit spinners to half the busy workers (Go's rule): beyond
    // that they only burn CPU that the busy ones could use.
    if (w->spinning || 2 * nmspinning_.load(std::memory_order_relaxed) <
                           nworkers - npidle_.load(std::memory_order_relaxed)) {
      if (!w->spinning) {
        w->spinning = true;
        nmspinning_.fetch_add(1, std::memory_order_seq_cst);
      }
      if (task_record* t = steal_work(w)) return t;
    }
    run_due_timers(w, true);
    if (w->run_next.load(std::memory_order_relaxed) != nullptr || !w->local.empty()) continue;
    park(w);
  }
}

void scheduler::execute(worker* w, task_record* t) {
  ++w->tick;
  w->transfers = 0;
  // Work left behind us and nobody looking for it: get a helper.
  if (!w->local.empty()) wakep();
  t->reason.store(wait_reason::running, std::memory_order_relaxed);
  set_current(w, t);
  t->resume_point.resume();
  // t may already be running elsewhere or be freed: do not touch it.
  set_current(w, nullptr);
}

void scheduler::worker_main(worker* w) {
  set_current(w, nullptr);
  attach_frame_cache();
  // Timed sleeps of this thread wake within 1 us of the deadline we ask for:
  // the scheduler adds its own slack (timer_slack). Restored on the way out,
  // since worker 0 is the thread that called run().
  const int old_slack = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  prctl(PR_SET_TIMERSLACK, 1000UL, 0, 0, 0);
  while (!stopping()) {
    task_record* t = find_runnable(w);
    if (t == nullptr) continue;
    if (w->spinning) reset_spinning(w);
    execute(w, t);
  }
  if (w->spinning) {
    w->spinning = false;
    nmspinning_.fetch_sub(1, std::memory_order_seq_cst);
  }
  detach_frame_cache();
  if (old_slack > 0) prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(old_slack), 0, 0, 0);
  set_current(nullptr, nullptr);
}

void scheduler::run_workers() {
  for (std::size_t i = 1; i < workers_.size(); ++i) {
    worker* w = workers_[i].get();
    w->thread = std::thread([this, w] { worker_main(w); });
  }
  worker_main(workers_[0].get());
  for (std::size_t i = 1; i < workers_.size(); ++i) workers_[i]->thread.join();
}

namespace {
void destroy_task(task_record* t) noexcept {
  root_base* r = root_of(t);
  r->finish(r, true);
}
}  // namespace

void scheduler::destroy_remaining(task_record* main) noexcept {
  // Newest first: a task usually waits on state owned by an older one (its
  // spawner), so that state is still there when the waiter unlinks itself.
  std::vector<task_record*> all = registry_.snapshot();
  std::sort(all.begin(), all.end(),
            [](const task_record* a, const task_record* b) { return a->id > b->id; });
  for (task_record* t : all) {
    if (t != main) destroy_task(t);
  }
  // Destructors above may have created or woken nothing runnable that matters:
  // the queues are simply dropped. Frames of tasks spawned during destruction
  // (unusual) are destroyed too.
  for (;;) {
    std::vector<task_record*> late = registry_.snapshot();
    late.erase(std::remove(late.begin(), late.end(), main), late.end());
    if (late.empty()) break;
    for (task_record* t : late) destroy_task(t);
  }
  if (main != nullptr) destroy_task(main);
  for (auto& w : workers_) w->timers.clear();
}

void scheduler::handle_task_exception(task_record* t, std::exception_ptr e) noexcept {
  task_info info = describe(*t);
  if (opts_.on_task_exception) {
    try {
      opts_.on_task_exception(info, e);
      return;
    } catch (...) {
      std::cerr << "sluice: on_task_exception handler threw\n";
      std::terminate();
    }
  }
  const std::string what = ::sluice::describe(e);
  std::cerr << "sluice: panic: uncaught exception in task " << info.id << ": " << what << "\n"
            << "task " << info.id << " [" << info.state << "]:\n  " << info.origin << "\n";
  std::terminate();
}

// ---- free functions used by headers ------------------------------------------------------

task_record* require_task(const char* what) {
  task_record* t = current_task();
  if (t == nullptr) {
    throw std::logic_error(std::string("sluice: ") + what +
                           " blocks, so it must be awaited from a task inside sluice::run");
  }
  return t;
}

void schedule(task_record* t) noexcept { t->sched->ready(t, true); }
void schedule_fifo(task_record* t) noexcept { t->sched->ready(t, false); }

std::coroutine_handle<> transfer_to(std::coroutine_handle<> next) noexcept {
  worker* w = current_worker();
  if (w == nullptr || ++w->transfers < transfer_budget) return next;
  w->transfers = 0;
  task_record* t = current_task();
  if (t == nullptr) return next;
  // Unwind the chain of nested resume() calls: resume `next` from the loop.
  t->resume_point = next;
  push_local(w, t);
  return std::noop_coroutine();
}

}  // namespace sluice::detail
