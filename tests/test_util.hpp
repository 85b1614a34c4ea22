// Test helpers shared by the suite.
#pragma once

#include <sluice/runtime.hpp>
#include <sluice/introspection.hpp>
#include <sluice/testing.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <cstddef>
#include <string_view>
#include <utility>

namespace sl_test {

// How many live tasks wait in `state` ("chan receive", "chan send", ...).
inline std::size_t tasks_in(std::string_view state) {
  std::size_t n = 0;
  for (const sluice::task_info& t : sluice::list_tasks()) n += t.state == state ? 1 : 0;
  return n;
}

// Yields until at least `n` tasks wait in `state`; false if that does not happen
// within 10 s (bounded by time, not by a count of yields, so a loaded machine
// does not make it give up early). This is how a test knows a task is parked
// without sleeping.
inline sluice::task<bool> until_parked(std::string_view state, std::size_t n) {
  const auto give_up = sluice::clock::now() + std::chrono::seconds(10);
  while (sluice::clock::now() < give_up) {
    if (tasks_in(state) >= n) co_return true;
    co_await sluice::yield();
  }
  co_return false;
}

// Yields until pred() holds; false if it does not within 10 s. For state
// that another task or the kernel changes (a counter, a connection count).
template <class Pred>
sluice::task<bool> until(Pred pred) {
  const auto give_up = sluice::clock::now() + std::chrono::seconds(10);
  while (sluice::clock::now() < give_up) {
    if (pred()) co_return true;
    co_await sluice::yield();
  }
  co_return pred();
}

// Runs f's task on a fresh runtime and fails the test if any task it started is
// still alive after a grace period (every test ends leak-free).
template <class F>
void run_checked(F&& f, sluice::runtime_options opts = {}) {
  sluice::runtime rt(std::move(opts));
  rt.run([&]() -> sluice::task<void> {
    sluice::testing::leak_check lc;
    auto body = f();
    co_await std::move(body);
    const auto leaked = co_await lc.verify(std::chrono::seconds(10));
    EXPECT_TRUE(leaked.empty()) << "leaked " << leaked.size() << " task(s); first: "
                                << (leaked.empty() ? "" : leaked.front().origin);
  });
}

}  // namespace sl_test
