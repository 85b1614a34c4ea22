// HTTP/1.1 server on the runtime: one task per connection, handlers that are
// coroutines, Go's Server.Shutdown. Go: net/http.Server.
//
//   sluice::http::router mux;
//   mux.handle("GET /hello", [](auto& req, auto& res) -> sluice::task<void> {
//     res.send(200, "hello\n");
//     co_return;
//   });
//   sluice::http::server srv(mux);
//   auto ln = sluice::net::tcp_listener::listen("127.0.0.1:8080");
//   sluice::go([&]() -> sluice::task<void> { co_await srv.serve(std::move(ln)); });
//   ...
//   co_await srv.shutdown(deadline_ctx);   // graceful: in-flight requests finish
//
// What a connection does: keep-alive, pipelining (responses in request order;
// responses to pipelined requests are written together), Content-Length and
// chunked request bodies (read whole before the handler runs), Expect:
// 100-continue, HEAD (the handler's body is counted, not sent), automatic
// Date, Content-Length and Connection headers, and chunked streaming for
// handlers that flush. Requests are parsed by llhttp in strict mode, plus the
// RFC 9112 checks llhttp leaves to its user (see the table on server_options).
//
// Memory: an idle keep-alive connection holds no read or write buffer (they
// go back to a per-thread pool while it waits), only its task, its socket and
// the small request/response objects kept for reuse.
#pragma once

#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/http/message.hpp>
#include <sluice/net.hpp>
#include <sluice/task.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <system_error>

namespace sluice::http {

// A handler: a coroutine that fills in the response. Exceptions that escape it
// become a 500 (if nothing was sent yet) and close the connection; use the
// recover middleware to answer 500 and keep the connection. Go: http.Handler.
using handler = std::function<task<void>(request&, response&)>;

// Server settings. Each limit has a defined answer:
//
//   | limit                        | answer                                        |
//   |------------------------------|-----------------------------------------------|
//   | max_header_bytes             | 431, connection closed                        |
//   | max_headers                  | 431, connection closed                        |
//   | max_body_bytes               | 413, connection closed (before 100-continue)  |
//   | max_connections              | the connection over the limit is accepted,    |
//   |                              | answered 503 with Retry-After: 1 and closed   |
//   | max_requests_per_connection  | the last response carries Connection: close   |
//   | malformed request (llhttp,   | 400, connection closed: bad framing, bare LF, |
//   | or the checks below)         | invalid bytes, bad chunk sizes, conflicting   |
//   |                              | Content-Length / Transfer-Encoding           |
//   | unsupported Expect           | 417, connection closed                        |
//
// The checks sluice adds to llhttp's strict mode (RFC 9112): no folded
// (obs-fold) header lines, no empty header names, exactly one Host in
// HTTP/1.1, no Transfer-Encoding in HTTP/1.0.
// Timeouts (Go's names); zero or negative means none:
//   read_header_timeout — from the request's first byte (or the accept) to the
//                         end of its headers;
//   read_timeout        — from the request's first byte to the end of its body;
//   idle_timeout        — waiting for the next request on a keep-alive connection;
//   write_timeout       — writing one response (each flush of a stream).
// A slowloris client (sending a byte now and then) is cut off by the first two.
struct server_options {
  std::size_t max_header_bytes = 64 * 1024;  // request line + header fields
  std::size_t max_headers = 100;
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_connections = 10000;
  std::size_t max_requests_per_connection = 0;  // 0: no limit
  clock::duration read_header_timeout = std::chrono::seconds(10);
  clock::duration read_timeout = std::chrono::seconds(60);
  clock::duration idle_timeout = std::chrono::seconds(120);
  clock::duration write_timeout = std::chrono::seconds(60);
  // Where the server reports what it cannot answer (a handler's exception, an
  // accept error). Default: one line on stderr.
  std::function<void(std::string_view)> error_log;
  // Writes the body of an answer the server gives itself (400, 408, 413, 417,
  // 431, and the 500 for a handler that threw): `message` is the reason
  // phrase and the detail ("Request Entity Too Large: body over 1048576
  // bytes"). Set the Content-Type and body on `res` (its status is set); the
  // framing headers are the server's. Default (empty): `message` as
  // text/plain. A service whose errors are JSON sets one here. Must not throw.
  std::function<void(response& res, std::string_view message)> error_body;
};

// Counters (monotonic) and gauges of a server. Go: no equivalent (ConnState hooks).
struct server_stats {
  std::uint64_t connections_accepted = 0;
  std::uint64_t connections_rejected = 0;  // over max_connections
  std::uint64_t requests = 0;              // handled (handler called)
  std::uint64_t bad_requests = 0;          // answered 4xx by the server itself
  std::uint64_t timeouts = 0;              // connections cut by a timeout
  std::size_t connections_open = 0;
  std::size_t connections_idle = 0;
  std::size_t requests_in_flight = 0;
};

class server {
 public:
  // Throws std::invalid_argument for an empty handler or a zero limit.
  explicit server(handler h, server_options opts = {});
  server(const server&) = delete;
  server& operator=(const server&) = delete;
  // Requires that serve() has returned (call shutdown first).
  ~server();

  // Accepts connections on `ln` until shutdown() (returns errc::closed) or an
  // accept error that retrying cannot fix. Each connection gets its own task.
  // Only one serve() at a time. Go: srv.Serve(ln).
  task<std::error_code> serve(net::tcp_listener ln);

  // Graceful stop: stops accepting, closes idle connections, lets in-flight
  // requests finish (their connections close after the response), and when
  // `ctx` ends cancels what is left (request contexts and connection I/O).
  // Returns when every connection task has ended: {} if all finished in
  // time, ctx's error if some had to be cancelled. Idempotent. Go: srv.Shutdown(ctx).
  task<std::error_code> shutdown(const context& ctx);

  // True once shutdown() was called.
  bool shutting_down() const noexcept;
  // The address serve() listens on ("" before serve()).
  std::string address() const;
  server_stats stats() const noexcept;

  struct state;

 private:
  std::shared_ptr<state> s_;
};

}  // namespace sluice::http
