// The accept loop, the connection registry and Shutdown. The protocol that
// makes shutdown exact is described in server_state.hpp; the per-connection
// work is in connection.hpp.
#include "connection.hpp"

#include <sluice/runtime.hpp>
#include <sluice/select.hpp>
#include <sluice/time.hpp>

#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <stdexcept>

namespace sluice::http {

namespace detail {

std::string_view http_date() noexcept {
  struct cache {
    std::time_t second = -1;
    char text[32] = {};
    std::size_t len = 0;
  };
  thread_local cache c;
  timespec ts{};
  // The coarse clock is a few nanoseconds (no hardware counter read) and
  // ticks every few milliseconds: enough for a header with 1 s resolution.
  clock_gettime(CLOCK_REALTIME_COARSE, &ts);
  if (ts.tv_sec != c.second) {
    std::tm tm{};
    gmtime_r(&ts.tv_sec, &tm);
    c.len = std::strftime(c.text, sizeof c.text, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    c.second = ts.tv_sec;
  }
  return {c.text, c.len};
}

namespace {
// Headers the server writes itself: a handler's copies are dropped. The
// length picks the one candidate to compare (this runs for every header of
// every response).
bool framing_header(std::string_view name) noexcept {
  switch (name.size()) {
    case 10: return iequals(name, "connection");
    case 14: return iequals(name, "content-length");
    case 17: return iequals(name, "transfer-encoding");
    default: return false;
  }
}
bool date_header(std::string_view name) noexcept { return name.size() == 4 && iequals(name, "date"); }
}  // namespace

bool bodyless(int status, bool head) noexcept {
  return head || (status >= 100 && status < 200) || status == 204 || status == 304;
}

// One resize for the whole head, then plain copies: a response head is
// written for every request, and string appends (a capacity check each) were
// most of its cost.
void write_head(std::string& out, const response& res, long long body_length, bool keep_alive,
                int request_minor) {
  const int status = res.status();
  const std::string_view reason = reason_phrase(status).empty() ? std::string_view("Status")
                                                                : reason_phrase(status);
  const std::string_view date = http_date();
  bool has_date = false;
  std::size_t need = 9 + 3 + 1 + reason.size() + 2;  // "HTTP/1.1 " NNN " " reason CRLF
  for (const auto& f : res.header()) {
    if (framing_header(f.name)) continue;
    if (!has_date && date_header(f.name)) has_date = true;
    need += f.name.size() + 2 + f.value.size() + 2;
  }
  if (!has_date) need += 6 + date.size() + 2;
  need += 16 + 20 + 2 + 19 + 24 + 2;  // Content-Length or TE, Connection, final CRLF (upper bounds)
  const std::size_t start = out.size();
  out.resize(start + need);
  char* p = out.data() + start;
  const auto put = [&p](std::string_view v) {
    std::memcpy(p, v.data(), v.size());
    p += v.size();
  };
  put("HTTP/1.1 ");
  // A status is 100..999 (response::set_status checks it).
  *p++ = static_cast<char>('0' + status / 100);
  *p++ = static_cast<char>('0' + status / 10 % 10);
  *p++ = static_cast<char>('0' + status % 10);
  *p++ = ' ';
  put(reason);
  put("\r\n");
  for (const auto& f : res.header()) {
    if (framing_header(f.name)) continue;
    put(f.name);
    put(": ");
    put(f.value);
    put("\r\n");
  }
  if (!has_date) {
    put("Date: ");
    put(date);
    put("\r\n");
  }
  const bool no_length = status < 200 || status == 204;
  if (body_length >= 0) {
    if (!no_length && status != 304) {
      put("Content-Length: ");
      p = std::to_chars(p, p + 20, static_cast<unsigned long long>(body_length)).ptr;
      put("\r\n");
    }
  } else if (request_minor >= 1) {
    put("Transfer-Encoding: chunked\r\n");
  }
  if (!keep_alive) {
    put("Connection: close\r\n");
  } else if (request_minor == 0) {
    put("Connection: keep-alive\r\n");
  }
  put("\r\n");
  out.resize(static_cast<std::size_t>(p - out.data()));
}

void write_simple(std::string& out, int status, std::string_view message, bool keep_alive,
                  const server_options& opts) {
  // The server's own answers go through the same head writer as a handler's.
  response res;
  res.set_status(status);
  if (opts.error_body) {
    opts.error_body(res, message);
    res.set_status(status);  // the hook writes the body, not the status
  } else {
    res.send(status, std::string(message) + "\n");
  }
  write_head(out, res, static_cast<long long>(res.body().size()), keep_alive, 1);
  out.append(res.body());
}

void append_chunk(std::string& out, std::string_view data) {
  char buf[20];
  const auto r = std::to_chars(buf, buf + sizeof buf, static_cast<unsigned long long>(data.size()), 16);
  out.append(buf, r.ptr).append("\r\n").append(data).append("\r\n");
}

namespace {
// Per-thread pool of active states: at most this many kept per thread, each
// with at most `max_kept_capacity` of body or output storage. An active_state
// owns all of its storage (no other pool), so destroying the pool at thread
// exit does not depend on the order thread_locals are destroyed in.
constexpr std::size_t max_pooled_states = 64;
constexpr std::size_t max_kept_capacity = 64 * 1024;
thread_local std::vector<std::unique_ptr<active_state>> tl_states;
}  // namespace

active_state* take_active_state(const parse_limits& limits) {
  auto& pool = tl_states;
  active_state* st;
  if (!pool.empty()) {
    st = pool.back().release();
    pool.pop_back();
    st->parser.reset(limits);
  } else {
    st = new active_state(limits);
  }
  st->begin = st->end = 0;
  return st;
}

void give_active_state(active_state* st) noexcept {
  std::unique_ptr<active_state> owned(st);
  st->req.finish(st->req.body().capacity() > max_kept_capacity);
  st->res.reset(st->res.body().capacity() > max_kept_capacity);
  st->out.clear();
  if (st->out.capacity() > max_kept_capacity) std::string().swap(st->out);
  auto& pool = tl_states;
  if (pool.size() >= max_pooled_states) return;
  try {
    pool.push_back(std::move(owned));
  } catch (...) {
  }
}

namespace {

// A connection's task: registers, serves, deregisters.
task<void> connection_main(std::shared_ptr<server::state> srv, net::tcp_stream stream) {
  conn_record rec;
  auto [ctx, cancel] = with_cancel(srv->hard.ctx);
  rec.cancel = cancel;
  srv->enlist(&rec);
  {
    connection<net::tcp_stream> c(stream, *srv, rec, ctx);
    co_await c.run(stream.remote_address());
  }
  stream.close();
  cancel();
  srv->delist(&rec);
  srv->open.fetch_sub(1, std::memory_order_relaxed);
  srv->leave();
}

// Over max_connections: one non-blocking write of a canned answer, then close
// (the socket's buffer is empty, so the write fits).
void reject_connection(net::tcp_stream& stream) noexcept {
  static constexpr std::string_view answer =
      "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\n"
      "Content-Type: text/plain; charset=utf-8\r\nContent-Length: 25\r\n\r\n"
      "too many open connections";
  [[maybe_unused]] const ssize_t n =
      ::send(stream.native_handle(), answer.data(), answer.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  ::shutdown(stream.native_handle(), SHUT_WR);
  stream.close();
}

bool retryable_accept_error(const std::error_code& ec) noexcept {
  if (ec.category() != std::generic_category()) return false;
  const int e = ec.value();
  return e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM || e == EPROTO || e == EPERM;
}

}  // namespace
}  // namespace detail

server::state::state(handler hh, server_options o)
    : h(std::move(hh)),
      opts(std::move(o)),
      hard(with_cancel(context::background())),
      accept(with_cancel(context::background())) {
  limits.max_header_bytes = opts.max_header_bytes;
  limits.max_headers = opts.max_headers;
  limits.max_body_bytes = opts.max_body_bytes;
}

void server::state::log(std::string_view line) const {
  if (opts.error_log) {
    opts.error_log(line);
  } else {
    std::cerr << line << '\n';
  }
}

void server::state::enlist(detail::conn_record* r) {
  std::lock_guard lock(registry_mu);
  r->next = registry;
  if (registry != nullptr) registry->prev = r;
  registry = r;
}

void server::state::delist(detail::conn_record* r) noexcept {
  std::lock_guard lock(registry_mu);
  if (r->prev != nullptr) r->prev->next = r->next;
  if (r->next != nullptr) r->next->prev = r->prev;
  if (registry == r) registry = r->next;
}

void server::state::leave() noexcept {
  if (members.fetch_sub(1, std::memory_order_seq_cst) == 1 &&
      shutting_down.load(std::memory_order_seq_cst) &&
      !all_done_closed.exchange(true, std::memory_order_acq_rel)) {
    all_done.close();
  }
}

server::server(handler h, server_options opts) {
  if (!h) throw std::invalid_argument("sluice::http::server: empty handler");
  if (opts.max_header_bytes == 0 || opts.max_headers == 0 || opts.max_connections == 0) {
    throw std::invalid_argument(
        "sluice::http::server: max_header_bytes, max_headers and max_connections must be > 0");
  }
  s_ = std::make_shared<state>(std::move(h), std::move(opts));
}

server::~server() = default;

bool server::shutting_down() const noexcept { return s_->shutting_down.load(std::memory_order_acquire); }

std::string server::address() const {
  std::lock_guard lock(s_->address_mu);
  return s_->address;
}

server_stats server::stats() const noexcept {
  server_stats st;
  st.connections_accepted = s_->accepted.load(std::memory_order_relaxed);
  st.connections_rejected = s_->rejected.load(std::memory_order_relaxed);
  st.requests = s_->requests.load(std::memory_order_relaxed);
  st.bad_requests = s_->bad_requests.load(std::memory_order_relaxed);
  st.timeouts = s_->timeouts.load(std::memory_order_relaxed);
  const auto clamp = [](std::int64_t v) { return static_cast<std::size_t>(v < 0 ? 0 : v); };
  st.connections_open = clamp(s_->open.load(std::memory_order_relaxed));
  st.connections_idle = clamp(s_->idle.load(std::memory_order_relaxed));
  st.requests_in_flight = clamp(s_->in_flight.load(std::memory_order_relaxed));
  return st;
}

task<std::error_code> server::serve(net::tcp_listener ln) {
  std::shared_ptr<state> s = s_;
  s->members.fetch_add(1, std::memory_order_seq_cst);
  if (s->shutting_down.load(std::memory_order_seq_cst)) {
    s->leave();
    co_return make_error_code(errc::closed);
  }
  {
    std::lock_guard lock(s->address_mu);
    s->address = ln.local_address();
  }
  std::error_code result;
  auto backoff = std::chrono::milliseconds(5);
  for (;;) {
    auto [stream, ec] = co_await ln.accept(s->accept.ctx);
    if (ec) {
      if (s->accept.ctx.err()) {
        result = make_error_code(errc::closed);
        break;
      }
      if (detail::retryable_accept_error(ec)) {
        // Out of descriptors or memory: Go's answer, back off and retry.
        s->log("sluice::http: accept: " + ec.message() + "; retrying");
        co_await select(done(s->accept.ctx), after(backoff));
        backoff = std::min<std::chrono::milliseconds>(backoff * 2, std::chrono::seconds(1));
        continue;
      }
      result = ec;
      break;
    }
    backoff = std::chrono::milliseconds(5);
    s->accepted.fetch_add(1, std::memory_order_relaxed);
    if (static_cast<std::size_t>(s->open.load(std::memory_order_relaxed)) >= s->opts.max_connections) {
      s->rejected.fetch_add(1, std::memory_order_relaxed);
      detail::reject_connection(stream);
      continue;
    }
    s->members.fetch_add(1, std::memory_order_seq_cst);
    if (s->shutting_down.load(std::memory_order_seq_cst)) {
      // Accepted just as shutdown began: not served (the client sees a close).
      s->leave();
      result = make_error_code(errc::closed);
      break;
    }
    s->open.fetch_add(1, std::memory_order_relaxed);
    go(detail::connection_main, s, std::move(stream));
  }
  ln.close();
  s->leave();
  co_return result;
}

task<std::error_code> server::shutdown(const context& ctx) {
  std::shared_ptr<state> s = s_;
  s->shutting_down.store(true, std::memory_order_seq_cst);
  s->accept.cancel();
  {
    std::lock_guard lock(s->registry_mu);
    for (detail::conn_record* r = s->registry; r != nullptr; r = r->next) {
      auto expected = detail::conn_phase::idle;
      if (r->phase.compare_exchange_strong(expected, detail::conn_phase::closing,
                                           std::memory_order_seq_cst)) {
        r->cancel();
      }
    }
  }
  if (s->members.load(std::memory_order_seq_cst) == 0) {
    if (!s->all_done_closed.exchange(true, std::memory_order_acq_rel)) s->all_done.close();
  }
  auto r = co_await select(recv(s->all_done), done(ctx));
  if (r.index() == 0) co_return std::error_code();
  // The deadline passed: cancel every request and connection, then wait for
  // the tasks to notice (their I/O ends at once; a handler that ignores its
  // context is waited for, as the caller must not free what it uses).
  s->hard.cancel();
  co_await s->all_done.recv();
  co_return ctx.err();
}

}  // namespace sluice::http
