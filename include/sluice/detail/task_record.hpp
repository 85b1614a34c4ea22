// Internal: the per-task control block (Go's `g`). One lives inside every root
// coroutine frame created by go()/spawn()/run(); run queues, wait lists and the
// registry link records, never frames.
#pragma once

#include <atomic>
#include <coroutine>
#include <cstdint>
#include <string_view>

namespace sluice::detail {

class scheduler;

// What a task is blocked on; shown by dump_tasks (Go's "[chan receive]").
enum class wait_reason : std::uint8_t {
  runnable,
  running,
  chan_recv,
  chan_send,
  select,
  mutex,
  rw_mutex,
  sleep,
  io,
  wait_group,
  join,
  context,
  semaphore,
  once,
  errgroup,
  yield,
  pool_idle,
  pool_submit,
  pool_shutdown,
  finished,
};
const char* to_string(wait_reason r) noexcept;

// Where a task came from: the go/spawn call site and its entry function.
// Kept small: it lives in every task (park_memory counts it).
enum class task_kind : std::uint8_t { go, spawn, run, errgroup, pool };
const char* to_string(task_kind k) noexcept;

struct task_origin {
  const char* file = "";                      // call site (file and line)
  const void* entry_address = nullptr;        // function-pointer entry, symbolized on dump
  const std::string_view* entry_type = nullptr;  // the callable's type name (static storage)
  std::uint32_t line = 0;
  task_kind kind = task_kind::go;
};

// Layout: 6 pointers, the origin, then the small fields, for 96 bytes.
struct task_record {
  task_record* next_run = nullptr;        // intrusive link: global queue
  std::coroutine_handle<> resume_point;  // innermost suspended coroutine of this task
  scheduler* sched = nullptr;
  std::uint64_t id = 0;
  // registry links (guarded by the lock of list reg_list)
  task_record* reg_prev = nullptr;
  task_record* reg_next = nullptr;
  task_origin origin;
  std::atomic<wait_reason> reason{wait_reason::runnable};
  bool registered = false;
  bool is_main = false;
  std::uint16_t reg_list = 0;
};

// The task running on this thread, or nullptr outside a task. Defined out of
// line behind a compiler barrier: clang 14 may otherwise cache a thread_local's
// address across a suspension that resumes on another thread (llvm #47179).
task_record* current_task() noexcept;

// Makes a parked task runnable. Safe from any thread, including threads outside
// the runtime. From a worker of the task's own runtime it goes to the "run next"
// slot (Go's runnext) so a hand-off stays on one core.
void schedule(task_record* t) noexcept;
// As schedule(), but to the back of the local queue (yield, new tasks).
void schedule_fifo(task_record* t) noexcept;

// Symmetric-transfer budget: returns `next`, or posts the current task to resume
// at `next` and returns noop_coroutine() once too many transfers happened without
// the worker's loop getting control back. g++ 12 does not emit symmetric transfer
// as a tail call at -O0/-O1 or under sanitizers (GCC PR 100897), so an unbounded
// chain of inline completions would overflow the stack.
std::coroutine_handle<> transfer_to(std::coroutine_handle<> next) noexcept;

// Parks the current task: records where to resume and why. Call from await_suspend
// before publishing the task where a waker can find it.
inline void prepare_park(task_record* t, std::coroutine_handle<> h, wait_reason r) noexcept {
  t->resume_point = h;
  t->reason.store(r, std::memory_order_relaxed);
}

// Throws std::logic_error when called outside a task (a blocking call needs one).
task_record* require_task(const char* what);

}  // namespace sluice::detail
