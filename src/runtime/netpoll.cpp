#include "netpoll.hpp"

#include <sluice/select.hpp>

#include <sys/epoll.h>

#include <cerrno>
#include <stdexcept>

namespace sluice::detail {

namespace {

void on_ready(poll_item* item, std::uint32_t events) noexcept {
  auto* d = static_cast<poll_desc*>(item);
  wake_batch wakes;
  context_node* watch = nullptr;
  d->mu.lock();
  const bool err = (events & (EPOLLERR | EPOLLHUP)) != 0;
  if (err || (events & EPOLLRDHUP) != 0) {
    d->hangup = true;
    watch = std::exchange(d->hangup_watch, nullptr);
  }
  if (err || (events & (EPOLLIN | EPOLLRDHUP)) != 0) {
    if (wait_node* n = d->waiters[0].claim_front()) {
      wakes.add(n);
    } else {
      d->ready[0] = true;
    }
  }
  if (err || (events & EPOLLOUT) != 0) {
    if (wait_node* n = d->waiters[1].claim_front()) {
      wakes.add(n);
    } else {
      d->ready[1] = true;
    }
  }
  d->mu.unlock();
  // Outside d->mu: cancelling takes the context's locks and wakes its waiters,
  // which may be parked in poll_wait on this very desc.
  if (watch != nullptr) {
    watch->cancel_by_owner();
    ref_counted::release(watch);
  }
}

// The I/O side of poll_wait, as a select case raced against done(ctx).
class io_case {
 public:
  using result_type = std::error_code;
  static constexpr bool is_default = false;
  [[maybe_unused]] static constexpr wait_reason reason = wait_reason::io;

  io_case(poll_desc* d, io_dir dir) noexcept : d_(d), dir_(static_cast<int>(dir)) {}
  spinlock* lock() const noexcept { return &d_->mu; }
  void prepare() const noexcept {}
  bool try_complete(result_type& out, wake_batch&) const noexcept {
    if (d_->closing) {
      out = make_error_code(errc::closed);
      return true;
    }
    if (d_->ready[dir_]) {
      d_->ready[dir_] = false;
      return true;
    }
    return false;
  }
  void enqueue(wait_node& n, result_type&) const noexcept { d_->waiters[dir_].push_back(&n); }
  void cancel(wait_node& n) const noexcept {
    d_->mu.lock();
    d_->waiters[dir_].remove(&n);
    d_->mu.unlock();
  }
  void finish(wait_node& n, result_type& out) const noexcept {
    if (n.closed) out = make_error_code(errc::closed);
  }

 private:
  poll_desc* d_;
  int dir_;
};

}  // namespace

poll_desc* poll_open(int fd) {
  scheduler* s = current_scheduler();
  if (s == nullptr) throw std::logic_error("sluice: sockets must be used inside a runtime");
  poll_desc* d = s->polls().get(s);
  d->mu.lock();
  d->fd = fd;
  d->closing = false;
  d->ready[0] = d->ready[1] = false;
  d->hangup = false;
  d->hangup_watch = nullptr;
  // Set once, on the desc's first use: a recycled desc may still get a stale
  // event for its previous fd, and netpoll reads on_ready without d->mu, so
  // writing it again (even the same value) would race with that read. A new
  // desc has never been registered with epoll, so nobody reads it yet; the
  // epoll_ctl below publishes the write to the workers' epoll_wait.
  if (d->on_ready == nullptr) d->on_ready = &on_ready;
  d->mu.unlock();
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.ptr = static_cast<poll_item*>(d);
  if (epoll_ctl(s->epoll_fd(), EPOLL_CTL_ADD, fd, &ev) != 0) {
    const int e = errno;
    s->polls().put(d);
    throw std::system_error(e, std::generic_category(), "epoll_ctl");
  }
  s->io_registered();
  return d;
}

void poll_close(poll_desc* d) noexcept {
  scheduler* s = d->sched;
  epoll_ctl(s->epoll_fd(), EPOLL_CTL_DEL, d->fd, nullptr);
  wake_batch wakes;
  d->mu.lock();
  d->closing = true;
  context_node* watch = std::exchange(d->hangup_watch, nullptr);
  for (auto& list : d->waiters) {
    while (wait_node* n = list.claim_front()) {
      n->closed = true;
      wakes.add(n);
    }
  }
  d->mu.unlock();
  if (watch != nullptr) ref_counted::release(watch);
  wakes.wake_all();
  s->io_unregistered();
  s->polls().put(d);
}

task<std::error_code> poll_wait(poll_desc* d, io_dir dir, const context& ctx) {
  io_case io(d, dir);
  auto wait = sluice::select(io, done(ctx));
  wait.set_reason(wait_reason::io);
  auto r = co_await wait;
  if (r.index() == 0) co_return r.get<0>();
  co_return ctx.err();
}

namespace {
task<std::error_code> poll_wait_until(poll_desc* d, io_dir dir, const context& ctx,
                                      clock::time_point deadline) {
  io_case io(d, dir);
  auto wait = sluice::select(io, done(ctx), at(deadline));
  wait.set_reason(wait_reason::io);
  auto r = co_await wait;
  if (r.index() == 0) co_return r.get<0>();
  if (r.index() == 2) co_return make_error_code(errc::deadline_exceeded);
  co_return ctx.err();
}
}  // namespace

task<std::error_code> poll_wait(poll_desc* d, io_dir dir, const context& ctx,
                                clock::time_point deadline) {
  // Not a coroutine: hands out the task of the form that fits.
  if (deadline == clock::time_point::max()) return poll_wait(d, dir, ctx);
  return poll_wait_until(d, dir, ctx, deadline);
}

void poll_watch_hangup(poll_desc* d, context_node* ctx_node) noexcept {
  if (ctx_node != nullptr) ctx_node->add_ref();
  d->mu.lock();
  context_node* old = std::exchange(d->hangup_watch, ctx_node);
  const bool fire = d->hangup && ctx_node != nullptr;
  if (fire) d->hangup_watch = nullptr;
  d->mu.unlock();
  if (old != nullptr) ref_counted::release(old);
  if (fire) {
    ctx_node->cancel_by_owner();
    ref_counted::release(ctx_node);
  }
}

}  // namespace sluice::detail
