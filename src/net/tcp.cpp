// TCP sockets on the netpoller. Each socket_state pairs an fd with its poll_desc.
// The pattern of every blocking call: try the syscall; on EAGAIN park in
// poll_wait (which a context can end); retry. Readiness is edge-triggered, so a
// spurious wake-up only costs one extra EAGAIN.
#include "../runtime/netpoll.hpp"

#include <sluice/net.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <stdexcept>
#include <string>

namespace sluice::net {
namespace detail_net {

struct socket_state {
  int fd = -1;
  sluice::detail::poll_desc* pd = nullptr;
};

namespace {

std::error_code last_error() { return {errno, std::generic_category()}; }

// Parses "host:port" into a sockaddr. Accepts IPv4 literals, "[v6]" literals,
// "localhost" and an empty host (any address).
sockaddr_storage parse_address(std::string_view address, socklen_t& len) {
  const auto bad = [&](const char* why) {
    std::string msg = "sluice::net: bad address \"";
    msg.append(address).append("\": ").append(why);
    return std::invalid_argument(msg);
  };
  const std::size_t colon = address.rfind(':');
  if (colon == std::string_view::npos) throw bad("expected host:port");
  std::string host(address.substr(0, colon));
  const std::string_view port_text = address.substr(colon + 1);
  unsigned port = 0;
  const auto [end, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535 ||
      port_text.empty()) {
    throw bad("port must be a number in 0..65535");
  }
  sockaddr_storage ss{};
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(static_cast<std::uint16_t>(port));
    if (inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &a6->sin6_addr) != 1) {
      throw bad("invalid IPv6 address");
    }
    len = sizeof(sockaddr_in6);
    return ss;
  }
  if (host == "localhost") host = "127.0.0.1";
  if (host.empty()) host = "0.0.0.0";
  auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
  a4->sin_family = AF_INET;
  a4->sin_port = htons(static_cast<std::uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) != 1) {
    throw bad("host must be an IP literal or localhost");
  }
  len = sizeof(sockaddr_in);
  return ss;
}

std::string format_address(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET6) {
    const auto* a6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    inet_ntop(AF_INET6, &a6->sin6_addr, buf, sizeof buf);
    std::string out = "[";
    out.append(buf).append("]:").append(std::to_string(ntohs(a6->sin6_port)));
    return out;
  }
  const auto* a4 = reinterpret_cast<const sockaddr_in*>(&ss);
  inet_ntop(AF_INET, &a4->sin_addr, buf, sizeof buf);
  std::string out(buf);
  out.append(":").append(std::to_string(ntohs(a4->sin_port)));
  return out;
}

// "ip:port" of the socket's peer or own end; "" if the socket has none.
std::string address_of(const socket_state* s, bool peer) {
  if (s == nullptr) return {};
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  if ((peer ? getpeername(s->fd, sa, &len) : getsockname(s->fd, sa, &len)) != 0) return {};
  return format_address(ss);
}

socket_state* adopt(int fd) {
  auto* s = new socket_state();
  s->fd = fd;
  try {
    s->pd = sluice::detail::poll_open(fd);
  } catch (...) {
    ::close(fd);
    delete s;
    throw;
  }
  return s;
}

void destroy(socket_state* s) noexcept {
  if (s == nullptr) return;
  sluice::detail::poll_close(s->pd);
  ::close(s->fd);
  delete s;
}

}  // namespace
}  // namespace detail_net

using detail_net::socket_state;
using sluice::detail::io_dir;
using sluice::detail::poll_wait;

// ---- tcp_stream ---------------------------------------------------------------------

tcp_stream::tcp_stream(tcp_stream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
tcp_stream& tcp_stream::operator=(tcp_stream&& o) noexcept {
  if (this != &o) {
    close();
    s_ = std::exchange(o.s_, nullptr);
  }
  return *this;
}
tcp_stream::~tcp_stream() { close(); }

void tcp_stream::close() noexcept { detail_net::destroy(std::exchange(s_, nullptr)); }

int tcp_stream::native_handle() const noexcept { return s_ != nullptr ? s_->fd : -1; }

tcp_stream tcp_stream::from_fd(int fd) {
  if (fd < 0) throw std::invalid_argument("sluice::net::tcp_stream::from_fd: negative fd");
  int type = 0;
  socklen_t len = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0 || type != SOCK_STREAM) {
    ::close(fd);
    throw std::invalid_argument("sluice::net::tcp_stream::from_fd: not a stream socket");
  }
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0 || ::fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0 || ::fcntl(fd, F_SETFD, FD_CLOEXEC) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::system_error(e, std::generic_category(), "sluice::net::tcp_stream::from_fd: fcntl");
  }
  return tcp_stream(detail_net::adopt(fd));
}

task<tcp_stream::connect_result> tcp_stream::connect(const context& ctx,
                                                     std::string_view address) {
  socklen_t len = 0;
  const sockaddr_storage ss = detail_net::parse_address(address, len);
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) co_return connect_result{tcp_stream(), detail_net::last_error()};
  tcp_stream stream(detail_net::adopt(fd));
  if (::connect(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    if (errno != EINPROGRESS) co_return connect_result{tcp_stream(), detail_net::last_error()};
    for (;;) {
      const std::error_code ec = co_await poll_wait(stream.s_->pd, io_dir::write, ctx);
      if (ec) co_return connect_result{tcp_stream(), ec};
      int err = 0;
      socklen_t errlen = sizeof err;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &errlen) != 0) {
        co_return connect_result{tcp_stream(), detail_net::last_error()};
      }
      if (err == 0) {
        // A spurious wake-up before the handshake finished shows as ENOTCONN.
        sockaddr_storage peer{};
        socklen_t plen = sizeof peer;
        if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) break;
        if (errno != ENOTCONN) co_return connect_result{tcp_stream(), detail_net::last_error()};
        continue;
      }
      co_return connect_result{tcp_stream(), std::error_code(err, std::generic_category())};
    }
  }
  stream.set_no_delay(true);
  co_return connect_result{std::move(stream), {}};
}

// The forms without a deadline forward the task itself (no coroutine frame of
// their own: a parked connection holds one frame less).
task<io_result> tcp_stream::read(const context& ctx, std::span<char> buffer) {
  return read(ctx, buffer, clock::time_point::max());
}

task<io_result> tcp_stream::read(const context& ctx, std::span<char> buffer,
                                 clock::time_point deadline) {
  for (;;) {
    if (std::optional<io_result> r = try_read(buffer)) co_return *r;
    const std::error_code ec = co_await poll_wait(s_->pd, io_dir::read, ctx, deadline);
    if (ec) co_return io_result{0, ec};
    if (s_ == nullptr) co_return io_result{0, make_error_code(errc::closed)};
  }
}

task<io_result> tcp_stream::write(const context& ctx, std::string_view data) {
  return write(ctx, data, clock::time_point::max());
}

task<io_result> tcp_stream::write(const context& ctx, std::string_view data,
                                  clock::time_point deadline) {
  std::size_t done = 0;
  for (;;) {
    const io_result r = try_write(data.substr(done));
    done += r.bytes;
    if (r.error || done == data.size()) co_return io_result{done, r.error};
    const std::error_code ec = co_await poll_wait(s_->pd, io_dir::write, ctx, deadline);
    if (ec) co_return io_result{done, ec};
    if (s_ == nullptr) co_return io_result{done, make_error_code(errc::closed)};
  }
}

namespace {
task<std::error_code> closed_error() { co_return make_error_code(errc::closed); }
}  // namespace

task<std::error_code> tcp_stream::wait_readable(const context& ctx, clock::time_point deadline) {
  if (s_ == nullptr) return closed_error();
  return poll_wait(s_->pd, io_dir::read, ctx, deadline);
}

void tcp_stream::cancel_on_hangup(const cancel_func& cancel) noexcept {
  if (s_ == nullptr) return;
  sluice::detail::poll_watch_hangup(s_->pd, cancel.node());
}

std::optional<io_result> tcp_stream::try_read(std::span<char> buffer) noexcept {
  if (s_ == nullptr) return io_result{0, make_error_code(errc::closed)};
  if (buffer.empty()) return io_result{};
  for (;;) {
    const ssize_t n = ::recv(s_->fd, buffer.data(), buffer.size(), 0);
    if (n >= 0) return io_result{static_cast<std::size_t>(n), {}};
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return std::nullopt;
    return io_result{0, detail_net::last_error()};
  }
}

io_result tcp_stream::try_write(std::string_view data) noexcept {
  if (s_ == nullptr) return io_result{0, make_error_code(errc::closed)};
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::send(s_->fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n >= 0) {
      done += static_cast<std::size_t>(n);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) break;
    return io_result{done, detail_net::last_error()};
  }
  return io_result{done, {}};
}

std::error_code tcp_stream::shutdown_write() noexcept {
  if (s_ == nullptr) return make_error_code(errc::closed);
  if (::shutdown(s_->fd, SHUT_WR) != 0) return detail_net::last_error();
  return {};
}

std::error_code tcp_stream::set_no_delay(bool on) noexcept {
  if (s_ == nullptr) return make_error_code(errc::closed);
  const int v = on ? 1 : 0;
  if (setsockopt(s_->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) != 0) {
    return detail_net::last_error();
  }
  return {};
}

std::string tcp_stream::remote_address() const { return detail_net::address_of(s_, true); }

std::string tcp_stream::local_address() const { return detail_net::address_of(s_, false); }

// ---- tcp_listener ---------------------------------------------------------------------

tcp_listener::tcp_listener(tcp_listener&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
tcp_listener& tcp_listener::operator=(tcp_listener&& o) noexcept {
  if (this != &o) {
    close();
    s_ = std::exchange(o.s_, nullptr);
  }
  return *this;
}
tcp_listener::~tcp_listener() { close(); }

void tcp_listener::close() noexcept { detail_net::destroy(std::exchange(s_, nullptr)); }

tcp_listener tcp_listener::listen(std::string_view address, int backlog) {
  if (backlog <= 0) throw std::invalid_argument("sluice::net::tcp_listener: backlog must be > 0");
  socklen_t len = 0;
  const sockaddr_storage ss = detail_net::parse_address(address, len);
  const int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw std::system_error(errno, std::generic_category(), "socket");
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0 || ::listen(fd, backlog) != 0) {
    const int e = errno;
    ::close(fd);
    throw std::system_error(e, std::generic_category(), "listen on " + std::string(address));
  }
  return tcp_listener(detail_net::adopt(fd));
}

task<tcp_listener::accept_result> tcp_listener::accept(const context& ctx) {
  for (;;) {
    if (s_ == nullptr) co_return accept_result{tcp_stream(), make_error_code(errc::closed)};
    const int fd = ::accept4(s_->fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      tcp_stream stream(detail_net::adopt(fd));
      stream.set_no_delay(true);
      co_return accept_result{std::move(stream), {}};
    }
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      co_return accept_result{tcp_stream(), detail_net::last_error()};
    }
    const std::error_code ec = co_await poll_wait(s_->pd, io_dir::read, ctx);
    if (ec) co_return accept_result{tcp_stream(), ec};
  }
}

std::string tcp_listener::local_address() const { return detail_net::address_of(s_, false); }

}  // namespace sluice::net
