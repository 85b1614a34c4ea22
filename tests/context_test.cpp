// context: cancellation trees, err() codes, deadlines, values, use outside a
// runtime, waking waiters on other workers and threads; signal_context.
#include "test_util.hpp"

#include <sluice/chan.hpp>
#include <sluice/context.hpp>
#include <sluice/error.hpp>
#include <sluice/introspection.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/time.hpp>
#include <sluice/wait_group.hpp>

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
namespace sl = sluice;

namespace {

using sl_test::tasks_in;
using sl_test::until_parked;

// Outside a runtime: spins until ctx reports an error (the signal watcher thread
// cancels asynchronously); false after 10 s.
bool spin_until_done(const sl::context& ctx) {
  const auto give_up = sl::clock::now() + 10s;
  while (!ctx.err()) {
    if (sl::clock::now() > give_up) return false;
    std::this_thread::yield();
  }
  return true;
}

sl::task<void> wait_done(sl::context ctx, std::atomic<int>* woke, sl::wait_group* wg) {
  co_await ctx.done();
  if (ctx.err()) woke->fetch_add(1);
  wg->done();
}

sl::task<void> select_done(sl::context ctx, sl::chan<int> never, std::atomic<int>* woke,
                           sl::wait_group* wg) {
  auto r = co_await sl::select(sl::recv(never), sl::done(ctx));
  if (r.index() == 1 && ctx.err()) woke->fetch_add(1);
  wg->done();
}

const sl::context_key<int> k_user{"user"};
const sl::context_key<int> k_user_again{"user"};  // same name, different key
const sl::context_key<std::string> k_trace{"trace"};

}  // namespace

// ---- background and cancel ---------------------------------------------------------

TEST(Context, BackgroundIsNeverDoneAndHasNoDeadlineOrValues) {
  const sl::context bg = sl::context::background();
  EXPECT_FALSE(bg.err());
  EXPECT_EQ(bg.deadline(), std::nullopt);
  EXPECT_EQ(bg.value(k_user), nullptr);
}

TEST(Context, CancelSetsCanceled) {
  auto [ctx, cancel] = sl::with_cancel(sl::context::background());
  EXPECT_FALSE(ctx.err());
  cancel();
  EXPECT_EQ(ctx.err(), sl::errc::canceled);
}

TEST(Context, CancelIsIdempotentAndCopiesCancelTheSameContext) {
  auto [ctx, cancel] = sl::with_cancel(sl::context::background());
  const sl::cancel_func copy = cancel;
  copy();
  copy();
  cancel();
  EXPECT_EQ(ctx.err(), sl::errc::canceled);
  const sl::cancel_func empty;
  empty();  // a default-constructed cancel_func does nothing
}

TEST(Context, ErrCodesUseTheSluiceCategory) {
  auto [c1, cancel1] = sl::with_cancel(sl::context::background());
  cancel1();
  const std::error_code canceled = c1.err();
  EXPECT_EQ(canceled, sl::errc::canceled);
  EXPECT_EQ(canceled.value(), 1);
  EXPECT_STREQ(canceled.category().name(), "sluice");
  EXPECT_EQ(canceled.message(), "context canceled");

  auto [c2, cancel2] = sl::with_deadline(sl::context::background(), sl::clock::now() - 1s);
  const std::error_code exceeded = c2.err();
  EXPECT_EQ(exceeded, sl::errc::deadline_exceeded);
  EXPECT_EQ(exceeded.message(), "context deadline exceeded");
  EXPECT_NE(exceeded, sl::errc::canceled);
  cancel2();
}

TEST(Context, CancelPropagatesToChildrenAndGrandchildren) {
  auto [root, cancel] = sl::with_cancel(sl::context::background());
  auto [child, cancel_child] = sl::with_cancel(root);
  const sl::context valued = sl::with_value(child, k_user, 1);
  auto [grandchild, cancel_grandchild] = sl::with_timeout(valued, 1h);
  cancel();
  EXPECT_EQ(child.err(), sl::errc::canceled);
  EXPECT_EQ(valued.err(), sl::errc::canceled);
  EXPECT_EQ(grandchild.err(), sl::errc::canceled);
  cancel_child();
  cancel_grandchild();
}

TEST(Context, CancellingAChildLeavesItsParentAndSiblingsLive) {
  auto [root, cancel] = sl::with_cancel(sl::context::background());
  auto [a, cancel_a] = sl::with_cancel(root);
  auto [b, cancel_b] = sl::with_cancel(root);
  auto [a_child, cancel_a_child] = sl::with_cancel(a);
  cancel_a();
  EXPECT_EQ(a.err(), sl::errc::canceled);
  EXPECT_EQ(a_child.err(), sl::errc::canceled);
  EXPECT_FALSE(root.err());
  EXPECT_FALSE(b.err());
  cancel();
  EXPECT_EQ(b.err(), sl::errc::canceled);
  cancel_b();
  cancel_a_child();
}

TEST(Context, ChildOfACancelledParentIsBornCancelled) {
  auto [root, cancel] = sl::with_cancel(sl::context::background());
  cancel();
  auto [child, cancel_child] = sl::with_cancel(root);
  auto [timed, cancel_timed] = sl::with_timeout(root, 1h);
  EXPECT_EQ(child.err(), sl::errc::canceled);
  EXPECT_EQ(timed.err(), sl::errc::canceled);
  cancel_child();
  cancel_timed();
}

TEST(Context, CancelPropagatesThroughADeepChain) {
  auto [root, cancel] = sl::with_cancel(sl::context::background());
  std::vector<sl::context_with_cancel> chain;
  sl::context leaf = root;
  for (int i = 0; i < 10000; ++i) {
    chain.push_back(i % 2 == 0 ? sl::with_cancel(leaf) : sl::with_timeout(leaf, 1h));
    leaf = i % 3 == 0 ? sl::with_value(chain.back().ctx, k_user, i) : chain.back().ctx;
  }
  EXPECT_FALSE(leaf.err());
  cancel();
  for (const auto& c : chain) EXPECT_EQ(c.ctx.err(), sl::errc::canceled);
  EXPECT_EQ(leaf.err(), sl::errc::canceled);
}

TEST(Context, CancelPropagatesThroughAWideTree) {
  auto [root, cancel] = sl::with_cancel(sl::context::background());
  std::vector<sl::context_with_cancel> kids;
  std::vector<sl::context_with_cancel> grandkids;
  for (int i = 0; i < 2000; ++i) {
    kids.push_back(sl::with_cancel(root));
    for (int j = 0; j < 5; ++j) grandkids.push_back(sl::with_cancel(kids.back().ctx));
  }
  // Some leave early; the rest must still be reached.
  for (std::size_t i = 0; i < kids.size(); i += 7) kids[i].cancel();
  cancel();
  for (const auto& k : kids) EXPECT_EQ(k.ctx.err(), sl::errc::canceled);
  for (const auto& g : grandkids) EXPECT_EQ(g.ctx.err(), sl::errc::canceled);
}

TEST(Context, CancelAfterTheDeadlineKeepsDeadlineExceeded) {
  auto [ctx, cancel] = sl::with_deadline(sl::context::background(), sl::clock::now() - 1ms);
  EXPECT_EQ(ctx.err(), sl::errc::deadline_exceeded);
  cancel();
  EXPECT_EQ(ctx.err(), sl::errc::deadline_exceeded);  // the first reason sticks
}

TEST(Context, ChildCancelledWithItsParentReportsTheParentsReason) {
  auto [parent, cancel_parent] = sl::with_timeout(sl::context::background(), 1ms);
  auto [child, cancel_child] = sl::with_cancel(parent);
  const auto deadline = *parent.deadline();
  while (sl::clock::now() < deadline) {
  }
  EXPECT_EQ(child.err(), sl::errc::deadline_exceeded);
  cancel_child();
  EXPECT_EQ(child.err(), sl::errc::deadline_exceeded);
  cancel_parent();
}

// ---- deadlines ----------------------------------------------------------------------

TEST(Context, WithTimeoutSetsDeadlineNowPlusTimeout) {
  const auto before = sl::clock::now();
  auto [ctx, cancel] = sl::with_timeout(sl::context::background(), 5s);
  const auto after = sl::clock::now();
  ASSERT_TRUE(ctx.deadline().has_value());
  EXPECT_GE(*ctx.deadline(), before + 5s);
  EXPECT_LE(*ctx.deadline(), after + 5s);
  cancel();
}

TEST(Context, EarlierChildDeadlineIsTheChildsOwn) {
  const auto now = sl::clock::now();
  auto [parent, cancel_parent] = sl::with_deadline(sl::context::background(), now + 1h);
  auto [child, cancel_child] = sl::with_deadline(parent, now + 1ms);
  EXPECT_EQ(child.deadline(), std::optional<sl::clock::time_point>(now + 1ms));
  while (sl::clock::now() < now + 1ms) {
  }
  EXPECT_EQ(child.err(), sl::errc::deadline_exceeded);
  EXPECT_FALSE(parent.err());
  cancel_child();
  cancel_parent();
}

TEST(Context, LaterChildDeadlineKeepsTheParents) {
  const auto now = sl::clock::now();
  auto [parent, cancel_parent] = sl::with_deadline(sl::context::background(), now + 1ms);
  auto [child, cancel_child] = sl::with_deadline(parent, now + 1h);
  EXPECT_EQ(child.deadline(), std::optional<sl::clock::time_point>(now + 1ms));
  while (sl::clock::now() < now + 1ms) {
  }
  EXPECT_EQ(child.err(), sl::errc::deadline_exceeded);
  EXPECT_EQ(parent.err(), sl::errc::deadline_exceeded);
  cancel_child();
  cancel_parent();
}

TEST(Context, DerivedContextsInheritTheDeadline) {
  const auto when = sl::clock::now() + 1h;
  auto [parent, cancel_parent] = sl::with_deadline(sl::context::background(), when);
  auto [child, cancel_child] = sl::with_cancel(parent);
  const sl::context valued = sl::with_value(child, k_user, 3);
  EXPECT_EQ(child.deadline(), std::optional<sl::clock::time_point>(when));
  EXPECT_EQ(valued.deadline(), std::optional<sl::clock::time_point>(when));
  EXPECT_EQ(sl::with_cancel(sl::context::background()).ctx.deadline(), std::nullopt);
  cancel_child();
  cancel_parent();
}

TEST(Context, DeadlineInThePastIsExceededAtOnce) {
  auto [ctx, cancel] = sl::with_deadline(sl::context::background(), sl::clock::now() - 1s);
  EXPECT_EQ(ctx.err(), sl::errc::deadline_exceeded);
  auto [zero, cancel_zero] = sl::with_timeout(sl::context::background(), 0s);
  EXPECT_EQ(zero.err(), sl::errc::deadline_exceeded);
  cancel();
  cancel_zero();
}

TEST(Context, LongestTimeoutIsNotAlreadyExceeded) {
  // Go: WithTimeout(ctx, math.MaxInt64) is live for ~292 years; now + max must
  // not wrap around into the past.
  auto [ctx, cancel] = sl::with_timeout(sl::context::background(), sl::clock::duration::max());
  EXPECT_FALSE(ctx.err()) << "with_timeout(duration::max()) is born " << ctx.err().message();
  ASSERT_TRUE(ctx.deadline().has_value());
  EXPECT_GT(*ctx.deadline(), sl::clock::now());
  cancel();
}

TEST(Context, DoneWakesAtTheDeadline) {
  sl_test::run_checked([]() -> sl::task<void> {
    const auto deadline = sl::clock::now() + 3ms;
    auto [ctx, cancel] = sl::with_deadline(sl::context::background(), deadline);
    co_await ctx.done();
    EXPECT_GE(sl::clock::now(), deadline);
    EXPECT_EQ(ctx.err(), sl::errc::deadline_exceeded);
    cancel();
  });
}

TEST(Context, DoneOfADescendantWakesAtAnAncestorsDeadline) {
  sl_test::run_checked([]() -> sl::task<void> {
    const auto deadline = sl::clock::now() + 3ms;
    auto [grandparent, cancel_gp] = sl::with_deadline(sl::context::background(), deadline);
    auto [parent, cancel_parent] = sl::with_cancel(grandparent);
    const sl::context leaf = sl::with_value(parent, k_user, 1);
    co_await leaf.done();
    EXPECT_GE(sl::clock::now(), deadline);
    EXPECT_EQ(leaf.err(), sl::errc::deadline_exceeded);
    EXPECT_EQ(grandparent.err(), sl::errc::deadline_exceeded);
    cancel_parent();
    cancel_gp();
  });
}

TEST(Context, DeadlineWakesWaitersInALaterRuntime) {
  // The deadline timer armed in one runtime is dropped when it shuts down; a
  // later runtime must arm it again.
  // Named, not structured bindings: clang 14 cannot capture those in a lambda.
  const sl::context_with_cancel made = sl::with_timeout(sl::context::background(), 30ms);
  const sl::context& ctx = made.ctx;
  const sl::cancel_func& cancel = made.cancel;
  sl_test::run_checked([&]() -> sl::task<void> {
    auto r = co_await sl::select(sl::done(ctx), sl::after(1ms));  // arms the timer
    EXPECT_EQ(r.index(), 1u);
  });
  sl_test::run_checked([&]() -> sl::task<void> {
    auto r = co_await sl::select(sl::done(ctx), sl::after(10s));
    EXPECT_EQ(r.index(), 0u);
    EXPECT_EQ(ctx.err(), sl::errc::deadline_exceeded);
  });
  cancel();
}

// ---- values ---------------------------------------------------------------------------

TEST(Context, ValueIsFoundInTheContextAndItsDescendants) {
  const sl::context v = sl::with_value(sl::context::background(), k_trace, std::string("t-1"));
  auto [child, cancel] = sl::with_cancel(v);
  auto [grandchild, cancel_gc] = sl::with_timeout(child, 1h);
  ASSERT_NE(grandchild.value(k_trace), nullptr);
  EXPECT_EQ(*grandchild.value(k_trace), "t-1");  // looked up through two cancel nodes
  EXPECT_EQ(v.value(k_user), nullptr);
  cancel();
  EXPECT_NE(grandchild.value(k_trace), nullptr);  // values outlive cancellation
  cancel_gc();
}

TEST(Context, NearestValueShadowsAncestors) {
  const sl::context outer = sl::with_value(sl::context::background(), k_user, 1);
  auto [mid, cancel] = sl::with_cancel(outer);
  const sl::context inner = sl::with_value(mid, k_user, 2);
  ASSERT_NE(inner.value(k_user), nullptr);
  EXPECT_EQ(*inner.value(k_user), 2);
  EXPECT_EQ(*outer.value(k_user), 1);  // the parent is unchanged
  EXPECT_EQ(*mid.value(k_user), 1);
  cancel();
}

TEST(Context, KeysAreIdentifiedByAddressNotName) {
  const sl::context ctx = sl::with_value(sl::context::background(), k_user, 7);
  EXPECT_EQ(ctx.value(k_user_again), nullptr);
  const sl::context both = sl::with_value(ctx, k_user_again, 8);
  EXPECT_EQ(*both.value(k_user), 7);
  EXPECT_EQ(*both.value(k_user_again), 8);
  EXPECT_STREQ(k_user.name(), "user");
}

TEST(Context, ValuesOfSeveralTypesCoexist) {
  sl::context ctx = sl::with_value(sl::context::background(), k_user, 42);
  ctx = sl::with_value(ctx, k_trace, "abc");  // converted to std::string
  ASSERT_NE(ctx.value(k_user), nullptr);
  ASSERT_NE(ctx.value(k_trace), nullptr);
  EXPECT_EQ(*ctx.value(k_user), 42);
  EXPECT_EQ(*ctx.value(k_trace), "abc");
}

TEST(Context, ValueContextsShareTheirParentsCancellation) {
  auto [parent, cancel] = sl::with_cancel(sl::context::background());
  const sl::context v = sl::with_value(parent, k_user, 1);
  EXPECT_FALSE(v.err());
  cancel();
  EXPECT_EQ(v.err(), sl::errc::canceled);
  EXPECT_FALSE(sl::with_value(sl::context::background(), k_user, 1).err());
}

// ---- outside a runtime ----------------------------------------------------------------

TEST(Context, WorksOutsideARuntimeForErrDeadlineAndValue) {
  ASSERT_FALSE(sl::in_runtime());
  const auto deadline = sl::clock::now() + 2ms;
  auto [ctx, cancel] = sl::with_deadline(sl::context::background(), deadline);
  const sl::context v = sl::with_value(ctx, k_user, 5);
  EXPECT_FALSE(v.err());
  EXPECT_EQ(v.deadline(), std::optional<sl::clock::time_point>(deadline));
  EXPECT_EQ(*v.value(k_user), 5);
  while (sl::clock::now() < deadline) {
  }
  // No runtime, so no timer: err() notices the deadline by itself.
  EXPECT_EQ(v.err(), sl::errc::deadline_exceeded);
  EXPECT_EQ(ctx.err(), sl::errc::deadline_exceeded);
  cancel();
}

TEST(Context, CreatedOutsideARuntimeCanBeAwaitedInOne) {
  const sl::context_with_cancel made = sl::with_timeout(sl::context::background(), 3ms);
  const sl::context& ctx = made.ctx;
  const sl::cancel_func& cancel = made.cancel;
  sl_test::run_checked([&]() -> sl::task<void> {
    co_await ctx.done();
    EXPECT_EQ(ctx.err(), sl::errc::deadline_exceeded);
  });
  cancel();
}

// ---- waking waiters ---------------------------------------------------------------------

TEST(Context, CancellationWakesEveryDoneWaiterOnEveryWorker) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        auto [ctx, cancel] = sl::with_cancel(sl::context::background());
        auto [child, cancel_child] = sl::with_cancel(ctx);
        constexpr int waiters = 64;
        std::atomic<int> woke{0};
        sl::chan<int> never;
        sl::wait_group wg;
        wg.add(4 * waiters);
        for (int i = 0; i < waiters; ++i) {
          sl::go(wait_done, ctx, &woke, &wg);
          sl::go(wait_done, sl::with_value(child, k_user, i), &woke, &wg);
          sl::go(select_done, ctx, never, &woke, &wg);
          sl::go(select_done, child, never, &woke, &wg);
        }
        const bool parked_done = co_await until_parked("context done", 2 * waiters);
        const bool parked_select = co_await until_parked("select", 2 * waiters);
        EXPECT_TRUE(parked_done);
        EXPECT_TRUE(parked_select);
        cancel();
        co_await wg.wait();
        EXPECT_EQ(woke.load(), 4 * waiters);
        cancel_child();
      },
      sl::runtime_options{.workers = 2});
}

TEST(Context, CancelFromAForeignThreadWakesAParkedTask) {
  std::thread canceller;
  sl_test::run_checked([&]() -> sl::task<void> {
    auto [ctx, cancel] = sl::with_cancel(sl::context::background());
    std::atomic<int> woke{0};
    sl::wait_group wg;
    wg.add(1);
    sl::go(wait_done, ctx, &woke, &wg);
    const bool parked = co_await until_parked("context done", 1);
    EXPECT_TRUE(parked);
    canceller = std::thread([c = cancel] { c(); });
    co_await wg.wait();
    EXPECT_EQ(woke.load(), 1);
  });
  canceller.join();
}

TEST(Context, DoneOfACancelledContextDoesNotSuspend) {
  sl_test::run_checked(
      []() -> sl::task<void> {
        std::atomic<bool> other_ran{false};
        sl::go([](std::atomic<bool>* r) -> sl::task<void> {
          r->store(true);
          co_return;
        }, &other_ran);
        auto [ctx, cancel] = sl::with_cancel(sl::context::background());
        cancel();
        co_await ctx.done();
        EXPECT_FALSE(other_ran.load());
        for (int i = 0; i < 1000 && !other_ran.load(); ++i) co_await sl::yield();
      },
      sl::runtime_options{.workers = 1});
}

// ---- stress -----------------------------------------------------------------------------

TEST(ContextStress, CancelRacingChildCreationAndDestruction) {
  // Hunts: a parent collecting its children while they unlink themselves (cancel
  // func or last reference dropped) or are being linked. Every child that exists
  // after the parent's cancel reports canceled.
  sl_test::run_checked(
      []() -> sl::task<void> {
        for (int round = 0; round < 1000; ++round) {
          auto [root, cancel] = sl::with_cancel(sl::context::background());
          std::atomic<int> not_cancelled{0};
          sl::wait_group wg;
          constexpr int makers = 4;
          wg.add(makers);
          for (int m = 0; m < makers; ++m) {
            sl::go([](sl::context parent, int seed, std::atomic<int>* bad,
                      sl::wait_group* w) -> sl::task<void> {
              std::minstd_rand rng(static_cast<unsigned>(seed));
              std::vector<sl::context_with_cancel> kept;
              for (int i = 0; i < 200; ++i) {
                auto c = rng() % 2 == 0 ? sl::with_cancel(parent) : sl::with_timeout(parent, 1h);
                switch (rng() % 3) {
                  case 0: c.cancel(); break;          // leaves at once
                  case 1: break;                      // dropped without cancel
                  default: kept.push_back(c); break;  // outlives the parent's cancel
                }
                if (rng() % 8 == 0) co_await sl::yield();
              }
              co_await parent.done();
              // Like Go, the parent wakes its own waiters before it reaches its
              // children, so wait for each child rather than reading err() now.
              for (const auto& k : kept) {
                auto r = co_await sl::select(sl::done(k.ctx), sl::after(10s));
                if (r.index() != 0 || k.ctx.err() != sl::errc::canceled) bad->fetch_add(1);
                k.cancel();
              }
              w->done();
            }, root, round * 10 + m, &not_cancelled, &wg);
          }
          for (int i = 0; i < round % 20; ++i) co_await sl::yield();
          cancel();
          co_await wg.wait();
          EXPECT_EQ(not_cancelled.load(), 0) << "round " << round;
        }
      },
      sl::runtime_options{.workers = 2});
}

TEST(ContextStress, DeadlinesRacingExplicitCancellation) {
  // Hunts: the deadline timer firing (and cancelling) while cancel() runs on the
  // other worker and while waiters park. Every waiter wakes, and err() is one of
  // the two reasons and never changes afterwards.
  sl_test::run_checked(
      []() -> sl::task<void> {
        std::minstd_rand rng(7);
        constexpr int contexts = 10000;
        std::atomic<int> woke{0};
        std::atomic<int> bad{0};
        sl::wait_group wg;
        wg.add(2 * contexts);
        for (int i = 0; i < contexts; ++i) {
          auto [ctx, cancel] =
              sl::with_timeout(sl::context::background(), std::chrono::microseconds(rng() % 1000));
          sl::go([](sl::context c, std::atomic<int>* w, std::atomic<int>* b,
                    sl::wait_group* g) -> sl::task<void> {
            co_await c.done();
            const std::error_code first = c.err();
            if (first != sl::errc::canceled && first != sl::errc::deadline_exceeded) b->fetch_add(1);
            co_await sl::yield();
            if (c.err() != first) b->fetch_add(1);
            w->fetch_add(1);
            g->done();
          }, ctx, &woke, &bad, &wg);
          sl::go([](sl::cancel_func c, unsigned seed, sl::wait_group* g) -> sl::task<void> {
            std::minstd_rand r(seed);
            co_await sl::sleep_for(std::chrono::microseconds(r() % 1000));
            c();
            g->done();
          }, cancel, static_cast<unsigned>(i), &wg);
        }
        co_await wg.wait();
        EXPECT_EQ(woke.load(), contexts);
        EXPECT_EQ(bad.load(), 0);
      },
      sl::runtime_options{.workers = 2});
}

TEST(ContextStress, CancelReachesTheLeafOfAHundredThousandDeepChain) {
  auto [root, cancel] = sl::with_cancel(sl::context::background());
  std::vector<sl::context_with_cancel> chain;
  sl::context leaf = root;
  for (int i = 0; i < 100'000; ++i) {
    chain.push_back(sl::with_cancel(leaf));
    leaf = chain.back().ctx;
  }
  cancel();
  EXPECT_EQ(leaf.err(), sl::errc::canceled);
}

TEST(ContextStress, DroppingAMillionDeepValueChainDoesNotOverflow) {
  sl::context leaf = sl::context::background();
  for (int i = 0; i < 1'000'000; ++i) leaf = sl::with_value(leaf, k_user, i);
  EXPECT_EQ(*leaf.value(k_user), 999'999);
  leaf = sl::context::background();
}

// ---- signal_context ----------------------------------------------------------------------

namespace {

std::atomic<int> g_own_handler_calls{0};
extern "C" void own_handler(int) { g_own_handler_calls.fetch_add(1); }

using handler_fn = void (*)(int);

handler_fn installed_handler(int sig) {
  struct sigaction sa {};
  sigaction(sig, nullptr, &sa);
  return sa.sa_handler;
}

// Installs own_handler for `sig` for the scope, then restores what was there.
class own_handler_scope {
 public:
  explicit own_handler_scope(int sig) : sig_(sig) {
    struct sigaction sa {};
    sa.sa_handler = own_handler;
    sigemptyset(&sa.sa_mask);
    sigaction(sig_, &sa, &saved_);
  }
  own_handler_scope(const own_handler_scope&) = delete;
  own_handler_scope& operator=(const own_handler_scope&) = delete;
  ~own_handler_scope() { sigaction(sig_, &saved_, nullptr); }

 private:
  int sig_;
  struct sigaction saved_ {};
};

}  // namespace

TEST(SignalContext, RaiseInATaskCancelsTheContext) {
  sl_test::run_checked([]() -> sl::task<void> {
    auto [ctx, stop] = sl::signal_context(sl::context::background(), {SIGUSR1});
    EXPECT_FALSE(ctx.err());
    std::raise(SIGUSR1);
    co_await ctx.done();
    EXPECT_EQ(ctx.err(), sl::errc::canceled);
    stop();
  });
}

TEST(SignalContext, RaiseFromAForeignThreadWakesAParkedTask) {
  std::thread raiser;
  sl_test::run_checked([&]() -> sl::task<void> {
    auto [ctx, stop] = sl::signal_context(sl::context::background(), {SIGUSR2});
    std::atomic<int> woke{0};
    sl::wait_group wg;
    wg.add(1);
    sl::go(wait_done, ctx, &woke, &wg);
    const bool parked = co_await until_parked("context done", 1);
    EXPECT_TRUE(parked);
    raiser = std::thread([] { std::raise(SIGUSR2); });
    co_await wg.wait();
    EXPECT_EQ(woke.load(), 1);
    stop();
  });
  raiser.join();
}

TEST(SignalContext, WorksOutsideARuntime) {
  auto [ctx, stop] = sl::signal_context(sl::context::background(), {SIGUSR1, SIGUSR2});
  std::thread raiser([] { std::raise(SIGUSR2); });
  raiser.join();
  EXPECT_TRUE(spin_until_done(ctx));
  EXPECT_EQ(ctx.err(), sl::errc::canceled);
  stop();
}

TEST(SignalContext, OnlyTheListedSignalsCancel) {
  auto [usr1, stop1] = sl::signal_context(sl::context::background(), {SIGUSR1});
  auto [usr2, stop2] = sl::signal_context(sl::context::background(), {SIGUSR2});
  std::raise(SIGUSR2);
  EXPECT_TRUE(spin_until_done(usr2));
  // One watcher handles signals in order: had SIGUSR2 cancelled usr1, it would
  // have done so before usr2.
  EXPECT_FALSE(usr1.err());
  stop1();
  stop2();
}

TEST(SignalContext, EveryContextWaitingForASignalIsCancelled) {
  auto [a, stop_a] = sl::signal_context(sl::context::background(), {SIGUSR1});
  auto [b, stop_b] = sl::signal_context(sl::context::background(), {SIGUSR2, SIGUSR1});
  std::raise(SIGUSR1);
  EXPECT_TRUE(spin_until_done(a));
  EXPECT_TRUE(spin_until_done(b));
  stop_a();
  stop_b();
}

TEST(SignalContext, StopRestoresThePreviousHandler) {
  own_handler_scope own(SIGUSR1);
  {
    auto [ctx, stop] = sl::signal_context(sl::context::background(), {SIGUSR1});
    EXPECT_NE(installed_handler(SIGUSR1), &own_handler);
    stop();
    EXPECT_EQ(ctx.err(), sl::errc::canceled);
  }
  EXPECT_EQ(installed_handler(SIGUSR1), &own_handler);
  const int before = g_own_handler_calls.load();
  std::raise(SIGUSR1);  // handled synchronously on this thread
  EXPECT_EQ(g_own_handler_calls.load(), before + 1);
}

TEST(SignalContext, HandlerStaysWhileAnotherContextStillListens) {
  own_handler_scope own(SIGUSR2);
  auto [a, stop_a] = sl::signal_context(sl::context::background(), {SIGUSR2});
  auto [b, stop_b] = sl::signal_context(sl::context::background(), {SIGUSR2});
  stop_a();
  EXPECT_NE(installed_handler(SIGUSR2), &own_handler);
  const int before = g_own_handler_calls.load();
  std::raise(SIGUSR2);
  EXPECT_TRUE(spin_until_done(b));
  EXPECT_EQ(g_own_handler_calls.load(), before);
  stop_b();
  EXPECT_EQ(installed_handler(SIGUSR2), &own_handler);
}

TEST(SignalContext, ParentCancellationRestoresTheHandler) {
  own_handler_scope own(SIGUSR1);
  auto [parent, cancel_parent] = sl::with_cancel(sl::context::background());
  auto [ctx, stop] = sl::signal_context(parent, {SIGUSR1});
  EXPECT_NE(installed_handler(SIGUSR1), &own_handler);
  cancel_parent();
  EXPECT_EQ(ctx.err(), sl::errc::canceled);
  EXPECT_EQ(installed_handler(SIGUSR1), &own_handler);
  stop();
}

TEST(SignalContext, DroppingTheContextRestoresTheHandler) {
  own_handler_scope own(SIGUSR2);
  { auto dropped = sl::signal_context(sl::context::background(), {SIGUSR2}); }
  EXPECT_EQ(installed_handler(SIGUSR2), &own_handler);
}

TEST(SignalContext, ChildOfACancelledParentInstallsNothing) {
  own_handler_scope own(SIGUSR1);
  auto [parent, cancel_parent] = sl::with_cancel(sl::context::background());
  cancel_parent();
  auto [ctx, stop] = sl::signal_context(parent, {SIGUSR1});
  EXPECT_EQ(ctx.err(), sl::errc::canceled);
  EXPECT_EQ(installed_handler(SIGUSR1), &own_handler);
  stop();
}

TEST(SignalContext, UncatchableOrInvalidSignalsAreRejected) {
  const sl::context bg = sl::context::background();
  EXPECT_THROW(sl::signal_context(bg, {}), std::invalid_argument);
  EXPECT_THROW(sl::signal_context(bg, {SIGKILL}), std::invalid_argument);
  EXPECT_THROW(sl::signal_context(bg, {SIGSTOP}), std::invalid_argument);
  EXPECT_THROW(sl::signal_context(bg, {0}), std::invalid_argument);
  EXPECT_THROW(sl::signal_context(bg, {SIGUSR1, NSIG}), std::invalid_argument);
  EXPECT_EQ(installed_handler(SIGUSR1), SIG_DFL);  // nothing was half-installed
}
