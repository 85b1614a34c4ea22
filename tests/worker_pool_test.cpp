#include <sluice/sluice.hpp>

#include "test_util.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;
using sl_test::run_checked;
using sl_test::until_parked;

namespace {

// A job that waits until `gate` is closed, then records `tag` in `order`.
struct gated_job {
  sl::chan<int> gate;
  std::shared_ptr<std::vector<int>> order;
  std::shared_ptr<std::mutex> mu;
  int tag;
  sl::task<void> operator()(sl::context) const {
    co_await gate.recv();
    std::lock_guard<std::mutex> g(*mu);
    order->push_back(tag);
  }
};

struct recorder {
  std::shared_ptr<std::vector<int>> order = std::make_shared<std::vector<int>>();
  std::shared_ptr<std::mutex> mu = std::make_shared<std::mutex>();
  gated_job job(const sl::chan<int>& gate, int tag) const { return gated_job{gate, order, mu, tag}; }
  std::vector<int> get() const {
    std::lock_guard<std::mutex> g(*mu);
    return *order;
  }
};

sl::task<void> noop(sl::context) { co_return; }

// Submits a job that waits for `gate` and returns once a worker runs it (true),
// so that what is submitted next queues behind it.
sl::task<bool> occupy_worker(sl::worker_pool& pool, const recorder& rec, const sl::chan<int>& gate,
                             int tag) {
  co_await pool.submit(rec.job(gate, tag));
  co_return co_await until_parked("chan receive", 1);
}

}  // namespace

TEST(WorkerPool, RunsEverySubmittedJob) {
  run_checked([]() -> sl::task<void> {
    std::atomic<int> n{0};
    sl::worker_pool pool({.workers = 4, .queue_capacity = 16});
    auto job = [&n](sl::context) -> sl::task<void> {
      n.fetch_add(1);
      co_return;
    };
    for (int i = 0; i < 1000; ++i) {
      const std::error_code ec = co_await pool.submit(job);
      EXPECT_FALSE(ec);
    }
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(n.load(), 1000);
    EXPECT_EQ(s.completed, 1000u);
    EXPECT_EQ(s.failed + s.dropped + s.expired + s.shed + s.rejected, 0u);
    EXPECT_EQ(s.queued, 0u);
    EXPECT_EQ(s.running, 0u);
  });
}

TEST(WorkerPool, SubmitSuspendsWhileFullAndResumesWhenASlotFrees) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 1});
    sl::chan<int> gate;
    recorder rec;
    co_await pool.submit(rec.job(gate, 1));  // running
    co_await pool.submit(rec.job(gate, 2));  // queued
    std::atomic<bool> accepted{false};
    auto third = [&]() -> sl::task<void> {
      const std::error_code ec = co_await pool.submit(rec.job(gate, 3));
      EXPECT_FALSE(ec);
      accepted = true;
    };
    auto h = sl::spawn(third);
    const bool parked = co_await until_parked("worker_pool submit", 1);
    EXPECT_TRUE(parked);
    EXPECT_FALSE(accepted.load());
    gate.close();
    co_await h.join();
    EXPECT_TRUE(accepted.load());
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(s.completed, 3u);
    EXPECT_EQ(rec.get(), (std::vector<int>{1, 2, 3}));  // one worker: FIFO
  });
}

TEST(WorkerPool, TrySubmitReturnsFalseWhenFullAndCountsRejection) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 2});
    const bool idle = co_await until_parked("worker_pool idle", 1);
    EXPECT_TRUE(idle);
    sl::chan<int> gate;
    recorder rec;
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 1)));
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 2)));
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 3)));  // 1 running or queued + 2 queued
    EXPECT_FALSE(pool.try_submit(rec.job(gate, 4)));
    EXPECT_EQ(pool.stats().rejected, 1u);
    gate.close();
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(s.completed, 3u);
    EXPECT_EQ(s.rejected, 1u);
    EXPECT_FALSE(pool.try_submit(noop));  // closed
    EXPECT_EQ(pool.stats().rejected, 2u);
  });
}

TEST(WorkerPool, ZeroCapacityAcceptsOnlyWhenAWorkerIsIdle) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 0});
    const bool idle = co_await until_parked("worker_pool idle", 1);
    EXPECT_TRUE(idle);
    sl::chan<int> gate;
    recorder rec;
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 1)));   // handed to the idle worker
    EXPECT_FALSE(pool.try_submit(rec.job(gate, 2)));  // no queue, worker busy
    gate.close();
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(s.completed, 1u);
    EXPECT_EQ(s.rejected, 1u);
  });
}

TEST(WorkerPool, ZeroCapacitySubmitIsARendezvousWithAWorker) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 2, .queue_capacity = 0});
    std::atomic<int> n{0};
    auto job = [&n](sl::context) -> sl::task<void> {
      n.fetch_add(1);
      co_return;
    };
    for (int i = 0; i < 200; ++i) co_await pool.submit(job);
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(n.load(), 200);
    EXPECT_EQ(s.completed, 200u);
  });
}

TEST(WorkerPool, SubmitWithContextGivesUpWithoutQueueingTheJob) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 0});
    sl::chan<int> gate;
    recorder rec;
    co_await pool.submit(rec.job(gate, 1));  // the worker is busy now
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    auto blocked = [&, c = ctx]() -> sl::task<std::error_code> {
      co_return co_await pool.submit(c, rec.job(gate, 2));
    };
    auto h = sl::spawn(blocked);
    const bool parked = co_await until_parked("select", 1);
    EXPECT_TRUE(parked);
    cancel();
    const std::error_code ec = co_await h.join();
    EXPECT_EQ(ec, sl::errc::canceled);
    gate.close();
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(rec.get(), (std::vector<int>{1}));  // job 2 never ran
    EXPECT_EQ(s.rejected, 1u);
  });
}

TEST(WorkerPool, SubmitWithDoneContextFailsEvenWithRoom) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 4});
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    cancel();
    const std::error_code ec = co_await pool.submit(ctx, noop);
    EXPECT_EQ(ec, sl::errc::canceled);
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(s.completed, 0u);
    EXPECT_EQ(s.rejected, 1u);
  });
}

TEST(WorkerPool, ShutdownTurnsWaitingSubmittersAwayWithClosed) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 0});
    sl::chan<int> gate;
    recorder rec;
    co_await pool.submit(rec.job(gate, 1));
    auto blocked = [&]() -> sl::task<std::error_code> {
      co_return co_await pool.submit(rec.job(gate, 2));
    };
    auto h = sl::spawn(blocked);
    const bool parked = co_await until_parked("worker_pool submit", 1);
    EXPECT_TRUE(parked);
    auto closer = [&]() -> sl::task<sl::worker_pool_stats> {
      co_return co_await pool.shutdown(sl::context::background());
    };
    auto down = sl::spawn(closer);
    const std::error_code ec = co_await h.join();
    EXPECT_EQ(ec, sl::errc::closed);
    gate.close();
    const auto s = co_await down.join();
    EXPECT_EQ(s.completed, 1u);
    EXPECT_EQ(s.rejected, 1u);
  });
}

TEST(WorkerPool, ThrowingJobIsCountedFailedAndTheWorkerGoesOn) {
  run_checked([]() -> sl::task<void> {
    std::atomic<int> errors{0};
    std::string seen_pool;
    std::string seen_what;
    sl::worker_pool pool({.workers = 1,
                          .queue_capacity = 4,
                          .name = "mailer",
                          .on_error = [&](std::string_view name, std::exception_ptr e) {
                            seen_pool = std::string(name);
                            try {
                              std::rethrow_exception(e);
                            } catch (const std::exception& x) {
                              seen_what = x.what();
                            }
                            errors.fetch_add(1);
                          }});
    auto bad = [](sl::context) -> sl::task<void> {
      co_await sl::yield();
      throw std::runtime_error("smtp down");
    };
    std::atomic<int> good_runs{0};
    auto good = [&good_runs](sl::context) -> sl::task<void> {
      good_runs.fetch_add(1);
      co_return;
    };
    co_await pool.submit(bad);
    co_await pool.submit(good);
    co_await pool.submit(bad);
    co_await pool.submit(good);
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(s.failed, 2u);
    EXPECT_EQ(s.completed, 2u);
    EXPECT_EQ(good_runs.load(), 2);
    EXPECT_EQ(errors.load(), 2);
    EXPECT_EQ(seen_pool, "mailer");
    EXPECT_EQ(seen_what, "smtp down");
  });
}

TEST(WorkerPool, DefaultErrorHandlerPrintsPoolNameAndException) {
  ::testing::internal::CaptureStderr();
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 1, .name = "thumbnails"});
    auto bad = [](sl::context) -> sl::task<void> {
      throw std::runtime_error("bad image");
      co_return;
    };
    co_await pool.submit(bad);
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(s.failed, 1u);
  });
  const std::string err = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(err.find("thumbnails"), std::string::npos) << err;
  EXPECT_NE(err.find("bad image"), std::string::npos) << err;
}

TEST(WorkerPool, JobTimeoutIsTheJobContextsDeadline) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 1, .job_timeout = 2ms});
    std::error_code seen;
    bool had_deadline = false;
    auto job = [&](sl::context c) -> sl::task<void> {
      had_deadline = c.deadline().has_value();
      co_await c.done();
      seen = c.err();
    };
    co_await pool.submit(job);
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_TRUE(had_deadline);
    EXPECT_EQ(seen, sl::errc::deadline_exceeded);
    EXPECT_EQ(s.completed, 1u);
  });
}

TEST(WorkerPool, JobsWithoutTimeoutRunUnderThePoolContext) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 1});
    bool had_deadline = true;
    std::error_code err = sl::errc::canceled;
    auto job = [&](sl::context c) -> sl::task<void> {
      had_deadline = c.deadline().has_value();
      err = c.err();
      co_return;
    };
    co_await pool.submit(job);
    co_await pool.shutdown(sl::context::background());
    EXPECT_FALSE(had_deadline);
    EXPECT_FALSE(err);
  });
}

TEST(WorkerPool, JobThatWaitedLongerThanMaxQueueWaitIsDroppedAsExpired) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 4, .max_queue_wait = 1ms});
    // Job 1 goes straight to the idle worker (never queued, so it cannot
    // expire however slow the machine is).
    const bool idle = co_await until_parked("worker_pool idle", 1);
    EXPECT_TRUE(idle);
    sl::chan<int> gate;
    recorder rec;
    const bool running = co_await occupy_worker(pool, rec, gate, 1);
    EXPECT_TRUE(running);
    std::vector<sl::drop_reason> drops;
    co_await pool.submit(rec.job(gate, 2),
                         {.on_drop = [&drops](sl::drop_reason r) { drops.push_back(r); }});
    // Not coordination: job 2 must be older than max_queue_wait when it is taken.
    co_await sl::sleep_for(5ms);
    gate.close();
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(rec.get(), (std::vector<int>{1}));
    EXPECT_EQ(s.expired, 1u);
    EXPECT_EQ(s.completed, 1u);
    EXPECT_EQ(drops, (std::vector<sl::drop_reason>{sl::drop_reason::expired}));
  });
}

TEST(WorkerPool, HigherPriorityDisplacesNewestQueuedLowerPriorityJob) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 2});
    sl::chan<int> gate;
    recorder rec;
    const bool running = co_await occupy_worker(pool, rec, gate, 1);
    EXPECT_TRUE(running);
    std::vector<int> shed;
    const sl::job_options low_a{.priority = sl::job_priority::low,
                                .on_drop = [&shed](sl::drop_reason) { shed.push_back(10); }};
    const sl::job_options low_b{.priority = sl::job_priority::low,
                                .on_drop = [&shed](sl::drop_reason r) {
                                  EXPECT_EQ(r, sl::drop_reason::shed);
                                  shed.push_back(11);
                                }};
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 10), low_a));
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 11), low_b));
    EXPECT_FALSE(pool.try_submit(rec.job(gate, 12), {.priority = sl::job_priority::low}));
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 20), {.priority = sl::job_priority::high}));
    EXPECT_EQ(shed, (std::vector<int>{11}));  // the newest low one gave way
    gate.close();
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(rec.get(), (std::vector<int>{1, 20, 10}));
    EXPECT_EQ(s.shed, 1u);
    EXPECT_EQ(s.rejected, 1u);
  });
}

TEST(WorkerPool, DisplacementTakesTheLowestPriorityFirst) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 2});
    sl::chan<int> gate;
    recorder rec;
    const bool running = co_await occupy_worker(pool, rec, gate, 1);
    EXPECT_TRUE(running);
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 2), {.priority = sl::job_priority::low}));
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 3), {.priority = sl::job_priority::normal}));
    // A normal job cannot displace another normal one, but the low one gives way.
    EXPECT_TRUE(pool.try_submit(rec.job(gate, 4), {.priority = sl::job_priority::normal}));
    EXPECT_FALSE(pool.try_submit(rec.job(gate, 5), {.priority = sl::job_priority::normal}));
    gate.close();
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(rec.get(), (std::vector<int>{1, 3, 4}));
    EXPECT_EQ(s.shed, 1u);
  });
}

TEST(WorkerPool, WorkersTakeHighestPriorityFirstFifoWithin) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 8});
    sl::chan<int> gate;
    recorder rec;
    const bool running = co_await occupy_worker(pool, rec, gate, 0);
    EXPECT_TRUE(running);
    co_await pool.submit(rec.job(gate, 30), {.priority = sl::job_priority::low});
    co_await pool.submit(rec.job(gate, 20), {.priority = sl::job_priority::normal});
    co_await pool.submit(rec.job(gate, 10), {.priority = sl::job_priority::high});
    co_await pool.submit(rec.job(gate, 21), {.priority = sl::job_priority::normal});
    co_await pool.submit(rec.job(gate, 11), {.priority = sl::job_priority::high});
    gate.close();
    co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(rec.get(), (std::vector<int>{0, 10, 11, 20, 21, 30}));
  });
}

TEST(WorkerPool, ShutdownDeadlineDropsQueuedJobsAndTellsTheirOwners) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 8});
    std::atomic<int> drops{0};
    std::error_code running_saw;
    auto stuck = [&running_saw](sl::context c) -> sl::task<void> {
      co_await c.done();
      running_saw = c.err();
    };
    co_await pool.submit(stuck);
    const sl::job_options tell{.on_drop = [&drops](sl::drop_reason r) {
      EXPECT_EQ(r, sl::drop_reason::shutdown);
      drops.fetch_add(1);
    }};
    for (int i = 0; i < 3; ++i) co_await pool.submit(noop, tell);
    const sl::context_with_cancel deadline = sl::with_cancel(sl::context::background());
    auto stopper = [&]() -> sl::task<sl::worker_pool_stats> {
      co_return co_await pool.shutdown(deadline.ctx);
    };
    auto h = sl::spawn(stopper);
    const bool parked = co_await until_parked("select", 1);  // shutdown waits for the drain
    EXPECT_TRUE(parked);
    deadline.cancel();  // the deadline
    const auto s = co_await h.join();
    EXPECT_EQ(s.dropped, 3u);
    EXPECT_EQ(s.completed, 1u);
    EXPECT_EQ(drops.load(), 3);
    EXPECT_EQ(running_saw, sl::errc::canceled);
  });
}

TEST(WorkerPool, ShutdownCanBeAwaitedTwiceAndConcurrently) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 2, .queue_capacity = 8});
    sl::chan<int> gate;
    recorder rec;
    for (int i = 0; i < 4; ++i) co_await pool.submit(rec.job(gate, i));
    auto closer = [&]() -> sl::task<std::uint64_t> {
      co_return (co_await pool.shutdown(sl::context::background())).completed;
    };
    auto a = sl::spawn(closer);
    auto b = sl::spawn(closer);
    const bool parked = co_await until_parked("worker_pool shutdown", 2);
    EXPECT_TRUE(parked);
    gate.close();
    const std::uint64_t ca = co_await a.join();
    const std::uint64_t cb = co_await b.join();
    EXPECT_EQ(ca, 4u);
    EXPECT_EQ(cb, 4u);
    const auto again = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(again.completed, 4u);
  });
}

TEST(WorkerPool, StatsShowQueuedRunningAndTimings) {
  run_checked([]() -> sl::task<void> {
    sl::worker_pool pool({.workers = 1, .queue_capacity = 4});
    sl::chan<int> gate;
    recorder rec;
    co_await pool.submit(rec.job(gate, 1));
    co_await pool.submit(rec.job(gate, 2));
    const bool running = co_await occupy_worker(pool, rec, gate, 3);
    EXPECT_TRUE(running);
    const auto mid = pool.stats();
    EXPECT_EQ(mid.running, 1u);
    EXPECT_EQ(mid.queued, 2u);
    EXPECT_EQ(mid.queue_wait.count, 1u);
    EXPECT_EQ(mid.run_time.count, 0u);
    gate.close();
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(s.completed, 3u);
    EXPECT_EQ(s.queue_wait.count, 3u);
    EXPECT_EQ(s.run_time.count, 3u);
    EXPECT_EQ(s.run_time.cumulative(sl::duration_summary::bucket_count - 1), 3u);
    EXPECT_GE(s.run_time.sum, s.run_time.max);
    EXPECT_GT(s.run_time.max, sl::clock::duration::zero());
  });
}

TEST(WorkerPool, InvalidOptionsThrowInvalidArgument) {
  run_checked([]() -> sl::task<void> {
    EXPECT_THROW(sl::worker_pool({.workers = 0, .queue_capacity = 1}), std::invalid_argument);
    EXPECT_THROW(sl::worker_pool({.workers = 1, .queue_capacity = -1}), std::invalid_argument);
    EXPECT_THROW(sl::worker_pool({.workers = 1, .queue_capacity = 1, .job_timeout = -1ms}),
                 std::invalid_argument);
    EXPECT_THROW(sl::worker_pool({.workers = 1, .queue_capacity = 1, .max_queue_wait = -1ms}),
                 std::invalid_argument);
    try {
      sl::worker_pool p({.workers = -3, .queue_capacity = 1, .name = "resize"});
      ADD_FAILURE() << "no exception";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("workers"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("resize"), std::string::npos) << e.what();
    }
    co_return;
  });
}

TEST(WorkerPool, CreatingOutsideARuntimeThrowsLogicError) {
  EXPECT_THROW(sl::worker_pool({.workers = 1, .queue_capacity = 1}), std::logic_error);
}

TEST(WorkerPool, DestroyingWithoutShutdownDropsQueuedAndCancelsRunning) {
  run_checked([]() -> sl::task<void> {
    std::atomic<int> drops{0};
    sl::chan<std::error_code> saw(1);
    {
      sl::worker_pool pool({.workers = 1, .queue_capacity = 4});
      auto stuck = [saw](sl::context c) -> sl::task<void> {
        co_await c.done();
        co_await saw.send(c.err());
      };
      co_await pool.submit(stuck);
      const bool running = co_await until_parked("context done", 1);
      EXPECT_TRUE(running);
      co_await pool.submit(noop, {.on_drop = [&drops](sl::drop_reason) { drops.fetch_add(1); }});
    }
    auto r = co_await saw.recv();  // the running job saw its context cancelled
    EXPECT_TRUE(r.has_value());
    EXPECT_EQ(r.value_or(std::error_code{}), sl::errc::canceled);
    EXPECT_EQ(drops.load(), 1);
  });
}

TEST(DurationSummary, BucketsAreUpperInclusiveAndCumulativeAddsUp) {
  using ds = sl::duration_summary;
  EXPECT_EQ(ds::bucket_of(0ns), 0u);
  EXPECT_EQ(ds::bucket_of(100us), 0u);
  EXPECT_EQ(ds::bucket_of(101us), 1u);
  EXPECT_EQ(ds::bucket_of(10s), ds::bucket_count - 2);
  EXPECT_EQ(ds::bucket_of(11s), ds::bucket_count - 1);
  sl::detail::duration_recorder r;
  r.record(50us);
  r.record(3ms);
  r.record(1h);
  r.record(-5ms);  // clamped to zero
  ds s;
  r.add_to(s);
  EXPECT_EQ(s.count, 4u);
  EXPECT_EQ(s.max, sl::clock::duration(1h));
  EXPECT_EQ(s.sum, sl::clock::duration(1h + 3ms + 50us));
  EXPECT_EQ(s.cumulative(0), 2u);
  EXPECT_EQ(s.cumulative(ds::bucket_of(5ms)), 3u);
  EXPECT_EQ(s.cumulative(ds::bucket_count - 1), 4u);
}

// Hunts lost or double-counted jobs: many submitters (blocking, with context,
// and try_submit, all priorities, random yields) race each other, expiring
// jobs, cancellation, and a shutdown whose deadline fires mid-stream. Every job
// must end exactly one way: ran, dropped (on_drop told), or not accepted (the
// submitter told), and the pool's counters must agree with what was seen.
TEST(WorkerPoolStress, EveryJobEndsExactlyOneWayUnderShutdownRace) {
  for (int round = 0; round < 4; ++round) {
    run_checked([round]() -> sl::task<void> {
      std::atomic<std::uint64_t> ran{0}, told_drop{0}, not_accepted{0}, accepted{0};
      auto pool = std::make_unique<sl::worker_pool>(sl::worker_pool_options{
          .workers = 3, .queue_capacity = 16, .max_queue_wait = round % 2 == 0 ? 0ms : 50us});
      const sl::context_with_cancel deadline = sl::with_cancel(sl::context::background());
      constexpr int submitters = 6;
      constexpr int per = 400;
      sl::wait_group wg;
      wg.add(submitters);
      auto submitter = [&](int id) -> sl::task<void> {
        std::mt19937 rng(static_cast<unsigned>(round * 100 + id));
        for (int i = 0; i < per; ++i) {
          auto work = [&ran](sl::context c) -> sl::task<void> {
            if (!c.err()) co_await sl::yield();
            ran.fetch_add(1);
          };
          const sl::job_options o{
              .priority = static_cast<sl::job_priority>(rng() % 3),
              .on_drop = [&told_drop](sl::drop_reason) { told_drop.fetch_add(1); }};
          bool ok = false;
          switch (rng() % 3) {
            case 0: ok = pool->try_submit(work, o); break;
            case 1: ok = !(co_await pool->submit(work, o)); break;
            default: {
              auto [c, cancel] = sl::with_cancel(sl::context::background());
              if (rng() % 4 == 0) cancel();
              ok = !(co_await pool->submit(c, work, o));
              cancel();
            }
          }
          (ok ? accepted : not_accepted).fetch_add(1);
          if (rng() % 8 == 0) co_await sl::yield();
        }
        wg.done();
      };
      for (int i = 0; i < submitters; ++i) sl::go(submitter, i);
      auto stopper = [&]() -> sl::task<sl::worker_pool_stats> {
        for (int i = 0; i < 50 * (round + 1); ++i) co_await sl::yield();
        auto s = co_await pool->shutdown(deadline.ctx);
        co_return s;
      };
      auto down = sl::spawn(stopper);
      for (int i = 0; i < 20; ++i) co_await sl::yield();
      deadline.cancel();  // the shutdown deadline, at some point of the stream
      const auto s = co_await down.join();
      co_await wg.wait();
      const auto fin = pool->stats();
      EXPECT_EQ(accepted + not_accepted, std::uint64_t{submitters} * per);
      EXPECT_EQ(fin.completed, ran.load());
      EXPECT_EQ(accepted.load(), ran + told_drop);
      EXPECT_EQ(fin.dropped + fin.expired + fin.shed, told_drop.load());
      EXPECT_EQ(fin.rejected, not_accepted.load());
      EXPECT_EQ(fin.queued, 0u);
      EXPECT_EQ(fin.running, 0u);
      EXPECT_EQ(s.completed + s.failed, fin.completed + fin.failed);
      pool.reset();
    });
  }
}

// Cancellation storm: submitters parked on a full pool with contexts that are
// cancelled at random moments while workers free slots.
TEST(WorkerPoolStress, CancelledSubmittersNeverLoseOrDuplicateJobs) {
  run_checked([]() -> sl::task<void> {
    std::atomic<std::uint64_t> ran{0}, ok{0}, gave_up{0};
    sl::worker_pool pool({.workers = 2, .queue_capacity = 2});
    constexpr int n = 300;
    sl::wait_group wg;
    wg.add(n);
    std::vector<sl::cancel_func> cancels;
    std::vector<sl::context> ctxs;
    for (int i = 0; i < n; ++i) {
      auto [c, cancel] = sl::with_cancel(sl::context::background());
      ctxs.push_back(c);
      cancels.push_back(cancel);
    }
    auto work = [&ran](sl::context) -> sl::task<void> {
      co_await sl::yield();
      ran.fetch_add(1);
    };
    auto submitter = [&](int i) -> sl::task<void> {
      const std::error_code ec = co_await pool.submit(ctxs[static_cast<std::size_t>(i)], work);
      (ec ? gave_up : ok).fetch_add(1);
      wg.done();
    };
    for (int i = 0; i < n; ++i) sl::go(submitter, i);
    std::mt19937 rng(7);
    for (int i = 0; i < n; ++i) {
      if (rng() % 2 == 0) cancels[static_cast<std::size_t>(i)]();
      if (rng() % 4 == 0) co_await sl::yield();
    }
    co_await wg.wait();
    const auto s = co_await pool.shutdown(sl::context::background());
    EXPECT_EQ(ok + gave_up, std::uint64_t{n});
    EXPECT_EQ(s.completed, ok.load());
    EXPECT_EQ(ran.load(), ok.load());
    EXPECT_EQ(s.rejected, gave_up.load());
    for (auto& c : cancels) c();
  });
}
