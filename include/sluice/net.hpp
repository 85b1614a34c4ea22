// TCP on the netpoller: listen, accept, connect, read, write, shutdown, close.
//
// Sockets are non-blocking and registered with the runtime's epoll instance; a
// task that must wait parks until the kernel reports readiness, so no thread is
// ever blocked in I/O and there is no thread per connection. Every wait takes a
// context: cancelling it (or passing its deadline) ends the wait with the
// context's error. Go: package net (net.Listen, net.Dial, net.Conn).
//
//   auto ln = sluice::net::tcp_listener::listen("127.0.0.1:0");
//   for (;;) {
//     auto [conn, ec] = co_await ln.accept(ctx);
//     if (ec) break;                              // ctx cancelled or listener closed
//     sluice::go(serve, std::move(conn));
//   }
//
// Errors of blocking calls are std::error_code values: sluice::errc::canceled /
// deadline_exceeded (context), sluice::errc::closed (closed while waiting), or
// a std::generic_category() errno (connection refused, reset, ...).
// Sockets must be created and used inside a runtime.
#pragma once

#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/task.hpp>

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>

namespace sluice::net {

namespace detail_net {
struct socket_state;
}

// The outcome of a read or write: how many bytes moved, and why it stopped.
// A read with bytes == 0 and no error is end of stream. Go: (n int, err error).
struct io_result {
  std::size_t bytes = 0;
  std::error_code error;
};

// A connected TCP socket. Move-only; closes on destruction. One reader and one
// writer may use it concurrently (from two tasks). Go: net.TCPConn.
class tcp_stream {
 public:
  tcp_stream() noexcept = default;
  tcp_stream(tcp_stream&& o) noexcept;
  tcp_stream& operator=(tcp_stream&& o) noexcept;
  tcp_stream(const tcp_stream&) = delete;
  tcp_stream& operator=(const tcp_stream&) = delete;
  ~tcp_stream();

  // Connects to "host:port" (an IPv4 literal, "[IPv6]" literal, or "localhost").
  // Go: net.DialContext(ctx, "tcp", addr).
  struct connect_result;
  static task<connect_result> connect(const context& ctx, std::string_view address);

  // Takes ownership of `fd`, a connected stream socket made elsewhere (a
  // socketpair end, a socket inherited from a supervisor): makes it
  // non-blocking and close-on-exec and registers it with the netpoller.
  // Throws std::invalid_argument for a negative fd or one that is not a
  // stream socket (the fd is closed then too). Go: net.FileConn.
  static tcp_stream from_fd(int fd);

  // Reads what is available (at least 1 byte unless end of stream or error).
  // Go: conn.Read.
  task<io_result> read(const context& ctx, std::span<char> buffer);
  // Writes all of `data` unless an error or the context stops it. Go: conn.Write.
  task<io_result> write(const context& ctx, std::string_view data);
  // read/write that also give up at `deadline` with errc::deadline_exceeded
  // (bytes already moved are reported). Go: SetReadDeadline / SetWriteDeadline.
  task<io_result> read(const context& ctx, std::span<char> buffer, clock::time_point deadline);
  task<io_result> write(const context& ctx, std::string_view data, clock::time_point deadline);

  // One non-blocking attempt each, for callers that want to skip a task when
  // the kernel is ready (a read that finds data, a write that fits in the
  // socket buffer). try_read: nullopt if nothing is there yet. try_write: the
  // bytes taken (maybe fewer than data.size() when the buffer is full; then
  // call write() for the rest). Go: no equivalent (the runtime does this).
  std::optional<io_result> try_read(std::span<char> buffer) noexcept;
  io_result try_write(std::string_view data) noexcept;

  // Waits until the socket may be readable (a read may still find nothing:
  // callers read and wait again), without holding a buffer meanwhile. The
  // error is the context's, errc::deadline_exceeded, or errc::closed.
  // Readiness is edge-triggered: call it only after a read that returned
  // less than it asked for (or before the first read).
  task<std::error_code> wait_readable(const context& ctx,
                                      clock::time_point deadline = clock::time_point::max());

  // Calls `cancel` once the peer hangs up (half-closes, resets, or the socket
  // fails) — at once if that was already reported — so work done on the
  // peer's behalf stops while nobody is reading the socket. One watch at a
  // time: a new call replaces the previous one; an empty cancel_func clears it.
  // Go: net/http's background read that cancels a request's context.
  void cancel_on_hangup(const cancel_func& cancel) noexcept;

  // Half-close: no more writes; the peer reads end of stream. Go: CloseWrite.
  std::error_code shutdown_write() noexcept;
  // Closes the socket; pending reads and writes end with errc::closed. Idempotent.
  void close() noexcept;
  bool is_open() const noexcept { return s_ != nullptr; }
  int native_handle() const noexcept;
  // "ip:port" of the peer / of this end. Go: RemoteAddr / LocalAddr.
  std::string remote_address() const;
  std::string local_address() const;
  // Disables Nagle's algorithm (on by default for new streams, as in Go).
  std::error_code set_no_delay(bool on) noexcept;

  // Internal.
  explicit tcp_stream(detail_net::socket_state* s) noexcept : s_(s) {}

 private:
  detail_net::socket_state* s_ = nullptr;
};

struct tcp_stream::connect_result {
  tcp_stream stream;
  std::error_code error;
};

// A listening TCP socket. Go: net.TCPListener.
class tcp_listener {
 public:
  tcp_listener() noexcept = default;
  tcp_listener(tcp_listener&& o) noexcept;
  tcp_listener& operator=(tcp_listener&& o) noexcept;
  tcp_listener(const tcp_listener&) = delete;
  tcp_listener& operator=(const tcp_listener&) = delete;
  ~tcp_listener();

  // Binds and listens on "host:port" (port 0 picks a free one; host may be empty
  // for all interfaces). Throws std::invalid_argument for a malformed address,
  // std::system_error if the socket cannot be bound. Go: net.Listen("tcp", addr).
  static tcp_listener listen(std::string_view address, int backlog = 1024);

  struct accept_result {
    tcp_stream stream;
    std::error_code error;
  };
  // Waits for the next connection. Go: ln.Accept().
  task<accept_result> accept(const context& ctx);

  // The bound "ip:port" (useful after listening on port 0). Go: ln.Addr().
  std::string local_address() const;
  // Stops listening; a pending accept ends with errc::closed. Idempotent.
  void close() noexcept;
  bool is_open() const noexcept { return s_ != nullptr; }

 private:
  explicit tcp_listener(detail_net::socket_state* s) noexcept : s_(s) {}
  detail_net::socket_state* s_ = nullptr;
};

}  // namespace sluice::net
