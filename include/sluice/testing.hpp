// Test helpers: leak detection (Go: go.uber.org/goleak).
#pragma once

#include <sluice/clock.hpp>
#include <sluice/introspection.hpp>
#include <sluice/task.hpp>

#include <cstdint>
#include <vector>

namespace sluice::testing {

// leak_check remembers which tasks are alive when it is created; verify(grace)
// waits up to `grace` for every task started since then to finish and returns
// those still alive (empty: no leak). Must be created and verified inside a task.
//
//   sluice::testing::leak_check lc;
//   ... start tasks, stop them ...
//   auto leaked = co_await lc.verify(1s);
//   EXPECT_TRUE(leaked.empty());
//
// Go: defer goleak.VerifyNone(t) (with goleak's retry-until-deadline).
class leak_check {
 public:
  leak_check();
  // Tasks started since construction (the calling task excluded) that are still
  // alive after waiting up to `grace`.
  task<std::vector<task_info>> verify(clock::duration grace) const;
  // The same, without waiting.
  std::vector<task_info> leaked_now() const;

 private:
  std::vector<std::uint64_t> baseline_;
};

}  // namespace sluice::testing
