// Internal: one HTTP/1.1 connection, from its first byte to its close.
//
// A connection is a loop over requests, run by its own task:
//
//   wait (idle) -> read + parse headers -> [100 Continue]
//   -> read + parse body -> handler -> serialize response -> ... -> wait
//
// Idle costs little: everything a request needs (parser, request and
// response objects, read and write buffers) is an active_state taken from a
// per-thread pool when the first byte arrives and given back when the
// connection has answered everything and its input is drained. While it
// waits, a connection holds its socket, its context, its task's frames and
// one readiness wait — no buffer.
//
// Responses are appended to an output buffer that is written when no more
// input is buffered (so a pipelined batch is answered with one write), when
// it grows large, or when the connection must close. Errors the server
// answers itself (400, 413, 417, 431, 505) close the connection after a
// lingering shutdown: we stop writing, then read and discard for a moment so
// the client sees our answer instead of a reset.
//
// The transport is a template parameter so the fuzzer and the unit tests can
// drive the same code with bytes in memory; the server uses net::tcp_stream.
#pragma once

#include "parser.hpp"
#include "server_state.hpp"

#include <sluice/net.hpp>
#include <sluice/task.hpp>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

namespace sluice::http::detail {

// "Tue, 01 Dec 2026 09:54:50 GMT", refreshed once a second per thread.
std::string_view http_date() noexcept;

// Appends "HTTP/1.1 <status> <reason>\r\n", the handler's headers, Date, and
// the framing headers; `body_length` < 0 means chunked (HTTP/1.1) or
// close-delimited (HTTP/1.0) — the streaming case.
void write_head(std::string& out, const response& res, long long body_length, bool keep_alive,
                int request_minor);
// Appends a complete canned answer (status, body, Connection: close unless
// keep_alive); the body is `message` as text, or what opts.error_body writes.
void write_simple(std::string& out, int status, std::string_view message, bool keep_alive,
                  const server_options& opts);
// Whether a response with this status (to this method) has no body.
bool bodyless(int status, bool head) noexcept;
// "<hex>\r\n<data>\r\n"
void append_chunk(std::string& out, std::string_view data);

// An awaitable that is either a value already there or a task to run: the
// hot path (the kernel had the bytes, the socket buffer took the answer)
// completes without a coroutine frame.
template <class T>
class ready_or {
 public:
  ready_or(T v) : value_(std::move(v)) {}  // NOLINT: implicit on purpose
  ready_or(task<T> t) : task_(std::move(t)) {}  // NOLINT
  bool await_ready() const noexcept { return !task_.valid(); }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> parent) noexcept {
    return typename task<T>::awaiter(task_.handle()).await_suspend(parent);
  }
  T await_resume() {
    if (!task_.valid()) return std::move(*value_);
    return typename task<T>::awaiter(task_.handle()).await_resume();
  }

 private:
  std::optional<T> value_;
  task<T> task_;
};

template <class T>
concept http_transport = requires(T& t, const context& c, std::span<char> b, std::string_view d,
                                  clock::time_point dl, const cancel_func& cf) {
  { t.read(c, b, dl) } -> std::same_as<task<net::io_result>>;
  { t.write(c, d, dl) } -> std::same_as<task<net::io_result>>;
  { t.wait_readable(c, dl) } -> std::same_as<task<std::error_code>>;
  { t.try_read(b) } -> std::same_as<std::optional<net::io_result>>;
  { t.try_write(d) } -> std::same_as<net::io_result>;
  t.cancel_on_hangup(cf);
  t.shutdown_write();
};

// The monotonic clock at kernel-tick resolution (a few ms): a memory read
// instead of a hardware counter read. Same epoch as sluice::clock (both are
// CLOCK_MONOTONIC). Connection deadlines are seconds long and requests stamp
// their arrival with it, so the request path reads the precise clock only
// when it really waits.
inline clock::time_point coarse_now() noexcept {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return clock::time_point(std::chrono::duration_cast<clock::duration>(
      std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec)));
}

inline clock::time_point deadline_in(clock::duration d, clock::time_point now) noexcept {
  return d > clock::duration::zero() ? sluice::detail::saturating_add(now, d) : clock::time_point::max();
}
inline clock::time_point deadline_in(clock::duration d) noexcept { return deadline_in(d, coarse_now()); }

// The read buffer of an active connection: allocated on first use, kept
// with its active_state (which the pool below recycles).
class read_buffer {
 public:
  static constexpr std::size_t size = 16 * 1024;
  char* data() {
    if (!mem_) mem_ = std::make_unique<char[]>(size);
    return mem_.get();
  }

 private:
  std::unique_ptr<char[]> mem_;
};

// What a request needs while the connection is active; pooled per thread
// (bounded) while connections are idle. It never holds connection data when
// pooled: a connection goes idle only with its input consumed and its
// output written.
struct active_state {
  explicit active_state(const parse_limits& limits) : parser(limits) {}
  request_parser parser;
  request req;
  response res;
  read_buffer in;
  std::string out;
  std::size_t begin = 0;
  std::size_t end = 0;
};
active_state* take_active_state(const parse_limits& limits);
void give_active_state(active_state* st) noexcept;

enum class after_active { idle, close };

template <http_transport T>
class connection final : public connection_hooks {
 public:
  connection(T& io, server::state& srv, conn_record& rec, const context& ctx)
      : io_(io), srv_(srv), rec_(rec), ctx_(ctx) {}
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  // Serves the connection until it closes.
  task<void> run(std::string remote) {
    remote_ = std::move(remote);
    bool first = true;
    for (;;) {
      if (!co_await wait_idle(first)) co_return;
      first = false;
      st_ = take_active_state(srv_.limits);
      st_->req.set_remote_address(remote_);
      after_active next = after_active::close;
      try {
        next = co_await serve_active();
      } catch (...) {
        // Only allocation failures get here; the connection cannot go on.
        next = after_active::close;
      }
      give_active_state(std::exchange(st_, nullptr));
      if (next == after_active::close) co_return;
    }
  }

  // connection_hooks
  void watch_hangup(const cancel_func& cancel) noexcept override { io_.cancel_on_hangup(cancel); }

  task<std::error_code> flush(response& res) override {
    std::string& out = st_->out;
    const int minor = st_->req.version_minor();
    if (!res.headers_sent()) {
      streaming_ = true;
      write_head(out, res, -1, keep_alive_ && minor >= 1, minor);
      res.mark_headers_sent();
    }
    if (!head_ && !res.body().empty()) {
      if (minor >= 1) {
        append_chunk(out, res.body());
      } else {
        out.append(res.body());
      }
    }
    res.body().clear();
    co_return co_await write_out();
  }

 private:
  // Writes and empties the output buffer; an error means the connection is
  // done. The first attempt is a plain call: usually the socket buffer takes
  // it all and no task frame is made.
  ready_or<std::error_code> write_out() {
    std::string& out = st_->out;
    if (out.empty()) return std::error_code();
    const net::io_result first = io_.try_write(out);
    if (first.error || first.bytes == out.size()) {
      out.clear();
      return first.error;
    }
    return write_rest(first.bytes);
  }
  task<std::error_code> write_rest(std::size_t from) {
    std::string& out = st_->out;
    const auto r = co_await io_.write(ctx_, std::string_view(out).substr(from),
                                      deadline_in(srv_.opts.write_timeout));
    out.clear();
    if (r.error == errc::deadline_exceeded) srv_.timeouts.fetch_add(1, std::memory_order_relaxed);
    co_return r.error;
  }

  // Reads more input after what is buffered (compacting first). false: end
  // of stream, error or deadline (the connection is done). A read that finds
  // bytes at once makes no task frame.
  // With `may_idle` (no byte of a request is buffered yet), finding nothing
  // is not waited for here: it returns false with nothing_yet_ set, and the
  // connection goes back to its idle wait, giving its buffers back. (A
  // readiness flag can be stale: set by bytes a read already took.)
  ready_or<bool> fill(clock::time_point deadline, bool may_idle = false) {
    active_state& st = *st_;
    if (st.begin == st.end) st.begin = st.end = 0;
    if (st.end == read_buffer::size) {
      // llhttp consumes everything it is given unless it pauses, so unparsed
      // bytes only remain after a pause, and they start a message part it
      // has not seen yet: moving them to the front is safe.
      std::memmove(st.in.data(), st.in.data() + st.begin, st.end - st.begin);
      st.end -= st.begin;
      st.begin = 0;
    }
    const std::span<char> into(st.in.data() + st.end, read_buffer::size - st.end);
    if (std::optional<net::io_result> now = io_.try_read(into)) return took(*now, into.size());
    if (may_idle) {
      nothing_yet_ = true;
      return false;
    }
    return fill_wait(into, deadline);
  }
  task<bool> fill_wait(std::span<char> into, clock::time_point deadline) {
    const net::io_result r = co_await io_.read(ctx_, into, deadline);
    co_return took(r, into.size());
  }
  bool took(const net::io_result& r, std::size_t wanted) {
    if (r.error) {
      if (r.error == errc::deadline_exceeded) {
        srv_.timeouts.fetch_add(1, std::memory_order_relaxed);
        timed_out_ = true;
      }
      return false;
    }
    if (r.bytes == 0) return false;
    st_->end += r.bytes;
    drained_ = r.bytes < wanted;
    return true;
  }

  // Waits for the next request (holding no active state). false: close.
  task<bool> wait_idle(bool first) {
    rec_.phase.store(conn_phase::idle, std::memory_order_seq_cst);
    srv_.idle.fetch_add(1, std::memory_order_relaxed);
    bool ok = !srv_.shutting_down.load(std::memory_order_seq_cst);
    if (ok) {
      const clock::duration limit = first ? srv_.opts.read_header_timeout : srv_.opts.idle_timeout;
      const std::error_code ec = co_await io_.wait_readable(ctx_, deadline_in(limit));
      if (ec == errc::deadline_exceeded) srv_.timeouts.fetch_add(1, std::memory_order_relaxed);
      ok = !ec;
    }
    srv_.idle.fetch_sub(1, std::memory_order_relaxed);
    conn_phase expected = conn_phase::idle;
    if (!rec_.phase.compare_exchange_strong(expected, conn_phase::active, std::memory_order_seq_cst)) {
      ok = false;  // shutdown closed us while idle
    }
    co_return ok;
  }

  // Answers an error the server detected itself, then closes lingeringly.
  task<void> reject(int status, std::string_view why) {
    srv_.bad_requests.fetch_add(1, std::memory_order_relaxed);
    std::string body(reason_phrase(status));
    if (!why.empty()) body.append(": ").append(why);
    write_simple(st_->out, status, body, false, srv_.opts);
    if (co_await write_out()) co_return;
    co_await linger();
  }

  // Stops writing, then discards what the client still sends (up to 256 KiB,
  // for at most 500 ms) so closing does not turn into a reset that destroys
  // our last answer in the client's receive buffer.
  task<void> linger() {
    io_.shutdown_write();
    const auto until = deadline_in(std::chrono::milliseconds(500));
    for (std::size_t discarded = 0; discarded < 256 * 1024;) {
      const auto r = co_await io_.read(ctx_, std::span<char>(st_->in.data(), read_buffer::size), until);
      if (r.error || r.bytes == 0) break;
      discarded += r.bytes;
    }
  }

  // Requests until the connection can go idle (input drained, answers
  // written) or must close.
  task<after_active> serve_active() {
    active_state& st = *st_;
    request_parser& parser = st.parser;
    request& req = st.req;
    response& res = st.res;
    // Woken by readiness: the first request's bytes are still in the kernel.
    bool woken = true;
    for (;;) {
      // ---- between requests
      if (!std::exchange(woken, false) && st.begin == st.end) {
        if (co_await write_out()) co_return after_active::close;
        if (closing_) co_return after_active::close;
        // The last read filled the buffer: more may be queued in the kernel,
        // and edge-triggered readiness will not say so again.
        if (drained_) co_return after_active::idle;
      }
      const auto start = coarse_now();
      const auto header_deadline = deadline_in(srv_.opts.read_header_timeout, start);
      const auto body_deadline = deadline_in(srv_.opts.read_timeout, start);
      req.set_received_at(start);
      parser.bind(&req);

      // ---- headers, then body
      bool complete = false;
      bool continue_sent = false;
      while (!complete) {
        if (st.begin == st.end) {
          if (parser.headers_done() && parser.expect_continue() && parser.has_body() &&
              !continue_sent) {
            // The client waits for this before sending the body (RFC 9110 §10.1.1).
            st.out.append("HTTP/1.1 100 Continue\r\n\r\n");
            continue_sent = true;
            if (co_await write_out()) co_return after_active::close;
          }
          const bool at_start = !parser.in_message() && !parser.headers_done();
          const bool more = co_await fill(parser.headers_done()
                                              ? body_deadline
                                              : std::min(header_deadline, body_deadline),
                                          at_start);
          if (!more && std::exchange(nothing_yet_, false)) co_return after_active::idle;
          if (!more) {
            // Mid-request: answer 408 after a timeout (Go closes silently on
            // a read timeout; an answer tells a slow client why).
            if (timed_out_ && (parser.in_message() || parser.headers_done())) {
              co_await reject(408, "timed out reading the request");
            } else {
              co_await write_out();
            }
            co_return after_active::close;
          }
        }
        const auto r = parser.feed(st.in.data() + st.begin, st.end - st.begin);
        st.begin += r.consumed;
        switch (r.event) {
          case parse_event::need_more:
          case parse_event::headers_complete:
            break;
          case parse_event::message_complete:
            complete = true;
            break;
          case parse_event::error:
            co_await reject(parser.error_status(), parser.error_reason());
            co_return after_active::close;
        }
      }

      // ---- the handler
      ++served_;
      keep_alive_ = parser.keep_alive() && !parser.upgrade() &&
                    !srv_.shutting_down.load(std::memory_order_seq_cst) &&
                    (srv_.opts.max_requests_per_connection == 0 ||
                     served_ < srv_.opts.max_requests_per_connection);
      head_ = req.method() == "HEAD";
      streaming_ = false;
      req.attach(this, &ctx_);
      res.attach(this);
      srv_.requests.fetch_add(1, std::memory_order_relaxed);
      srv_.in_flight.fetch_add(1, std::memory_order_relaxed);
      std::exception_ptr failure;
      try {
        co_await srv_.h(req, res);
      } catch (...) {
        failure = std::current_exception();
      }
      srv_.in_flight.fetch_sub(1, std::memory_order_relaxed);
      if (failure) {
        log_failure(failure);
        if (res.headers_sent()) co_return after_active::close;  // a broken stream: only closing tells
        res.reset(false);
        keep_alive_ = false;
        write_simple(st.out, 500, "Internal Server Error", false, srv_.opts);
      } else {
        if (auto c = res.header().get("connection"); c && iequals(*c, "close")) keep_alive_ = false;
        // A shutdown that began while the handler ran: tell the client now.
        if (srv_.shutting_down.load(std::memory_order_seq_cst)) keep_alive_ = false;
        finish_response();
      }
      req.finish(false);
      res.reset(false);
      if (!keep_alive_) closing_ = true;
      if (closing_) {
        co_await write_out();
        co_return after_active::close;
      }
      if (st.out.size() >= 64 * 1024) {
        if (co_await write_out()) co_return after_active::close;
      }
    }
  }

  // Serializes the handler's response (or ends its stream) into the output.
  void finish_response() {
    active_state& st = *st_;
    response& res = st.res;
    const int minor = st.req.version_minor();
    if (streaming_) {
      if (!head_ && minor >= 1) {
        if (!res.body().empty()) append_chunk(st.out, res.body());
        st.out.append("0\r\n\r\n");
      } else if (!head_) {
        st.out.append(res.body());
      }
      if (minor == 0) keep_alive_ = false;  // the close ends the body
      return;
    }
    const bool no_body = bodyless(res.status(), head_);
    long long length = static_cast<long long>(res.body().size());
    if (head_ && res.body().empty()) {
      // A HEAD handler may announce the GET body's length without writing it.
      if (auto cl = res.header().get("content-length")) {
        long long v = 0;
        const auto r = std::from_chars(cl->data(), cl->data() + cl->size(), v);
        if (r.ec == std::errc() && r.ptr == cl->data() + cl->size() && v >= 0) length = v;
      }
    }
    write_head(st.out, res, no_body && !head_ ? 0 : length, keep_alive_, minor);
    if (!no_body) st.out.append(res.body());
  }

  void log_failure(std::exception_ptr e) {
    const request& req = st_->req;
    std::string line = "sluice::http: handler for ";
    line.append(req.method()).append(" ").append(req.target()).append(" from ").append(remote_);
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      line.append(" threw: ").append(ex.what());
    } catch (...) {
      line.append(" threw a non-std exception");
    }
    srv_.log(line);
  }

  T& io_;
  server::state& srv_;
  conn_record& rec_;
  const context& ctx_;
  active_state* st_ = nullptr;
  std::string remote_;
  std::uint64_t served_ = 0;
  bool drained_ = true;
  bool timed_out_ = false;
  bool nothing_yet_ = false;
  bool keep_alive_ = true;
  bool closing_ = false;
  bool head_ = false;
  bool streaming_ = false;
};

}  // namespace sluice::http::detail
