#include <sluice/sluice.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <stdexcept>
#include <string>
#include <system_error>

using namespace std::chrono_literals;
namespace sl = sluice;
using sl_test::run_checked;

namespace {
// Tiny waits: the tests check what retry does, not how long it sleeps.
sl::retry_policy fast(int attempts) {
  return sl::retry_policy{.max_attempts = attempts, .base_delay = 1us, .max_delay = 10us};
}
}  // namespace

TEST(RetryPolicy, CapGrowsExponentiallyUpToMaxDelay) {
  const sl::retry_policy p{.max_attempts = 10, .base_delay = 100ms, .max_delay = 1s, .multiplier = 2};
  EXPECT_EQ(p.cap(1), sl::clock::duration(100ms));
  EXPECT_EQ(p.cap(2), sl::clock::duration(200ms));
  EXPECT_EQ(p.cap(3), sl::clock::duration(400ms));
  EXPECT_EQ(p.cap(4), sl::clock::duration(800ms));
  EXPECT_EQ(p.cap(5), sl::clock::duration(1s));
  EXPECT_EQ(p.cap(1000), sl::clock::duration(1s));  // no overflow
}

TEST(RetryPolicy, DelayIsFullJitterBelowTheCapAndHonoursRetryAfter) {
  const sl::retry_policy p{.max_attempts = 10, .base_delay = 100ms, .max_delay = 1s};
  EXPECT_EQ(p.delay(3, 0.0), sl::clock::duration::zero());
  EXPECT_EQ(p.delay(3, 0.5), sl::clock::duration(200ms));
  EXPECT_LT(p.delay(3, 0.9999), sl::clock::duration(400ms));
  EXPECT_EQ(p.delay(1, 0.1, 300ms), sl::clock::duration(300ms));  // Retry-After wins
  EXPECT_EQ(p.delay(1, 0.1, 1h), sl::clock::duration(1s));        // ... up to max_delay
}

TEST(RetryPolicy, InvalidPoliciesThrowInvalidArgument) {
  EXPECT_THROW(sl::retry_policy{.max_attempts = 0}.validate(), std::invalid_argument);
  EXPECT_THROW((sl::retry_policy{.base_delay = 0ms}.validate()), std::invalid_argument);
  EXPECT_THROW((sl::retry_policy{.base_delay = 2s, .max_delay = 1s}.validate()), std::invalid_argument);
  EXPECT_THROW((sl::retry_policy{.multiplier = 0.5}.validate()), std::invalid_argument);
  EXPECT_NO_THROW(sl::retry_policy{}.validate());
}

TEST(Retry, ReturnsTheFirstSuccessAndPassesTheAttemptNumber) {
  run_checked([]() -> sl::task<void> {
    int calls = 0;
    auto flaky = [&calls](int attempt) -> sl::task<int> {
      ++calls;
      EXPECT_EQ(attempt, calls);
      if (attempt < 3) throw std::runtime_error("transient");
      co_return attempt * 10;
    };
    const int v = co_await sl::retry(sl::context::background(), fast(5), flaky);
    EXPECT_EQ(v, 30);
    EXPECT_EQ(calls, 3);
  });
}

TEST(Retry, RethrowsTheLastFailureAfterMaxAttempts) {
  run_checked([]() -> sl::task<void> {
    int calls = 0;
    auto always = [&calls]() -> sl::task<void> {
      ++calls;
      throw std::runtime_error("down #" + std::to_string(calls));
      co_return;
    };
    std::string what;
    try {
      co_await sl::retry(sl::context::background(), fast(4), always);
    } catch (const std::runtime_error& e) {
      what = e.what();
    }
    EXPECT_EQ(what, "down #4");
    EXPECT_EQ(calls, 4);
  });
}

TEST(Retry, StopsAtOnceOnANonRetryableFailure) {
  run_checked([]() -> sl::task<void> {
    int calls = 0;
    auto op = [&calls]() -> sl::task<void> {
      ++calls;
      throw std::invalid_argument("400 bad request");
      co_return;
    };
    sl::retry_policy p = fast(5);
    p.retryable = [](const std::exception_ptr& e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::invalid_argument&) {
        return false;
      } catch (...) {
        return true;
      }
    };
    bool thrown = false;
    try {
      co_await sl::retry(sl::context::background(), p, op);
    } catch (const std::invalid_argument&) {
      thrown = true;
    }
    EXPECT_TRUE(thrown);
    EXPECT_EQ(calls, 1);
  });
}

TEST(Retry, ContextEndsTheWaitBetweenAttempts) {
  run_checked([]() -> sl::task<void> {
    auto cc = sl::with_cancel(sl::context::background());
    int calls = 0;
    const sl::cancel_func cancel = cc.cancel;
    auto op = [&calls, cancel]() -> sl::task<void> {
      ++calls;
      cancel();  // cancelled while the attempt fails: the wait must not happen
      throw std::runtime_error("transient");
      co_return;
    };
    const sl::retry_policy slow{.max_attempts = 5, .base_delay = 1h, .max_delay = 1h};
    std::error_code seen;
    try {
      co_await sl::retry(cc.ctx, slow, op);
    } catch (const std::system_error& e) {
      seen = e.code();
    }
    EXPECT_EQ(seen, sl::errc::canceled);
    EXPECT_EQ(calls, 1);
  });
}

TEST(Retry, DoneContextMeansNoAttempt) {
  run_checked([]() -> sl::task<void> {
    auto cc = sl::with_cancel(sl::context::background());
    cc.cancel();
    int calls = 0;
    auto op = [&calls]() -> sl::task<int> {
      ++calls;
      co_return 1;
    };
    bool thrown = false;
    try {
      (void)co_await sl::retry(cc.ctx, fast(3), op);
    } catch (const std::system_error& e) {
      thrown = e.code() == sl::errc::canceled;
    }
    EXPECT_TRUE(thrown);
    EXPECT_EQ(calls, 0);
  });
}

TEST(Retry, RetryAfterErrorIsRetried) {
  run_checked([]() -> sl::task<void> {
    int calls = 0;
    auto op = [&calls]() -> sl::task<int> {
      if (++calls == 1) throw sl::retry_after_error("429", 5us);
      co_return 7;
    };
    const int v = co_await sl::retry(sl::context::background(), fast(2), op);
    EXPECT_EQ(v, 7);
    EXPECT_EQ(calls, 2);
  });
}
