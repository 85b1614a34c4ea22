// chan<T>: a typed conduit between tasks, with Go's channel semantics.
//
// A chan is a cheap handle: copies share one channel, and every operation is a
// const member. Capacity 0 is a rendezvous (a send completes only when a
// receiver takes the value); capacity n buffers n values in FIFO order.
// Go: `make(chan T, n)`.
//
//   sluice::chan<int> ch(16);
//   sluice::go(producer, ch);                 // co_await ch.send(v) ... ch.close()
//   while (auto v = co_await ch.recv()) use(*v);   // nullopt once closed and drained
//
// | operation     | open, ready        | open, not ready | closed                         |
// |---------------|--------------------|-----------------|--------------------------------|
// | send(v)       | completes          | suspends        | throws channel_closed          |
// | recv()        | value              | suspends        | buffered values, then nullopt  |
// | try_send(v)   | true               | false           | throws channel_closed          |
// | try_recv()    | value              | nullopt         | buffered values, then nullopt  |
// | close()       | wakes every waiter: receivers get nullopt, senders throw   | throws |
//
// Channels also work outside a runtime for their non-blocking calls (try_send,
// try_recv, close, size, capacity).
#pragma once

#include <sluice/detail/ref_counted.hpp>
#include <sluice/detail/select_core.hpp>
#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/task_record.hpp>
#include <sluice/detail/waiter.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <variant>

namespace sluice {

// Thrown by a send on a closed channel and by closing a channel twice (Go panics).
class channel_closed : public std::logic_error {
 public:
  explicit channel_closed(const char* what = "sluice: send on closed channel")
      : std::logic_error(what) {}
};

namespace detail {

void throw_bad_capacity(std::int64_t capacity);

// Shared state of a channel.
// Invariants (guarded by mu):
//   * count > 0 implies recvq is empty (a receiver would have taken a value);
//   * count < cap implies sendq is empty (a sender would have buffered);
//   * for an unbuffered channel at most one of recvq/sendq holds unclaimed
//     nodes, except that both may hold nodes of blocked selects whose waiters
//     another party already claimed (skipped by claim_front);
//   * closed implies both queues are empty.
template <class T>
class chan_state : public ref_counted {
 public:
  static constexpr std::int64_t max_capacity = std::int64_t{1} << 30;

  explicit chan_state(std::int64_t capacity) {
    if (capacity < 0 || capacity > max_capacity) throw_bad_capacity(capacity);
    cap_ = static_cast<std::size_t>(capacity);
    if (cap_ != 0) buf_ = std::allocator<T>().allocate(cap_);
  }
  chan_state(const chan_state&) = delete;
  chan_state& operator=(const chan_state&) = delete;
  ~chan_state() {
    while (count() != 0) pop_buffer();
    if (buf_ != nullptr) std::allocator<T>().deallocate(buf_, cap_);
  }

  // 64 bytes of padding keep the lock off the line with the buffer's indices
  // that the holder updates: a task spinning on the lock (another core's
  // sender or receiver) then does not keep pulling that line away. chan_mpmc
  // spent 45% in lock_slow with the two on one line. Padding rather than
  // alignas(64), so a channel still comes from plain operator new.
  mutable spinlock mu;
  char lock_line_pad_[64];
  wait_list recvq;
  wait_list sendq;

  std::size_t capacity() const noexcept { return cap_; }
  std::size_t size() const noexcept {
    mu.lock();
    const std::size_t n = count();
    mu.unlock();
    return n;
  }
  bool closed_locked() const noexcept { return closed_.load(std::memory_order_relaxed); }

  // Lock-free hints for select's fast path: "a receive (send) may complete now".
  // No false negatives except staleness (the same as the case becoming ready
  // just after select looked); false positives are re-checked under the lock.
  bool recv_hint() const noexcept {
    return count_.load(std::memory_order_relaxed) != 0 || sendq.maybe_nonempty() ||
           closed_.load(std::memory_order_relaxed);
  }
  bool send_hint() const noexcept {
    return count_.load(std::memory_order_relaxed) < cap_ || recvq.maybe_nonempty() ||
           closed_.load(std::memory_order_relaxed);
  }

  // Requires mu. Completes a send of `v` if a receiver waits or there is room.
  // Throws channel_closed (with mu still held: callers unlock in their handler).
  bool try_send_locked(T& v, wake_batch& wakes) {
    if (closed_locked()) throw channel_closed();
    if (wait_node* r = recvq.claim_front()) {
      static_cast<std::optional<T>*>(r->slot)->emplace(std::move(v));
      wakes.add(r);
      return true;
    }
    if (count() < cap_) {
      push_buffer(std::move(v));
      return true;
    }
    return false;
  }

  // Requires mu. Completes a receive into `out` (nullopt when closed and empty).
  bool try_recv_locked(std::optional<T>& out, wake_batch& wakes) {
    if (count() != 0) {
      out.emplace(std::move(buf_[head_]));
      pop_buffer();
      // Room was made: move one blocked sender's value into the buffer.
      if (wait_node* s = sendq.claim_front()) {
        push_buffer(std::move(*static_cast<T*>(s->slot)));
        wakes.add(s);
      }
      return true;
    }
    if (wait_node* s = sendq.claim_front()) {
      out.emplace(std::move(*static_cast<T*>(s->slot)));
      wakes.add(s);
      return true;
    }
    if (closed_locked()) {
      out.reset();
      return true;
    }
    return false;
  }

  // try_send_locked / try_recv_locked under the lock (released on an exception).
  bool try_send(T& v, wake_batch& wakes) {
    mu.lock();
    try {
      const bool done = try_send_locked(v, wakes);
      mu.unlock();
      return done;
    } catch (...) {
      mu.unlock();
      throw;
    }
  }
  bool try_recv(std::optional<T>& out, wake_batch& wakes) {
    mu.lock();
    const bool done = try_recv_locked(out, wakes);
    mu.unlock();
    return done;
  }

  void close() {
    wake_batch wakes;
    mu.lock();
    if (closed_locked()) {
      mu.unlock();
      throw channel_closed("sluice: close of closed channel");
    }
    closed_.store(true, std::memory_order_relaxed);
    while (wait_node* r = recvq.claim_front()) {
      r->closed = true;
      wakes.add(r);
    }
    while (wait_node* s = sendq.claim_front()) {
      s->closed = true;
      wakes.add(s);
    }
    mu.unlock();
  }

  void remove_waiter(wait_node& n, bool sender) noexcept {
    mu.lock();
    (sender ? sendq : recvq).remove(&n);
    mu.unlock();
  }

 private:
  void push_buffer(T&& v) {
    std::size_t tail = head_ + count();
    if (tail >= cap_) tail -= cap_;
    std::construct_at(buf_ + tail, std::move(v));
    count_.store(count() + 1, std::memory_order_relaxed);
  }
  void pop_buffer() noexcept {
    std::destroy_at(buf_ + head_);
    if (++head_ == cap_) head_ = 0;
    count_.store(count() - 1, std::memory_order_relaxed);
  }

  T* buf_ = nullptr;
  std::size_t cap_ = 0;
  std::size_t head_ = 0;
  // Written only under mu; atomic so select's hints may read them without it.
  std::size_t count() const noexcept { return count_.load(std::memory_order_relaxed); }
  std::atomic<std::size_t> count_{0};
  std::atomic<bool> closed_{false};
};

}  // namespace detail

// recv(ch) as a select case. Its value is std::optional<T> (nullopt: closed).
template <class T>
class recv_case {
 public:
  using result_type = std::optional<T>;
  static constexpr bool is_default = false;
  static constexpr detail::wait_reason reason = detail::wait_reason::chan_recv;

  explicit recv_case(detail::chan_state<T>* s) noexcept : s_(s) {}
  detail::spinlock* lock() const noexcept { return &s_->mu; }
  void prepare() const noexcept {}
  bool try_complete(result_type& out, detail::wake_batch& wakes) {
    return s_->try_recv_locked(out, wakes);
  }
  void enqueue(detail::wait_node& n, result_type& out) noexcept {
    n.slot = &out;
    s_->recvq.push_back(&n);
  }
  void cancel(detail::wait_node& n) noexcept { s_->remove_waiter(n, false); }
  void finish(detail::wait_node&, result_type&) const noexcept {}
  // Select's fast path: completes under this channel's lock alone when the
  // lock-free hint says it can.
  bool try_fast(result_type& out, detail::wake_batch& wakes) {
    return s_->recv_hint() && s_->try_recv(out, wakes);
  }

 private:
  detail::chan_state<T>* s_;
};

// send(ch, v) as a select case. Throws channel_closed if the channel is closed.
template <class T>
class send_case {
 public:
  using result_type = std::monostate;
  static constexpr bool is_default = false;
  static constexpr detail::wait_reason reason = detail::wait_reason::chan_send;

  send_case(detail::chan_state<T>* s, T value) : s_(s), value_(std::move(value)) {}
  detail::spinlock* lock() const noexcept { return &s_->mu; }
  void prepare() const noexcept {}
  bool try_complete(result_type&, detail::wake_batch& wakes) {
    return s_->try_send_locked(value_, wakes);
  }
  void enqueue(detail::wait_node& n, result_type&) noexcept {
    n.slot = &value_;
    s_->sendq.push_back(&n);
  }
  void cancel(detail::wait_node& n) noexcept { s_->remove_waiter(n, true); }
  void finish(detail::wait_node& n, result_type&) const {
    if (n.closed) throw channel_closed();
  }
  bool try_fast(result_type&, detail::wake_batch& wakes) {
    return s_->send_hint() && s_->try_send(value_, wakes);
  }

 private:
  detail::chan_state<T>* s_;
  T value_;
};

template <class T>
class chan {
 public:
  using value_type = T;

  // A channel with `capacity` buffered slots (0: unbuffered). Throws
  // std::invalid_argument for a negative capacity or one over 2^30.
  explicit chan(std::int64_t capacity = 0)
      : s_(detail::ref_ptr<detail::chan_state<T>>::adopt(new detail::chan_state<T>(capacity))) {}

  // ---- blocking operations (awaitables) ----

  class recv_awaiter {
   public:
    explicit recv_awaiter(detail::chan_state<T>* s) noexcept : s_(s) {}
    recv_awaiter(const recv_awaiter&) = delete;
    recv_awaiter& operator=(const recv_awaiter&) = delete;
    ~recv_awaiter() {
      if (node_.linked) s_->remove_waiter(node_, false);  // frame destroyed while parked
    }
    bool await_ready() {
      detail::wake_batch wakes;
      return s_->try_recv(result_, wakes);
    }
    [[gnu::noinline]] bool await_suspend(std::coroutine_handle<> h) {
      detail::task_record* t = detail::require_task("chan::recv");
      detail::wake_batch wakes;
      s_->mu.lock();
      if (s_->try_recv_locked(result_, wakes)) {
        s_->mu.unlock();
        return false;
      }
      waiter_.task = t;
      node_.owner = &waiter_;
      node_.slot = &result_;
      detail::prepare_park(t, h, detail::wait_reason::chan_recv);
      s_->recvq.push_back(&node_);
      s_->mu.unlock();  // publishes the parked task: touch nothing after this
      return true;
    }
    std::optional<T> await_resume() noexcept { return std::move(result_); }

   private:
    detail::chan_state<T>* s_;
    std::optional<T> result_;
    detail::waiter waiter_;
    detail::wait_node node_;
  };

  class send_awaiter {
   public:
    send_awaiter(detail::chan_state<T>* s, T v) : s_(s), value_(std::move(v)) {}
    send_awaiter(const send_awaiter&) = delete;
    send_awaiter& operator=(const send_awaiter&) = delete;
    ~send_awaiter() {
      if (node_.linked) s_->remove_waiter(node_, true);
    }
    bool await_ready() {
      detail::wake_batch wakes;
      return s_->try_send(value_, wakes);
    }
    [[gnu::noinline]] bool await_suspend(std::coroutine_handle<> h) {
      detail::task_record* t = detail::require_task("chan::send");
      detail::wake_batch wakes;
      s_->mu.lock();
      try {
        if (s_->try_send_locked(value_, wakes)) {
          s_->mu.unlock();
          return false;
        }
      } catch (...) {
        s_->mu.unlock();
        throw;
      }
      waiter_.task = t;
      node_.owner = &waiter_;
      node_.slot = &value_;
      detail::prepare_park(t, h, detail::wait_reason::chan_send);
      s_->sendq.push_back(&node_);
      s_->mu.unlock();  // publishes the parked task: touch nothing after this
      return true;
    }
    void await_resume() const {
      if (node_.closed) throw channel_closed();
    }

   private:
    detail::chan_state<T>* s_;
    T value_;
    detail::waiter waiter_;
    detail::wait_node node_;
  };

  // Receives a value; suspends until one is available. nullopt once the channel
  // is closed and drained. Go: `v, ok := <-ch`.
  recv_awaiter recv() const noexcept { return recv_awaiter(s_.get()); }

  // Sends a value; suspends until a receiver or a buffer slot takes it. The
  // awaited expression throws channel_closed if the channel is (or gets) closed.
  // Go: `ch <- v`.
  send_awaiter send(T value) const { return send_awaiter(s_.get(), std::move(value)); }

  // ---- non-blocking operations (also outside a runtime) ----

  // Sends if a receiver waits or a slot is free; false otherwise. Throws
  // channel_closed on a closed channel. Go: select with a default case.
  bool try_send(T value) const {
    detail::wake_batch wakes;
    return s_->try_send(value, wakes);
  }

  // Receives if a value is ready; nullopt otherwise (or when closed and empty).
  std::optional<T> try_recv() const {
    detail::wake_batch wakes;
    std::optional<T> out;
    s_->try_recv(out, wakes);
    return out;
  }

  // Closes the channel: receivers drain the buffer then get nullopt; blocked and
  // later senders throw channel_closed. Closing twice throws. Go: close(ch).
  void close() const { s_->close(); }

  // True once close() was called.
  bool closed() const noexcept {
    s_->mu.lock();
    const bool c = s_->closed_locked();
    s_->mu.unlock();
    return c;
  }

  // Buffered values now. Go: len(ch).
  std::size_t size() const noexcept { return s_->size(); }
  // Buffer capacity. Go: cap(ch).
  std::size_t capacity() const noexcept { return s_->capacity(); }

  friend bool operator==(const chan& a, const chan& b) noexcept { return a.s_.get() == b.s_.get(); }

  // Internal: the shared state, for select cases.
  detail::chan_state<T>* state() const noexcept { return s_.get(); }

 private:
  detail::ref_ptr<detail::chan_state<T>> s_;
};

// Select case builders. Go: `case v, ok := <-ch:` and `case ch <- v:`.
template <class T>
recv_case<T> recv(const chan<T>& ch) noexcept {
  return recv_case<T>(ch.state());
}
template <class T, class U>
send_case<T> send(const chan<T>& ch, U&& value) {
  return send_case<T>(ch.state(), T(std::forward<U>(value)));
}

}  // namespace sluice
