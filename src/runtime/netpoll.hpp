// Internal: the netpoller (Go's runtime/netpoll.go). Every non-blocking fd is
// registered once, edge-triggered, with the scheduler's epoll instance; its
// poll_desc records readiness per direction and the tasks waiting for it.
//
// Per direction, the invariant (under mu):
//   * `ready` is set when the kernel reported readiness that no waiter consumed
//     (so an edge that arrives between EAGAIN and parking is not lost);
//   * a waiter parks only if `ready` is false, and consumes it otherwise.
// poll_descs are never freed while their scheduler lives: an event for a closed
// fd can still be in another worker's epoll_wait buffer. Closed descs go to a
// free list and are reused; a stale event on a reused desc is a spurious
// wake-up, which every waiter tolerates (it retries the syscall).
#pragma once

#include "scheduler.hpp"

#include <sluice/context.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/waiter.hpp>
#include <sluice/task.hpp>

#include <memory>
#include <system_error>
#include <vector>

namespace sluice::detail {

enum class io_dir : int { read = 0, write = 1 };

struct poll_desc : poll_item {
  spinlock mu;
  int fd = -1;
  bool closing = false;
  bool ready[2] = {false, false};
  // The peer hung up (FIN, RST or a socket error was reported). Sticky until
  // the desc is reused.
  bool hangup = false;
  // Cancelled (and cleared) when a hangup is reported; see watch_hangup.
  context_node* hangup_watch = nullptr;  // holds a reference
  wait_list waiters[2];
  poll_desc* next_free = nullptr;
  scheduler* sched = nullptr;
};

// Owns every poll_desc of a scheduler; recycles closed ones (see above).
class poll_cache {
 public:
  poll_desc* get(scheduler* s) {
    mu_.lock();
    poll_desc* d = free_;
    if (d != nullptr) {
      free_ = d->next_free;
      mu_.unlock();
      return d;
    }
    all_.push_back(std::make_unique<poll_desc>());
    d = all_.back().get();
    mu_.unlock();
    d->sched = s;
    return d;
  }
  void put(poll_desc* d) noexcept {
    mu_.lock();
    d->next_free = free_;
    free_ = d;
    mu_.unlock();
  }

 private:
  spinlock mu_;
  std::vector<std::unique_ptr<poll_desc>> all_;
  poll_desc* free_ = nullptr;
};

// Registers a non-blocking fd with the current runtime's netpoller.
// Throws std::logic_error outside a runtime, std::system_error if epoll refuses.
poll_desc* poll_open(int fd);
// Wakes every waiter (they see errc closed), deregisters and recycles the desc.
// Does not close the fd.
void poll_close(poll_desc* d) noexcept;
// Suspends until the fd is ready in `dir`, the context is done, or the desc is
// closed. Returns {} when ready (or spuriously: callers retry the syscall).
task<std::error_code> poll_wait(poll_desc* d, io_dir dir, const context& ctx);
// The same, also ending with errc::deadline_exceeded at `deadline`
// (clock::time_point::max(): no deadline).
task<std::error_code> poll_wait(poll_desc* d, io_dir dir, const context& ctx,
                                clock::time_point deadline);
// Cancels `ctx_node` (cancel_by_owner) when the peer hangs up, at once if it
// already has; replaces a previous watch. nullptr clears the watch. The desc
// keeps a reference to the node while it watches.
void poll_watch_hangup(poll_desc* d, context_node* ctx_node) noexcept;

}  // namespace sluice::detail
