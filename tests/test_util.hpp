// Test helpers shared by the suite.
#pragma once

#include <sluice/runtime.hpp>
#include <sluice/testing.hpp>

#include <gtest/gtest.h>

#include <chrono>
#include <utility>

namespace sl_test {

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
