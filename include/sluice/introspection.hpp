// Live task introspection: Go's goroutine dump and runtime.NumGoroutine.
//
// Every task has an id, where it came from (the go/spawn call site and its entry
// function) and what it waits on. dump_tasks() prints them all, like the
// goroutine dump Go prints on SIGQUIT or /debug/pprof/goroutine?debug=2.
#pragma once

#include <sluice/runtime.hpp>

#include <iosfwd>
#include <vector>

namespace sluice {

// Prints every live task of the current runtime, one block per task:
//   task 12 [chan receive]:
//     entry: worker_loop(sluice::chan<job>)
//     created by go at server.cpp:88
// Outside a runtime prints nothing. Go: runtime.Stack(buf, true).
void dump_tasks(std::ostream& out);

// Snapshot of every live task of the current runtime (empty outside one).
std::vector<task_info> list_tasks();

// Gauges of the current runtime, for monitoring (the /metrics handler).
// Each figure is read without stopping the workers, so the snapshot is not
// one instant; every figure is exact for its own. Go: runtime.NumGoroutine,
// runtime/metrics /sched/*.
struct runtime_stats {
  std::size_t tasks = 0;                  // live tasks
  unsigned workers = 0;                   // worker threads
  unsigned idle_workers = 0;              // parked (no work)
  unsigned spinning_workers = 0;          // looking for work
  std::size_t global_queue = 0;           // runnable tasks in the global queue
  std::vector<std::size_t> local_queues;  // runnable tasks per worker's own queue
  std::size_t io_registrations = 0;       // sockets registered with the netpoller
};
// All zero outside a runtime.
runtime_stats current_runtime_stats();

}  // namespace sluice
