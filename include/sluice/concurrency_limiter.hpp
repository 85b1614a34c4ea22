// concurrency_limiter: at most N operations in flight; the base of load shedding.
//
// A rate limiter bounds how often work starts; a concurrency limiter bounds how
// much runs at once, which is what protects a service whose requests take
// variable time (a slow database makes requests pile up at a constant rate).
// When the limit is reached, try_acquire() fails at once (answer 503 with
// Retry-After: shed load), or acquire(ctx) waits in FIFO order until a slot
// frees or the context ends (queue briefly).
//
//   sluice::concurrency_limiter inflight(256);
//   auto p = inflight.try_permit();          // RAII: released when p goes
//   if (!p) co_return reply(503, "busy, retry later");
//   co_return co_await handle(req);
//
// Go: a buffered channel used as a semaphore, or x/sync/semaphore with weight 1
// (golang.org/x/net/netutil.LimitListener for connections).
#pragma once

#include <sluice/context.hpp>
#include <sluice/semaphore.hpp>
#include <sluice/task.hpp>

#include <atomic>
#include <cstdint>
#include <system_error>
#include <utility>

namespace sluice {

// Counters of a concurrency_limiter.
struct concurrency_limiter_stats {
  std::int64_t limit = 0;        // the maximum in flight
  std::int64_t in_flight = 0;    // slots held now
  std::uint64_t acquired = 0;    // slots handed out so far
  std::uint64_t rejected = 0;    // try_acquire()/try_permit() that failed
  std::uint64_t gave_up = 0;     // acquire()s ended by their context
};

class concurrency_limiter {
 public:
  // A held slot, released when destroyed (or by release()). Empty when the
  // acquisition failed; error() then holds the context's error for
  // acquire_permit() and stays empty for a failed try_permit().
  class [[nodiscard]] permit {
   public:
    permit() noexcept = default;
    permit(permit&& o) noexcept : l_(std::exchange(o.l_, nullptr)), err_(o.err_) {}
    permit& operator=(permit&& o) noexcept {
      if (this != &o) {
        release();
        l_ = std::exchange(o.l_, nullptr);
        err_ = o.err_;
      }
      return *this;
    }
    permit(const permit&) = delete;
    permit& operator=(const permit&) = delete;
    ~permit() { release(); }

    // True while the permit holds a slot.
    explicit operator bool() const noexcept { return l_ != nullptr; }
    // Why an acquire_permit() failed (empty for a held permit or a failed try).
    std::error_code error() const noexcept { return err_; }
    // Gives the slot back early; idempotent.
    void release() noexcept {
      if (l_ != nullptr) std::exchange(l_, nullptr)->release();
    }

   private:
    friend class concurrency_limiter;
    explicit permit(concurrency_limiter* l) noexcept : l_(l) {}
    explicit permit(std::error_code e) noexcept : err_(e) {}
    concurrency_limiter* l_ = nullptr;
    std::error_code err_;
  };

  // At most max_in_flight slots held at once; throws std::invalid_argument if
  // max_in_flight < 1.
  explicit concurrency_limiter(std::int64_t max_in_flight);
  concurrency_limiter(const concurrency_limiter&) = delete;
  concurrency_limiter& operator=(const concurrency_limiter&) = delete;

  // Takes a slot if one is free and nobody is queued; false otherwise. Never
  // suspends; works outside a runtime.
  bool try_acquire() noexcept;
  // Suspends until a slot is free (FIFO among waiters), then takes it: empty
  // error_code. Returns ctx.err(), holding nothing, if ctx is done first (or
  // already). Must be awaited from a task.
  task<std::error_code> acquire(context ctx);
  // Gives back a slot taken by try_acquire()/acquire(). Throws std::logic_error
  // if none is held.
  void release();

  // RAII forms of try_acquire() and acquire(ctx).
  permit try_permit() noexcept { return try_acquire() ? permit(this) : permit(); }
  task<permit> acquire_permit(context ctx);

  std::int64_t limit() const noexcept { return sem_.size(); }
  std::int64_t in_flight() const noexcept { return in_flight_.load(std::memory_order_relaxed); }
  concurrency_limiter_stats stats() const noexcept;

 private:
  semaphore sem_;
  std::atomic<std::int64_t> in_flight_{0};
  std::atomic<std::uint64_t> acquired_{0};
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> gave_up_{0};
};

}  // namespace sluice
