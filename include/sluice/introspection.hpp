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

}  // namespace sluice
