// HTTP messages: header fields, the request a handler receives and the
// response it fills in. Go: http.Header, *http.Request, http.ResponseWriter.
//
//   sluice::task<void> hello(sluice::http::request& req, sluice::http::response& res) {
//     res.header().set("Cache-Control", "no-store");
//     res.send(200, "hello " + std::string(req.path_value("name")) + "\n");
//     co_return;
//   }
//
// A handler owns neither object: both live in the connection's task and are
// valid until the handler's task finishes. A response is buffered: the server
// sends it when the handler returns, with Content-Length, Date and Connection
// filled in. A handler that wants to stream calls flush(): the headers and
// what is buffered go out at once and the rest of the body is sent chunked.
#pragma once

#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/task.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace sluice::http {

// ASCII case-insensitive equality, the rule for header names (RFC 9110 §5.1).
// Inline: header lookups call it for every field they pass.
inline bool iequals(std::string_view a, std::string_view b) noexcept {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i];
    char y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x + 32);
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y + 32);
    if (x != y) return false;
  }
  return true;
}

// Header fields in the order they arrived or were added. Names compare
// case-insensitively; a name may repeat. Storage is reused when the object is
// cleared, so a connection's request costs no allocation per header once warm.
// Go: http.Header (without its canonicalization of names).
class headers {
 public:
  struct field {
    std::string name;
    std::string value;
  };

  // The first value of `name`, if any. Go: h.Get(name) (with "present?").
  std::optional<std::string_view> get(std::string_view name) const noexcept;
  // The first value of `name`, or `fallback`.
  std::string_view get_or(std::string_view name, std::string_view fallback) const noexcept;
  bool has(std::string_view name) const noexcept { return get(name).has_value(); }
  // How many fields are named `name`.
  std::size_t count(std::string_view name) const noexcept;
  // Appends a field. Go: h.Add.
  void add(std::string_view name, std::string_view value);
  // Replaces every field named `name` by one with `value`. Go: h.Set.
  void set(std::string_view name, std::string_view value);
  // Removes every field named `name`; returns how many. Go: h.Del.
  std::size_t erase(std::string_view name) noexcept;
  // Room for `n` fields without reallocating (a request about to be built).
  void reserve(std::size_t n) { fields_.reserve(n); }
  // Removes every field (keeping storage for reuse).
  void clear() noexcept { size_ = 0; }
  // Frees the storage too.
  void release() noexcept;

  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  const field* begin() const noexcept { return fields_.data(); }
  const field* end() const noexcept { return fields_.data() + size_; }
  const field& operator[](std::size_t i) const noexcept { return fields_[i]; }

  // Internal (the parser): appends an empty field and returns it.
  field& append_empty();

 private:
  std::vector<field> fields_;  // [0, size_) are live; the rest keep capacity
  std::size_t size_ = 0;
};

// Percent-decoding of a path segment or query component ('+' stays '+' in
// paths; decode_query turns it into a space). nullopt for a malformed escape.
std::optional<std::string> percent_decode(std::string_view s);
std::optional<std::string> decode_query(std::string_view s);

class response;

// What the connection gives a request and a response that it owns (the
// server implements it; a request built by hand for a unit test has none).
class connection_hooks {
 public:
  // The request's context was created: cancel it when the peer hangs up.
  virtual void watch_hangup(const cancel_func& cancel) noexcept = 0;
  // Sends what the response has so far (headers first) now. See response::flush.
  virtual task<std::error_code> flush(response& res) = 0;

 protected:
  ~connection_hooks() = default;
};

// An HTTP request as the server parsed it. Go: *http.Request.
class request {
 public:
  request() = default;
  // A request for handler unit tests: method, target ("/path?query") and body.
  request(std::string_view method, std::string_view target, std::string_view body = {});
  request(const request&) = delete;
  request& operator=(const request&) = delete;
  ~request();

  // "GET", "POST", ... Go: r.Method.
  std::string_view method() const noexcept { return method_; }
  // The request-target exactly as sent ("/a%20b?x=1"). Go: r.RequestURI.
  std::string_view target() const noexcept { return target_; }
  // The target's path, still percent-encoded ("/a%20b"). Go: r.URL.EscapedPath().
  std::string_view raw_path() const noexcept;
  // The target's query without '?' ("x=1"), empty if none. Go: r.URL.RawQuery.
  std::string_view raw_query() const noexcept;
  // The first value of query parameter `key`, decoded; nullopt if absent or
  // malformed. Go: r.URL.Query().Get(key) (with "present?").
  std::optional<std::string> query_value(std::string_view key) const;
  int version_major() const noexcept { return major_; }
  int version_minor() const noexcept { return minor_; }

  const http::headers& header() const noexcept { return headers_; }
  http::headers& header() noexcept { return headers_; }
  // The whole body (the server reads it before calling the handler, bounded
  // by server_options::max_body_bytes). Go: io.ReadAll(r.Body).
  const std::string& body() const noexcept { return body_; }
  std::string& body() noexcept { return body_; }

  // "ip:port" of the client (of the proxy, if there is one). Go: r.RemoteAddr.
  std::string_view remote_address() const noexcept { return remote_; }
  // The IP part of remote_address() (without brackets for IPv6).
  std::string_view remote_ip() const noexcept {
    return std::string_view(remote_).substr(ip_begin_, ip_len_);
  }

  // The value the router matched for wildcard `{name}` or `{name...}`; empty
  // if the pattern has no such wildcard. Go: r.PathValue(name).
  std::string_view path_value(std::string_view name) const noexcept;
  // The pattern that matched ("GET /v1/events/{id}"); empty before routing or
  // when nothing matched. Go: r.Pattern (Go 1.23).
  std::string_view pattern() const noexcept { return pattern_; }

  // When the server started reading this request (a coarse clock reading,
  // within a few milliseconds; clock::time_point{} for a hand-made request).
  // The rate limiter decides with it, so a request costs no extra clock read.
  clock::time_point received_at() const noexcept { return received_at_; }

  // The request's context: cancelled when the client goes away (hangs up or
  // resets), when the server is forced to stop, or when the handler returns;
  // middleware may narrow it with set_context. Created on first use, so a
  // handler that never asks costs nothing. Go: r.Context().
  const context& ctx();
  // Replaces the context handlers further down see (a timeout middleware
  // passes a child with a deadline). Go: r.WithContext(ctx).
  void set_context(context ctx);

  // Internal (server and router).
  void set_method(std::string_view m) { method_.assign(m); }
  std::string& target_storage() noexcept { return target_; }
  void set_version(int major, int minor) noexcept {
    major_ = major;
    minor_ = minor;
  }
  void set_remote_address(std::string_view a);
  void set_received_at(clock::time_point t) noexcept { received_at_ = t; }
  void set_pattern(std::string_view p) { pattern_.assign(p); }
  void set_path_values(std::vector<std::pair<std::string_view, std::string>> v) {
    path_values_ = std::move(v);
  }
  void attach(connection_hooks* hooks, const context* parent) noexcept {
    hooks_ = hooks;
    parent_ = parent;
  }
  // Ends the request: cancels its context and clears it for the next one on
  // the connection, keeping storage for reuse unless `release_storage`.
  void finish(bool release_storage) noexcept;

 private:
  std::string method_;
  std::string target_;
  int major_ = 1;
  int minor_ = 1;
  http::headers headers_;
  std::string body_;
  std::string remote_;
  std::size_t ip_begin_ = 0;  // remote_ip() within remote_
  std::size_t ip_len_ = 0;
  clock::time_point received_at_{};
  std::string pattern_;
  std::vector<std::pair<std::string_view, std::string>> path_values_;
  connection_hooks* hooks_ = nullptr;
  const context* parent_ = nullptr;  // the connection's context
  std::optional<context> ctx_;
  cancel_func cancel_;
};

// The response a handler fills in. Go: http.ResponseWriter.
class response {
 public:
  response() = default;
  response(const response&) = delete;
  response& operator=(const response&) = delete;

  // The status code (200 unless set). Go: w.WriteHeader(code) (which also
  // fixes the headers; here they stay editable until the response is sent).
  int status() const noexcept { return status_; }
  // Throws std::invalid_argument outside 100..999.
  void set_status(int code);

  const http::headers& header() const noexcept { return headers_; }
  http::headers& header() noexcept { return headers_; }

  // Appends to the body. Go: w.Write(data).
  void write(std::string_view data) { body_.append(data); }
  // The body written so far (after a flush: written since that flush).
  const std::string& body() const noexcept { return body_; }
  std::string& body() noexcept { return body_; }

  // Sets the status, Content-Type and body in one call (replacing any body).
  void send(int code, std::string_view body, std::string_view content_type = "text/plain; charset=utf-8");
  // An error answer: status, text/plain body "message\n". Go: http.Error.
  void error(int code, std::string_view message);

  // Streams: sends the status line and headers (without Content-Length, so
  // HTTP/1.1 clients get a chunked body and HTTP/1.0 clients a body that ends
  // with the connection) and what the body holds now; later writes go out on
  // the next flush or when the handler returns. The error is the write's
  // (the client went away, the write timed out). Go: http.Flusher.
  task<std::error_code> flush();
  // Whether flush() has sent the headers (they can no longer change).
  bool headers_sent() const noexcept { return headers_sent_; }

  // Internal (server).
  void attach(connection_hooks* hooks) noexcept { hooks_ = hooks; }
  void mark_headers_sent() noexcept { headers_sent_ = true; }
  // Clears for the next request on the connection (keeping storage unless
  // `release_storage`).
  void reset(bool release_storage) noexcept;

 private:
  int status_ = 200;
  bool headers_sent_ = false;
  http::headers headers_;
  std::string body_;
  connection_hooks* hooks_ = nullptr;
};

// The standard reason phrase of a status code ("Not Found"); "" if unknown.
std::string_view reason_phrase(int status) noexcept;

}  // namespace sluice::http
