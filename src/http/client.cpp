// The HTTP/1.1 client: URL parsing, the default dialer, the connection pool,
// and one exchange (request out, response in) per attempt.
//
// Pool invariants (everything below is guarded by client::state::mu):
//   * every open connection is in exactly one place: the idle list of one
//     host_pool, or the frame of the one request using it; that request also
//     holds one unit of the host's `slots` for it (a dial in progress holds
//     its unit too), so at most max_conns_per_host connections per host are
//     in use;
//   * a host_pool is in `hosts` while users > 0 or its idle list is not
//     empty; whoever makes both zero erases it. A request counts in `users`
//     from lease to unlease, so the pool (and its semaphore) it uses is
//     never erased under it;
//   * each idle list is ordered by the time its connections came back
//     (oldest first) and is at most max_idle_per_host long; idle_total is
//     the sum of their lengths;
//   * once `closed` (the client is being destroyed) no connection enters an
//     idle list: requests still running close theirs when done.
// Connections are closed outside mu (transport::close may be a dialer's
// code). A connection goes back to its idle list before its slot is released,
// so the request the slot goes to (the semaphore is FIFO) finds it there.
#include "response_parser.hpp"
#include "token.hpp"

#include <sluice/http/client.hpp>
#include <sluice/semaphore.hpp>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace sluice::http {

// ---- errors ---------------------------------------------------------------------------

namespace {
class client_error_category : public std::error_category {
 public:
  const char* name() const noexcept override { return "sluice.http.client"; }
  std::string message(int ev) const override {
    switch (static_cast<client_errc>(ev)) {
      case client_errc::malformed_response: return "malformed HTTP response";
      case client_errc::response_too_large: return "HTTP response too large";
      case client_errc::connection_closed_early: return "connection closed before the response was complete";
      case client_errc::connect_timeout: return "connect timed out";
      case client_errc::unsupported_scheme: return "unsupported URL scheme";
      case client_errc::unresolved_host: return "cannot resolve host";
    }
    return "unknown HTTP client error";
  }
};
}  // namespace

const std::error_category& client_category() noexcept {
  static const client_error_category cat;
  return cat;
}

// ---- url ------------------------------------------------------------------------------

namespace {

[[noreturn]] void bad_url(std::string_view text, const char* why) {
  std::string msg = "sluice::http::url: bad URL \"";
  msg.append(text).append("\": ").append(why);
  throw std::invalid_argument(msg);
}

char lower(char c) noexcept { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }

bool host_char(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

bool v6_char(char c) noexcept {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || c == ':' || c == '.';
}

// A field value may hold visible characters, spaces and tabs (and obs-text),
// never CR, LF, NUL or another control: those would split the request.
bool valid_field_value(std::string_view s) noexcept {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return false;
  }
  return true;
}

std::uint16_t default_port(std::string_view scheme) noexcept { return scheme == "https" ? 443 : 80; }

}  // namespace

url url::parse(std::string_view text) {
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) bad_url(text, "spaces, control and non-ASCII characters must be percent-encoded");
  }
  const std::size_t sep = text.find("://");
  if (sep == std::string_view::npos) bad_url(text, "expected scheme://host");
  url u;
  u.scheme.assign(text.substr(0, sep));
  for (char& c : u.scheme) c = lower(c);
  if (u.scheme != "http" && u.scheme != "https") bad_url(text, "the scheme must be http or https");
  std::string_view rest = text.substr(sep + 3);
  const std::size_t auth_end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, auth_end);
  rest = auth_end == std::string_view::npos ? std::string_view() : rest.substr(auth_end);
  if (authority.find('@') != std::string_view::npos) bad_url(text, "user information is not supported");

  std::string_view host;
  std::string_view port_text;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) bad_url(text, "unterminated IPv6 literal");
    host = authority.substr(0, close + 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') bad_url(text, "expected :port after the IPv6 literal");
      port_text = after.substr(1);
      has_port = true;
    }
    if (host.size() <= 2) bad_url(text, "empty IPv6 literal");
    for (char c : host.substr(1, host.size() - 2)) {
      if (!v6_char(lower(c))) bad_url(text, "invalid character in the IPv6 literal");
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      has_port = true;
    }
    for (char c : host) {
      if (!host_char(lower(c))) bad_url(text, "invalid character in the host");
    }
  }
  if (host.empty()) bad_url(text, "missing host");
  u.host.assign(host);
  for (char& c : u.host) c = lower(c);

  u.port = default_port(u.scheme);
  if (has_port) {
    unsigned port = 0;
    const auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
    if (port_text.empty() || ec != std::errc() || end != port_text.data() + port_text.size() ||
        port == 0 || port > 65535) {
      bad_url(text, "the port must be a number in 1..65535");
    }
    u.port = static_cast<std::uint16_t>(port);
  }

  rest = rest.substr(0, rest.find('#'));  // the fragment is the client's business only
  if (rest.empty()) {
    u.target = "/";
  } else if (rest.front() == '?') {
    u.target = "/";
    u.target.append(rest);
  } else {
    u.target.assign(rest);
  }
  return u;
}

std::string url::address() const { return host + ":" + std::to_string(port); }

std::string url::host_header() const {
  if (port == default_port(scheme)) return host;
  return host + ":" + std::to_string(port);
}

std::string url::origin() const {
  char digits[8];
  const auto end = std::to_chars(digits, digits + sizeof digits, port).ptr;
  std::string o;
  o.reserve(scheme.size() + host.size() + 4 + static_cast<std::size_t>(end - digits));
  o.append(scheme).append("://").append(host).append(":").append(digits, end);
  return o;
}

// ---- the default transport and dialer ---------------------------------------------------

// read and write hand out the stream's own task (no frame of their own).
task<net::io_result> tcp_transport::read(const context& ctx, std::span<char> buffer) {
  return stream_.read(ctx, buffer);
}

task<net::io_result> tcp_transport::read_reply(const context& ctx, std::span<char> buffer) {
  // Waiting first is safe with edge-triggered readiness: a reply that came
  // before the wait left the ready flag set (the wait returns at once), and
  // one that comes after raises a new edge. A stale flag costs one EAGAIN.
  if (const std::error_code ec = co_await stream_.wait_readable(ctx)) co_return net::io_result{0, ec};
  co_return co_await stream_.read(ctx, buffer);
}

task<net::io_result> tcp_transport::write(const context& ctx, std::string_view data) {
  return stream_.write(ctx, data);
}

bool tcp_transport::reusable() noexcept {
  const int fd = stream_.native_handle();
  if (fd < 0) return false;
  char b;
  for (;;) {
    const ssize_t n = ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno == EINTR) continue;
    // Nothing to read is the only good answer: 0 is the server's FIN, > 0 bytes
    // nobody asked for (a late or stray response), an error is a reset.
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
  }
}

namespace {
// What sluice::net::tcp_stream::connect can take: IP literals and localhost.
bool connectable_host(const std::string& host) {
  if (host == "localhost") return true;
  unsigned char buf[16];
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    return inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), buf) == 1;
  }
  return inet_pton(AF_INET, host.c_str(), buf) == 1;
}
}  // namespace

task<dial_result> dial_tcp(context ctx, dial_target target) {
  dial_result out;
  if (target.scheme != "http") {
    out.error = make_error_code(client_errc::unsupported_scheme);
    out.message = "no transport for \"" + target.scheme +
                  "\" (the default dialer speaks plain HTTP; TLS plugs in as client_options::dial)";
    co_return out;
  }
  // The address is what gets connected to (a dialer in front may have
  // rewritten it); its host part must be something connect() takes.
  const std::string host = target.address.substr(0, target.address.rfind(':'));
  if (!connectable_host(host)) {
    out.error = make_error_code(client_errc::unresolved_host);
    out.message = "cannot resolve \"" + host +
                  "\": the default dialer takes IP literals and localhost (a resolver plugs in "
                  "as client_options::dial)";
    co_return out;
  }
  auto [stream, ec] = co_await net::tcp_stream::connect(ctx, target.address);
  if (ec) {
    out.error = ec;
    out.message = "connect " + target.address + ": " + ec.message();
    co_return out;
  }
  out.conn = std::make_unique<tcp_transport>(std::move(stream));
  co_return out;
}

// ---- the pool -------------------------------------------------------------------------

namespace detail {

struct idle_conn {
  std::unique_ptr<transport> conn;
  clock::time_point since;
};

struct host_pool {
  host_pool(std::string o, std::int64_t max_conns) : origin(std::move(o)), slots(max_conns) {}
  const std::string origin;
  semaphore slots;              // a unit per connection in use or being dialed
  std::deque<idle_conn> idle;   // guarded by client::state::mu
  std::size_t users = 0;        // guarded by client::state::mu
};

using conn_list = std::vector<std::unique_ptr<transport>>;

void close_all(conn_list& conns) noexcept {
  for (auto& c : conns) c->close();
  conns.clear();
}

}  // namespace detail

using detail::conn_list;
using detail::host_pool;

struct client::state {
  explicit state(client_options o) : opts(std::move(o)) {
    limits.max_header_bytes = opts.max_response_header_bytes;
    limits.max_body_bytes = opts.max_response_body_bytes;
  }

  client_options opts;
  detail::response_limits limits;

  mutable std::mutex mu;
  std::unordered_map<std::string, std::shared_ptr<host_pool>> hosts;
  std::size_t idle_total = 0;
  clock::time_point next_sweep{};
  bool closed = false;

  std::atomic<std::uint64_t> requests{0}, failed{0}, dialed{0}, reused{0}, stale{0}, retries{0};
  std::atomic<std::int64_t> in_use{0}, waiting{0};

  bool expires() const noexcept { return opts.idle_timeout > clock::duration::zero(); }
  bool expired(const detail::idle_conn& c, clock::time_point now) const noexcept {
    return expires() && now - c.since >= opts.idle_timeout;
  }

  // The pool for `origin`, counted as used until unlease.
  std::shared_ptr<host_pool> lease(const std::string& origin) {
    std::lock_guard lock(mu);
    auto& slot = hosts[origin];
    if (!slot) slot = std::make_shared<host_pool>(origin, static_cast<std::int64_t>(opts.max_conns_per_host));
    ++slot->users;
    return slot;
  }

  void unlease(host_pool& hp) noexcept {
    std::lock_guard lock(mu);
    if (--hp.users == 0 && hp.idle.empty()) hosts.erase(hp.origin);
  }

  // Requires mu held. Moves hp's expired connections (the oldest ones, at the
  // front) to `out`.
  void drop_expired_locked(host_pool& hp, clock::time_point now, conn_list& out) {
    while (!hp.idle.empty() && expired(hp.idle.front(), now)) {
      out.push_back(std::move(hp.idle.front().conn));
      hp.idle.pop_front();
      --idle_total;
    }
  }

  // Requires mu held. Drops the expired connections of every host, and the
  // pools nobody uses any more.
  void sweep_locked(clock::time_point now, conn_list& out) {
    for (auto it = hosts.begin(); it != hosts.end();) {
      drop_expired_locked(*it->second, now, out);
      if (it->second->users == 0 && it->second->idle.empty()) {
        it = hosts.erase(it);
      } else {
        ++it;
      }
    }
  }

  // The most recently returned idle connection that is still usable, or
  // nullptr. Requires a lease on hp and one of its slots.
  std::unique_ptr<transport> take_idle(host_pool& hp) {
    conn_list doomed;
    std::unique_ptr<transport> c;
    for (;;) {
      {
        std::lock_guard lock(mu);
        drop_expired_locked(hp, clock::now(), doomed);
        if (hp.idle.empty()) break;
        c = std::move(hp.idle.back().conn);
        hp.idle.pop_back();
        --idle_total;
      }
      // Outside the lock: the probe is the transport's code.
      if (c->reusable()) break;
      doomed.push_back(std::move(c));
    }
    stale.fetch_add(doomed.size(), std::memory_order_relaxed);
    detail::close_all(doomed);
    return c;
  }

  // Gives a connection whose response was read whole back to hp's idle list
  // (or closes it if the pool keeps none, or the client is closing). Requires
  // a lease on hp; call before releasing the slot.
  void put_idle(host_pool& hp, std::unique_ptr<transport> c) noexcept {
    conn_list doomed;
    try {
      std::lock_guard lock(mu);
      const clock::time_point now = clock::now();
      if (closed || opts.max_idle_per_host == 0) {
        doomed.push_back(std::move(c));  // if this throws, c is still ours
      } else {
        // Room for the one pushed out, before anything moves: the usual
        // return (under the bound) allocates nothing here.
        if (hp.idle.size() >= opts.max_idle_per_host) doomed.reserve(1);
        hp.idle.push_back(detail::idle_conn{std::move(c), now});
        ++idle_total;
        if (hp.idle.size() > opts.max_idle_per_host) {
          doomed.push_back(std::move(hp.idle.front().conn));
          hp.idle.pop_front();
          --idle_total;
        }
      }
      // Hosts that are never asked for again would keep their expired
      // connections until the client goes: look at all of them now and then.
      if (expires() && now >= next_sweep) {
        next_sweep = sluice::detail::saturating_add(now, opts.idle_timeout);
        sweep_locked(now, doomed);
      }
    } catch (...) {
      // Out of memory for the list: the connection is simply not kept.
      if (c) c->close();
    }
    detail::close_all(doomed);
  }

  // Closes every idle connection (all of them, or those expired at `now`).
  std::size_t close_idle(std::optional<clock::time_point> now) noexcept {
    conn_list doomed;
    try {
      std::lock_guard lock(mu);
      doomed.reserve(idle_total);
      for (auto it = hosts.begin(); it != hosts.end();) {
        host_pool& hp = *it->second;
        if (now) {
          drop_expired_locked(hp, *now, doomed);
        } else {
          for (auto& e : hp.idle) doomed.push_back(std::move(e.conn));
          idle_total -= hp.idle.size();
          hp.idle.clear();
        }
        if (hp.users == 0 && hp.idle.empty()) {
          it = hosts.erase(it);
        } else {
          ++it;
        }
      }
    } catch (...) {
      // reserve() failed before anything moved: nothing is closed this time.
    }
    const std::size_t n = doomed.size();
    detail::close_all(doomed);
    return n;
  }

  task<dial_result> dial(const context& ctx, const url& u);
};

// ---- one request ---------------------------------------------------------------------

namespace {

constexpr std::size_t read_chunk = 16 * 1024;
constexpr std::size_t small_read = 512;
// Bodies up to this size go out in the same write as the head.
constexpr std::size_t coalesce_limit = 64 * 1024;

// The errors by which a connection says it is gone (rather than slow or refused).
bool connection_gone(const std::error_code& ec) noexcept {
  return ec == std::errc::connection_reset || ec == std::errc::broken_pipe ||
         ec == std::errc::connection_aborted || ec == client_errc::connection_closed_early;
}

bool idempotent(const client_request& req) noexcept {
  const std::string_view m = req.method;
  return m == "GET" || m == "HEAD" || m == "OPTIONS" || m == "TRACE" || m == "PUT" ||
         m == "DELETE" || req.header.has("idempotency-key") || req.header.has("x-idempotency-key");
}

// The header fields the client writes itself.
bool client_framing_field(std::string_view name) noexcept {
  return iequals(name, "host") || iequals(name, "content-length") ||
         iequals(name, "transfer-encoding");
}

// `room`: bytes the caller will append (a coalesced body).
std::string request_head(const client_request& req, const url& u, const std::string& user_agent,
                         std::size_t room) {
  using namespace std::string_view_literals;  // appends without strlen
  std::string h;
  h.reserve(128 + req.header.size() * 48 + room);
  h.append(req.method).append(" "sv).append(u.target).append(" HTTP/1.1\r\nHost: "sv);
  if (auto host = req.header.get("host")) {
    h.append(*host);
  } else {
    h.append(u.host_header());
  }
  h.append("\r\n"sv);
  if (!user_agent.empty() && !req.header.has("user-agent")) {
    h.append("User-Agent: "sv).append(user_agent).append("\r\n"sv);
  }
  for (const auto& f : req.header) {
    if (client_framing_field(f.name)) continue;
    h.append(f.name).append(": "sv).append(f.value).append("\r\n"sv);
  }
  const std::string_view m = req.method;
  if (!req.body.empty() || m == "POST" || m == "PUT" || m == "PATCH") {
    h.append("Content-Length: "sv).append(std::to_string(req.body.size())).append("\r\n"sv);
  }
  h.append("\r\n"sv);
  return h;
}

void check_request(const client_request& req) {
  if (!detail::is_token(req.method)) {
    throw std::invalid_argument("sluice::http::client: invalid method \"" + req.method + "\"");
  }
  for (const auto& f : req.header) {
    if (!detail::is_token(f.name)) {
      throw std::invalid_argument("sluice::http::client: invalid header name \"" + f.name + "\"");
    }
    if (!valid_field_value(f.value)) {
      throw std::invalid_argument("sluice::http::client: invalid value for header \"" + f.name +
                                  "\" (control characters)");
    }
  }
}

struct exchange_outcome {
  std::error_code error;
  std::string message;     // "<step>: <why>"
  bool retryable = false;  // the connection was gone before any response byte
  bool keep_alive = false;
};

// Writes the request and reads the response into the parser's output.
task<exchange_outcome> exchange(const context& ctx, transport& conn, std::string_view wire,
                                std::string_view separate_body, detail::response_parser& parser) {
  exchange_outcome o;
  net::io_result w = co_await conn.write(ctx, wire);
  if (!w.error && !separate_body.empty()) w = co_await conn.write(ctx, separate_body);
  if (w.error) {
    o.error = w.error;
    o.message = "write request: " + w.error.message();
    o.retryable = connection_gone(w.error);
    co_return o;
  }
  // Most responses (a webhook's "200 OK") fit in a small buffer in this
  // frame; one that fills it switches to a heap buffer of read_chunk bytes
  // for the rest, so a large body does not cost a read per 512 bytes.
  char small[small_read];
  std::unique_ptr<char[]> big;
  for (bool first = true;; ) {
    const std::span<char> into = big ? std::span<char>(big.get(), read_chunk) : std::span<char>(small);
    // (Not `co_await (first ? a : b)`: g++ 12 mishandles a task temporary in
    // a conditional operand of co_await.)
    task<net::io_result> next = first ? conn.read_reply(ctx, into) : conn.read(ctx, into);
    first = false;
    const net::io_result r = co_await std::move(next);
    if (r.error) {
      o.error = r.error;
      o.message = "read response: " + r.error.message();
      o.retryable = !parser.started() && connection_gone(r.error);
      co_return o;
    }
    if (r.bytes == 0) {
      if (parser.finish() == detail::response_parser::status::complete) co_return o;  // close-delimited
      o.error = parser.error();
      o.message = std::string("read response: ") + parser.reason();
      o.retryable = !parser.started();
      co_return o;
    }
    const auto f = parser.feed(into.data(), r.bytes);
    if (f.st == detail::response_parser::status::failed) {
      o.error = parser.error();
      o.message = std::string("read response: ") + parser.reason();
      co_return o;
    }
    if (f.st == detail::response_parser::status::complete) {
      // Bytes after the response were not asked for: the connection's
      // framing cannot be trusted any more.
      o.keep_alive = parser.keep_alive() && f.consumed == r.bytes;
      co_return o;
    }
    if (!big && r.bytes == into.size()) big.reset(new char[read_chunk]);
  }
}

// url::parse of the URL this thread sent to last, and its origin (the pool's
// key), remembered: a client mostly sends to the same few URLs (a relay's
// subscriber, a backend), and parsing costs more than comparing. Good until
// the next call on this thread: copy what must outlive a suspension.
struct url_memo {
  std::string text;
  url parsed;
  std::string origin;
  bool valid = false;
};

const url_memo& remembered_url(const std::string& text) {
  thread_local url_memo last;
  if (!last.valid || last.text != text) {
    last.valid = false;
    last.parsed = url::parse(text);  // throws for a bad URL: nothing is remembered
    last.origin = last.parsed.origin();
    last.text = text;
    last.valid = true;
  }
  return last;
}

std::string describe_duration(clock::duration d) {
  using namespace std::chrono;
  if (d >= seconds(1) && d % seconds(1) == clock::duration::zero()) {
    return std::to_string(duration_cast<seconds>(d).count()) + "s";
  }
  return std::to_string(duration_cast<milliseconds>(d).count()) + "ms";
}

// Gives back a host's slot (and the in-use count) when the request ends,
// however it ends.
struct slot_guard {
  client::state* s = nullptr;
  host_pool* hp = nullptr;
  slot_guard() = default;
  slot_guard(const slot_guard&) = delete;
  slot_guard& operator=(const slot_guard&) = delete;
  void hold(client::state* st, host_pool* p) noexcept {
    s = st;
    hp = p;
    s->in_use.fetch_add(1, std::memory_order_relaxed);
  }
  ~slot_guard() {
    if (hp == nullptr) return;
    s->in_use.fetch_sub(1, std::memory_order_relaxed);
    hp->slots.release(1);
  }
};

struct lease_guard {
  client::state* s;
  std::shared_ptr<host_pool> hp;
  lease_guard(client::state* st, const std::string& origin) : s(st), hp(st->lease(origin)) {}
  lease_guard(const lease_guard&) = delete;
  lease_guard& operator=(const lease_guard&) = delete;
  ~lease_guard() { s->unlease(*hp); }
};

}  // namespace

task<dial_result> client::state::dial(const context& ctx, const url& u) {
  dial_target target{u.scheme, u.host, u.port, u.address()};
  context dial_ctx = ctx;
  cancel_func stop_timer;
  if (opts.connect_timeout > clock::duration::zero()) {
    auto t = with_timeout(ctx, opts.connect_timeout);
    dial_ctx = t.ctx;
    stop_timer = t.cancel;
  }
  task<dial_result> t = opts.dial ? opts.dial(dial_ctx, std::move(target)) : dial_tcp(dial_ctx, std::move(target));
  dial_result d = co_await std::move(t);
  stop_timer();
  if (!d.error && !d.conn) {
    throw std::logic_error("sluice::http::client: the dialer returned neither a connection nor an error");
  }
  if (d.error == errc::deadline_exceeded && !ctx.err()) {
    // Our timer, not the request's deadline.
    d.error = make_error_code(client_errc::connect_timeout);
    d.message = "connect " + u.address() + ": timed out after " + describe_duration(opts.connect_timeout);
  } else if (d.error && d.message.empty()) {
    d.message = "connect " + u.address() + ": " + d.error.message();
  }
  if (d.error) d.conn.reset();
  if (d.conn) dialed.fetch_add(1, std::memory_order_relaxed);
  co_return d;
}

client::client(client_options opts) {
  if (opts.max_conns_per_host == 0 || opts.max_response_header_bytes == 0) {
    throw std::invalid_argument(
        "sluice::http::client: max_conns_per_host and max_response_header_bytes must be > 0");
  }
  s_ = std::make_shared<state>(std::move(opts));
}

client::~client() {
  {
    std::lock_guard lock(s_->mu);
    s_->closed = true;
  }
  s_->close_idle(std::nullopt);
}

task<client_result> client::send(context ctx, client_request req) {
  std::shared_ptr<state> s = s_;
  if (req.method.empty()) req.method = "GET";
  const url_memo& memo = remembered_url(req.url);  // used before the first suspension only
  const url u = memo.parsed;
  check_request(req);
  const bool is_head = req.method == "HEAD";
  const bool close_after = iequals(req.header.get_or("connection", ""), "close");
  const bool coalesce = req.body.size() <= coalesce_limit;
  std::string wire = request_head(req, u, s->opts.user_agent, coalesce ? req.body.size() : 0);
  std::string_view separate_body;
  if (coalesce) {
    wire.append(req.body);
  } else {
    separate_body = req.body;
  }

  s->requests.fetch_add(1, std::memory_order_relaxed);
  client_result out;
  const auto fail = [&](std::error_code ec, const std::string& why) {
    s->failed.fetch_add(1, std::memory_order_relaxed);
    out.error = ec;
    out.error_message = req.method + " " + req.url + ": " + why;
    out.response = client_response();
  };
  // The socket calls only look at the context when they would wait: a
  // request whose context is already done must not go out at all.
  if (std::error_code ec = ctx.err()) {
    fail(ec, ec.message());
    co_return out;
  }

  lease_guard lease(s.get(), memo.origin);
  host_pool& hp = *lease.hp;
  slot_guard slot;
  if (!hp.slots.try_acquire(1)) {
    s->waiting.fetch_add(1, std::memory_order_relaxed);
    const std::error_code ec = co_await hp.slots.acquire(ctx, 1);
    s->waiting.fetch_sub(1, std::memory_order_relaxed);
    if (ec) {
      fail(ec, "waiting for a connection: " + ec.message());
      co_return out;
    }
  }
  slot.hold(s.get(), &hp);

  std::unique_ptr<transport> conn = s->take_idle(hp);
  bool reused = conn != nullptr;
  for (bool retried = false;; retried = true) {
    if (reused) {
      s->reused.fetch_add(1, std::memory_order_relaxed);
    } else {
      dial_result d = co_await s->dial(ctx, u);
      if (d.error) {
        fail(d.error, d.message);
        co_return out;
      }
      conn = std::move(d.conn);
    }
    out.response.header.reserve(8);  // one allocation for a typical response's fields
    detail::response_parser parser(s->limits, out.response, is_head);
    exchange_outcome o = co_await exchange(ctx, *conn, wire, separate_body, parser);
    if (!o.error) {
      if (o.keep_alive && !close_after) {
        s->put_idle(hp, std::move(conn));
      } else {
        conn->close();
      }
      co_return out;
    }
    conn->close();
    conn.reset();
    // Go's rule (see the header): the server may have closed the pooled
    // connection just as we took it; a request that can safely be sent
    // twice, and got no response byte, goes out once more on a new one.
    if (reused && !retried && o.retryable && idempotent(req) && !ctx.err()) {
      s->retries.fetch_add(1, std::memory_order_relaxed);
      reused = false;
      continue;
    }
    fail(o.error, o.message);
    co_return out;
  }
}

task<client_result> client::get(context ctx, std::string url) {
  client_request req;
  req.url = std::move(url);
  co_return co_await send(std::move(ctx), std::move(req));
}

task<client_result> client::head(context ctx, std::string url) {
  client_request req;
  req.method = "HEAD";
  req.url = std::move(url);
  co_return co_await send(std::move(ctx), std::move(req));
}

task<client_result> client::post(context ctx, std::string url, std::string body,
                                 std::string content_type) {
  client_request req;
  req.method = "POST";
  req.url = std::move(url);
  req.body = std::move(body);
  if (!content_type.empty()) req.header.set("Content-Type", content_type);
  co_return co_await send(std::move(ctx), std::move(req));
}

void client::close_idle() noexcept { s_->close_idle(std::nullopt); }

std::size_t client::close_expired(clock::time_point now) noexcept {
  if (!s_->expires()) return 0;
  return s_->close_idle(now);
}

client_stats client::stats() const noexcept {
  client_stats st;
  st.requests = s_->requests.load(std::memory_order_relaxed);
  st.failed = s_->failed.load(std::memory_order_relaxed);
  st.connections_dialed = s_->dialed.load(std::memory_order_relaxed);
  st.connections_reused = s_->reused.load(std::memory_order_relaxed);
  st.stale_discarded = s_->stale.load(std::memory_order_relaxed);
  st.retries = s_->retries.load(std::memory_order_relaxed);
  const auto clamp = [](std::int64_t v) { return static_cast<std::size_t>(v < 0 ? 0 : v); };
  st.in_use = clamp(s_->in_use.load(std::memory_order_relaxed));
  st.waiting = clamp(s_->waiting.load(std::memory_order_relaxed));
  {
    std::lock_guard lock(s_->mu);
    st.idle = s_->idle_total;
  }
  return st;
}

}  // namespace sluice::http
