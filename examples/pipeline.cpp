// example-pipeline: the prime pipeline of Go's "Pipelines and cancellation",
// on sluice stages.
//
//   example-pipeline                                # 2..200000, 2 workers, 2 s deadline
//   example-pipeline --limit 5000000 --timeout 1s   # stops at the deadline, prints what it got
//   example-pipeline --workers 4 --ordered          # squares leave in input order
//
// generate(2..limit) -> filter(is_prime, K workers) -> stage(square, K workers) -> sum.
// Every stage runs on one context: Ctrl-C (SIGINT/SIGTERM, by signal_context)
// or the --timeout deadline cancels it, each stage closes its output and every
// task ends; the summary then says how far it got. Exit status: 0 when every
// number was checked, 1 when stopped early.
#include <sluice/pipeline.hpp>
#include <sluice/sluice.hpp>

#include "duration_flag.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <optional>

namespace sl = sluice;
using namespace std::chrono_literals;

namespace {

bool is_prime(const std::uint64_t& n) {
  if (n < 2) return false;
  if (n % 2 == 0) return n == 2;
  for (std::uint64_t d = 3; d * d <= n; d += 2) {
    if (n % d == 0) return false;
  }
  return true;
}

// The source: 2, 3, ..., limit, then the end.
struct count_up {
  std::uint64_t next;
  std::uint64_t limit;
  std::optional<std::uint64_t> operator()() {
    if (next > limit) return std::nullopt;
    return next++;
  }
};

struct summary {
  std::uint64_t primes = 0;
  std::uint64_t largest = 0;
  std::uint64_t sum_of_squares = 0;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice pipeline: primes up to a limit, squared and summed, cancellable"};
  std::uint64_t limit = 200'000;
  int workers = 2;
  bool ordered = false;
  sl::clock::duration timeout = 2s;
  app.add_option("--limit", limit, "check the numbers 2..limit (default 200000)")
      ->check(CLI::Range(std::uint64_t{2}, std::uint64_t{5'000'000}));
  app.add_option("--workers", workers, "tasks per stage (default 2)")->check(CLI::Range(1, 64));
  app.add_flag("--ordered", ordered, "keep input order through the stages");
  examples::add_duration_option(app, "--timeout", &timeout, "give up after this long (default 2s)");
  CLI11_PARSE(app, argc, argv);

  return sl::run([&]() -> sl::task<int> {
    auto sig = sl::signal_context(sl::context::background(), {SIGINT, SIGTERM});
    auto deadline = sl::with_timeout(sig.ctx, timeout);
    const sl::context& ctx = deadline.ctx;
    const auto start = sl::clock::now();

    const sl::stage_options opts{.workers = workers, .out_capacity = 64, .ordered = ordered};
    auto numbers = sl::generate(ctx, 64, count_up{2, limit});
    auto primes = sl::filter(ctx, numbers.out, opts, is_prime);
    auto squares = sl::stage(ctx, primes.out, opts, [](std::uint64_t p) { return p * p; });

    summary s;
    bool in_order = true;
    std::uint64_t prev = 0;
    while (auto sq = co_await squares.out.recv()) {
      ++s.primes;
      s.sum_of_squares += *sq;
      in_order = in_order && *sq > prev;
      prev = *sq;
      s.largest = std::max<std::uint64_t>(s.largest, *sq);
    }
    co_await numbers.wait();
    co_await primes.wait();
    co_await squares.wait();
    const std::error_code why = ctx.err();
    const double secs = std::chrono::duration<double>(sl::clock::now() - start).count();
    auto largest_prime = static_cast<std::uint64_t>(std::sqrt(static_cast<double>(s.largest)));
    while (largest_prime * largest_prime > s.largest) --largest_prime;
    while ((largest_prime + 1) * (largest_prime + 1) <= s.largest) ++largest_prime;

    std::printf("example-pipeline: 2..%llu, %d worker(s) per stage%s\n",
                static_cast<unsigned long long>(limit), workers, ordered ? ", ordered" : "");
    std::printf("  primes found         %llu (largest %llu)\n", static_cast<unsigned long long>(s.primes),
                static_cast<unsigned long long>(largest_prime));
    std::printf("  sum of their squares %llu\n", static_cast<unsigned long long>(s.sum_of_squares));
    if (ordered) std::printf("  arrived in order     %s\n", in_order ? "yes" : "NO");
    std::printf("  time                 %.3f s\n", secs);
    int rc = 0;
    if (why) {
      std::printf("  stopped early: %s\n",
                  why == sl::errc::deadline_exceeded ? "--timeout passed" : "interrupted by a signal");
      rc = 1;
    } else {
      std::printf("  complete\n");
    }
    deadline.cancel();
    sig.cancel();
    co_return rc;
  });
}
