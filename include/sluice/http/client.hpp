// HTTP/1.1 client on the runtime: pooled keep-alive connections per host,
// request contexts with deadlines, bounded responses and errors a caller can
// tell apart. Go: net/http.Client with its http.Transport.
//
//   sluice::http::client c;                                   // share one per process
//   auto [ctx, cancel] = sluice::with_timeout(parent, 5s);
//   sluice::http::client_result r = co_await c.get(ctx, "http://127.0.0.1:8080/hello");
//   cancel();
//   if (!r.ok()) {                                            // no response at all
//     if (r.error == std::errc::connection_refused) ...;      // or errc::deadline_exceeded, ...
//     log(r.error_message);                                   // "GET http://...: connect ...: ..."
//   } else {
//     use(r.response.status, r.response.body);                // a 404 is a response, not an error
//   }
//
// What it does:
//   * one request at a time per connection (no pipelining), connections kept
//     alive and reused per scheme://host:port, bounded both ways (see
//     client_options): at most max_conns_per_host in use — a request over the
//     bound waits for one, as long as its context allows — and at most
//     max_idle_per_host idle, each for at most idle_timeout;
//   * responses framed by Content-Length, chunked transfer coding, or the end
//     of the connection; HEAD, 1xx, 204 and 304 responses have no body;
//     interim 1xx responses are skipped; trailers are read and dropped;
//   * the request context bounds everything: waiting for a connection,
//     connecting, writing the request and reading the whole response;
//   * a pooled connection the server closed while it was idle does not fail
//     the next request (see client::send for how).
//
// What it does not do (Go's Client does): follow redirects (a 3xx is returned
// as the response, like Go with CheckRedirect = ErrUseLastResponse), cookies,
// proxies, compression, HTTP/2, streaming bodies (the request and the response
// body are whole strings, the response bounded by max_response_body_bytes),
// name resolution (the default dialer takes IP literals and "localhost", as
// sluice::net does), TLS. TLS and resolvers plug in as a dialer (below).
//
// Errors. A client_result carries either a response or an error code:
//
//   | what happened                                  | error                                 |
//   |------------------------------------------------|---------------------------------------|
//   | the request's context was cancelled            | sluice::errc::canceled                |
//   | the request's context deadline passed          | sluice::errc::deadline_exceeded       |
//   | connecting took longer than connect_timeout    | client_errc::connect_timeout          |
//   | nobody listens on the port                     | std::errc::connection_refused (errno) |
//   | the peer reset the connection / we wrote into  | std::errc::connection_reset,          |
//   | a closed one                                   | std::errc::broken_pipe (errno)        |
//   | the peer closed before the response was whole  | client_errc::connection_closed_early  |
//   | status line + headers over the limit, or body  | client_errc::response_too_large       |
//   | over it (Content-Length or bytes received)     |                                       |
//   | the bytes are not an HTTP/1.x response         | client_errc::malformed_response       |
//   | no dialer for the URL's scheme (https without  | client_errc::unsupported_scheme       |
//   | a TLS dialer)                                  |                                       |
//   | a host name the dialer cannot resolve          | client_errc::unresolved_host          |
//   | other socket errors (network unreachable, ...) | the errno, std::generic_category()    |
//
// A malformed URL, method or header is the caller's mistake: std::invalid_argument,
// thrown by send/get/head/post when awaited (see url::parse).
#pragma once

#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/http/message.hpp>
#include <sluice/net.hpp>
#include <sluice/task.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>

namespace sluice::http {

// The client's own error codes (the others are sluice::errc and errno values;
// see the table above). Compare with `r.error == client_errc::response_too_large`.
enum class client_errc {
  malformed_response = 1,       // not an HTTP/1.x response. Go: "malformed HTTP response"
  response_too_large = 2,       // over max_response_header_bytes / max_response_body_bytes
  connection_closed_early = 3,  // EOF before the response was complete. Go: io.ErrUnexpectedEOF
  connect_timeout = 4,          // connect_timeout passed. Go: the dialer's "i/o timeout"
  unsupported_scheme = 5,       // the dialer has no transport for the scheme
  unresolved_host = 6,          // the dialer cannot turn the host into an address
};

// The category of client_errc ("sluice.http.client").
const std::error_category& client_category() noexcept;

inline std::error_code make_error_code(client_errc e) noexcept {
  return {static_cast<int>(e), client_category()};
}

// An absolute http(s) URL, split for a request. Go: *url.URL (the parts a
// client needs).
struct url {
  std::string scheme;        // "http" or "https", lower case
  std::string host;          // "127.0.0.1", "[::1]", "localhost", "example.com" (lower case)
  std::uint16_t port = 80;   // explicit, or 80 / 443 from the scheme
  std::string target = "/";  // path and query as sent on the request line ("/a/b?x=1")

  // Parses `http://host[:port][/path][?query][#fragment]` (https likewise).
  // The fragment is dropped (it is never sent). Throws std::invalid_argument
  // for anything else: another scheme, no host, user info ("user@host"), a
  // port outside 1..65535, or a space or control character anywhere.
  // Go: url.Parse, plus the checks http.NewRequest makes.
  static url parse(std::string_view text);

  // "host:port" for connecting ("[::1]:8080").
  std::string address() const;
  // The Host header: the host, with ":port" unless the port is the scheme's default.
  std::string host_header() const;
  // "scheme://host:port": the key of a connection pool.
  std::string origin() const;
};

// ---- the transport seam (TLS, resolvers, test doubles) --------------------------------

// A connection the client speaks HTTP/1.1 over: a TCP socket, or a TLS session
// on one. One request at a time uses it (never two tasks at once); between
// requests it may sit in the pool and be handed to a task on another thread.
// Go: the net.Conn an http.Transport dials (DialContext / DialTLSContext).
class transport {
 public:
  virtual ~transport() = default;
  // Reads what is available: at least one byte, or 0 at end of stream, or an
  // error (ctx's when it ends the wait). Go: conn.Read.
  virtual task<net::io_result> read(const context& ctx, std::span<char> buffer) = 0;
  // Writes all of `data` unless an error or ctx stops it. Go: conn.Write.
  virtual task<net::io_result> write(const context& ctx, std::string_view data) = 0;
  // The first read of a response, called right after its request was
  // written. The reply is rarely there yet, so a transport may wait for
  // readiness before its first attempt (saving a read that would find
  // nothing). Default: read().
  virtual task<net::io_result> read_reply(const context& ctx, std::span<char> buffer) {
    return read(ctx, buffer);
  }
  // Without blocking: can this idle connection carry another request? False
  // if the peer has closed it, reset it or sent bytes nobody asked for.
  // Called just before an idle connection is reused.
  virtual bool reusable() noexcept = 0;
  // Closes the connection (idempotent). Must not block.
  virtual void close() noexcept = 0;
};

// The transport for plain HTTP: a net::tcp_stream. A TLS transport would wrap
// one the same way (its dialer connects the stream, handshakes, and returns
// itself). reusable() peeks at the socket (MSG_PEEK | MSG_DONTWAIT): end of
// stream, an error or unexpected bytes mean "not reusable". (The netpoller's
// readiness is no substitute: a busy worker collects it only between batches
// of work, so a FIN or stray bytes may sit in the kernel unreported.)
// read_reply waits for readiness before its first read.
class tcp_transport final : public transport {
 public:
  explicit tcp_transport(net::tcp_stream stream) noexcept : stream_(std::move(stream)) {}
  task<net::io_result> read(const context& ctx, std::span<char> buffer) override;
  task<net::io_result> read_reply(const context& ctx, std::span<char> buffer) override;
  task<net::io_result> write(const context& ctx, std::string_view data) override;
  bool reusable() noexcept override;
  void close() noexcept override { stream_.close(); }
  net::tcp_stream& stream() noexcept { return stream_; }

 private:
  net::tcp_stream stream_;
};

// Where a dialer must connect: the URL's scheme, host and port.
struct dial_target {
  std::string scheme;
  std::string host;
  std::uint16_t port = 0;
  std::string address;  // "host:port" ("[v6]:port"): where to connect
};

// A dialer's answer: a connection, or why there is none (with a message that
// says more, e.g. the resolver's).
struct dial_result {
  std::unique_ptr<transport> conn;
  std::error_code error;
  std::string message;
};

// Opens a connection for a request. The context carries the request's
// cancellation and the client's connect_timeout (a dial that ends with
// errc::deadline_exceeded before the request's own deadline is reported as
// client_errc::connect_timeout). Must not throw for a failed connection:
// report it in dial_result. Called concurrently from many tasks.
// Go: Transport.DialContext / DialTLSContext.
using dialer = std::function<task<dial_result>(context ctx, dial_target target)>;

// The default dialer: "http" over net::tcp_stream::connect. Another scheme is
// client_errc::unsupported_scheme; a host that is not an IP literal or
// "localhost" is client_errc::unresolved_host (sluice has no resolver yet).
task<dial_result> dial_tcp(context ctx, dial_target target);

// ---- options, requests, results ---------------------------------------------------

// Client settings. Go: the http.Transport fields of the same meaning.
//   max_idle_per_host  — idle keep-alive connections kept per host; the oldest
//                        beyond it are closed. 0: never keep one (every
//                        request dials). Go: MaxIdleConnsPerHost.
//   max_conns_per_host — connections in use (or being dialed) per host; a
//                        request beyond it waits, within its context, for one
//                        to be returned or closed. Must be > 0. Go:
//                        MaxConnsPerHost (which also counts idle ones).
//   idle_timeout       — an idle connection older than this is closed instead
//                        of reused; zero or negative: no limit. Go: IdleConnTimeout.
//   connect_timeout    — bound on one dial; zero or negative: only the request's
//                        context bounds it. Go: net.Dialer.Timeout.
//   max_response_header_bytes — the status line and header fields as received
//                        (all interim 1xx responses and the trailers count too).
//                        Must be > 0. Go: MaxResponseHeaderBytes.
//   max_response_body_bytes — the body after transfer decoding. Go: none (a
//                        caller would wrap the body in io.LimitReader).
//   user_agent         — sent unless the request sets User-Agent; empty: none.
//   dial               — opens connections; empty: dial_tcp. Go: DialContext.
struct client_options {
  std::size_t max_idle_per_host = 16;
  std::size_t max_conns_per_host = 64;
  clock::duration idle_timeout = std::chrono::seconds(90);
  clock::duration connect_timeout = std::chrono::seconds(10);
  std::size_t max_response_header_bytes = 64 * 1024;
  std::size_t max_response_body_bytes = 64 * 1024 * 1024;
  std::string user_agent = "sluice";
  dialer dial;
};

// A request to send. Go: *http.Request (from http.NewRequestWithContext).
//   method — a token ("GET", "POST", ...); empty means GET.
//   url    — absolute, see url::parse.
//   header — sent as given, except: Host is added (a Host field here replaces
//            it, as Go's req.Host does), User-Agent is added unless present,
//            and Content-Length / Transfer-Encoding are the client's own
//            (Content-Length is sent when the body is not empty, and for
//            POST, PUT and PATCH always). "Connection: close" here means the
//            connection is closed after the response.
//   body   — the whole request body.
struct client_request {
  std::string method = "GET";
  std::string url;
  http::headers header;
  std::string body;
};

// A response. Go: *http.Response (with the body read whole).
struct client_response {
  int status = 0;           // 200, 404, ... Go: resp.StatusCode
  int version_minor = 1;    // HTTP/1.<minor> of the status line
  http::headers header;     // as received, in order. Go: resp.Header
  std::string body;         // decoded (chunks joined); empty for HEAD/1xx/204/304
};

// What send() returns: a response, or an error and a message that names the
// request and the step that failed ("GET http://127.0.0.1:1/: connect
// 127.0.0.1:1: Connection refused"). Go: (*http.Response, error).
struct client_result {
  std::error_code error;
  std::string error_message;
  client_response response;  // meaningful only when ok()

  bool ok() const noexcept { return !error; }
};

// Counters (monotonic) and gauges of a client. Go: none.
struct client_stats {
  std::uint64_t requests = 0;            // send() calls past the argument checks
  std::uint64_t failed = 0;              // ...that ended with an error
  std::uint64_t connections_dialed = 0;  // successful dials
  std::uint64_t connections_reused = 0;  // requests sent on a pooled connection
  std::uint64_t stale_discarded = 0;     // pooled connections found closed or expired on take
  std::uint64_t retries = 0;             // idempotent requests resent after a reused connection failed
  std::size_t idle = 0;                  // connections in the pool now
  std::size_t in_use = 0;                // connections carrying a request (or being dialed) now
  std::size_t waiting = 0;               // requests waiting for a connection slot now
};

// The client. Thread-safe: any number of tasks (on any worker) may send through
// one client at once; share one per process, as in Go. Holds no task of its
// own: connections past idle_timeout are dropped when found (on take, and by a
// sweep of every host at most once per idle_timeout as connections come back),
// or by close_idle / close_expired.
class client {
 public:
  // Throws std::invalid_argument if max_conns_per_host or
  // max_response_header_bytes is 0.
  explicit client(client_options opts = {});
  client(const client&) = delete;
  client& operator=(const client&) = delete;
  // Closes the idle connections; requests still running keep the client's
  // state alive and close their connection when they finish. Must run inside
  // the runtime the client was used in (it closes sockets).
  ~client();

  // Sends `req` and reads the whole response, within ctx. Never throws for a
  // network outcome (see the error table); throws std::invalid_argument for a
  // malformed URL, method or header field. Must be awaited from a task.
  //
  // Stale connections: before reusing an idle connection the client asks the
  // transport whether it is still usable (a zero-wait peek: the server's FIN
  // or RST shows up there), and drops it if not. A server may still close
  // the connection between that check and our request; then, as in Go, a
  // request that is idempotent (GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or any
  // request with an Idempotency-Key header), whose reused connection ended
  // (EOF, reset, broken pipe) before any byte of a response arrived, is sent
  // once more on a new connection. Other requests get the error.
  //
  // The connection returns to the pool only if the response was read whole,
  // neither side asked to close, and nothing followed the response.
  // Coroutine parameters are taken by value, so a task made now and awaited
  // later does not dangle. g++ 12: give the request a name first
  // (`client_request req{...}; co_await c.send(ctx, std::move(req));`); a
  // braced temporary written inside the co_await expression is destroyed
  // twice by that compiler (GCC PR 100611). Go: client.Do(req).
  task<client_result> send(context ctx, client_request req);

  // A GET of `url`. Go: client.Get (with a context: NewRequestWithContext).
  task<client_result> get(context ctx, std::string url);
  // A HEAD of `url`: the response's headers, no body. Go: client.Head.
  task<client_result> head(context ctx, std::string url);
  // A POST of `body` with Content-Type `content_type`. Go: client.Post.
  task<client_result> post(context ctx, std::string url, std::string body,
                           std::string content_type);

  // Closes every idle connection now (connections in use are not affected).
  // Go: client.CloseIdleConnections().
  void close_idle() noexcept;
  // Closes the idle connections that have been idle for at least idle_timeout
  // at time `now`; returns how many. The same rule the pool applies on its
  // own, with the time as a parameter. Go: none.
  std::size_t close_expired(clock::time_point now) noexcept;

  client_stats stats() const noexcept;

  struct state;

 private:
  std::shared_ptr<state> s_;
};

}  // namespace sluice::http

// Registered as an error code enum only (like sluice::errc).
template <>
struct std::is_error_code_enum<sluice::http::client_errc> : std::true_type {};
