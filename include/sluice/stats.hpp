// stats: duration summaries with fixed histogram buckets, as worker pools (and
// later the HTTP server) report them.
//
// A duration_summary is a plain snapshot: count, sum, max and a histogram whose
// bucket bounds are fixed at compile time, so summaries from different pools,
// workers or processes can be added, and exported as a Prometheus histogram
// (`_bucket{le="..."}` lines are the cumulative counts, `_sum` and `_count` the
// totals). Go: what one would build on expvar or prometheus.Histogram.
#pragma once

#include <sluice/clock.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace sluice {

// A snapshot of observed durations: count, sum, max and a fixed-bucket histogram.
struct duration_summary {
  // Number of buckets: one per upper bound plus the +Inf bucket.
  static constexpr std::size_t bucket_count = 17;
  // Upper bounds (inclusive) of the first bucket_count - 1 buckets; the last
  // bucket holds everything above the last bound. The Prometheus default
  // buckets, refined below 5 ms (100 us .. 10 s).
  static constexpr std::array<clock::duration, bucket_count - 1> upper_bounds = {
      std::chrono::microseconds(100), std::chrono::microseconds(250),
      std::chrono::microseconds(500), std::chrono::milliseconds(1),
      std::chrono::microseconds(2500), std::chrono::milliseconds(5),
      std::chrono::milliseconds(10),   std::chrono::milliseconds(25),
      std::chrono::milliseconds(50),   std::chrono::milliseconds(100),
      std::chrono::milliseconds(250),  std::chrono::milliseconds(500),
      std::chrono::seconds(1),         std::chrono::milliseconds(2500),
      std::chrono::seconds(5),         std::chrono::seconds(10)};

  std::uint64_t count = 0;    // observations
  clock::duration sum{};      // their total
  clock::duration max{};      // the largest one
  // buckets[i]: observations in (upper_bounds[i-1], upper_bounds[i]]; the last
  // entry counts those above every bound. Not cumulative: see cumulative().
  std::array<std::uint64_t, bucket_count> buckets{};

  // Observations <= upper_bounds[i] (i < bucket_count - 1), or all of them for
  // the last index: Prometheus' cumulative `le` count.
  std::uint64_t cumulative(std::size_t i) const noexcept {
    std::uint64_t n = 0;
    for (std::size_t k = 0; k <= i && k < bucket_count; ++k) n += buckets[k];
    return n;
  }
  // The bucket an observation of `d` falls in.
  static std::size_t bucket_of(clock::duration d) noexcept {
    std::size_t i = 0;
    while (i < upper_bounds.size() && d > upper_bounds[i]) ++i;
    return i;
  }
  // Adds another summary's observations to this one.
  duration_summary& operator+=(const duration_summary& o) noexcept {
    count += o.count;
    sum += o.sum;
    if (o.max > max) max = o.max;
    for (std::size_t i = 0; i < bucket_count; ++i) buckets[i] += o.buckets[i];
    return *this;
  }
};

namespace detail {

// Records durations into a summary from one writer thread at a time while other
// threads take snapshots. Every field is a relaxed atomic: a snapshot taken
// during a record() may see the count without the sum (a torn but harmless
// view, as with Prometheus client counters); each field on its own is exact.
class duration_recorder {
 public:
  void record(clock::duration d) noexcept {
    if (d < clock::duration::zero()) d = clock::duration::zero();
    const auto ns = static_cast<std::uint64_t>(d.count());
    // Single writer: load + store instead of read-modify-write (no lock prefix).
    count_.store(count_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    sum_.store(sum_.load(std::memory_order_relaxed) + ns, std::memory_order_relaxed);
    if (ns > max_.load(std::memory_order_relaxed)) max_.store(ns, std::memory_order_relaxed);
    auto& b = buckets_[duration_summary::bucket_of(d)];
    b.store(b.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  void add_to(duration_summary& s) const noexcept {
    duration_summary mine;
    mine.count = count_.load(std::memory_order_relaxed);
    mine.sum = clock::duration(static_cast<clock::rep>(sum_.load(std::memory_order_relaxed)));
    mine.max = clock::duration(static_cast<clock::rep>(max_.load(std::memory_order_relaxed)));
    for (std::size_t i = 0; i < duration_summary::bucket_count; ++i) {
      mine.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
    }
    s += mine;
  }

 private:
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_{0};
  std::atomic<std::uint64_t> max_{0};
  std::array<std::atomic<std::uint64_t>, duration_summary::bucket_count> buckets_{};
};

}  // namespace detail

}  // namespace sluice
