// Internal: the request parser. llhttp (strict mode) does the tokenizing and
// framing; this wrapper stores what it reports into a request, enforces the
// size limits, and adds the RFC 9112 checks llhttp leaves to its user:
//   * no obs-fold (a header line starting with SP/HT continues the previous
//     one in llhttp; RFC 9112 §5.2 lets a server reject it: we do, 400);
//   * no empty header name;
//   * HTTP/1.1 requires exactly one Host (RFC 9112 §3.2), HTTP/1.0 at most one;
//   * no Transfer-Encoding in HTTP/1.0 (RFC 9112 §6.1: faulty framing).
//
// The parser pauses after the headers (so the connection can answer 413 or
// send 100 Continue before reading a body) and after each message (so
// pipelined requests are handled one at a time, in order).
#pragma once

#include <sluice/http/message.hpp>

#include <llhttp.h>

#include <cstddef>
#include <cstdint>

namespace sluice::http::detail {

struct parse_limits {
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t max_headers = 100;
  std::size_t max_body_bytes = 1 << 20;
};

enum class parse_event {
  need_more,         // all input consumed; the message is not complete
  headers_complete,  // paused after the header block
  message_complete,  // paused after the message
  error,             // error_status() says what to answer; the connection must close
};

class request_parser {
 public:
  explicit request_parser(const parse_limits& limits) noexcept;
  // Starts over (between connections: the parser is pooled) with `limits`.
  void reset(const parse_limits& limits) noexcept;
  request_parser(const request_parser&) = delete;
  request_parser& operator=(const request_parser&) = delete;

  // The next message's parts go into `r` (which the caller has cleared).
  void bind(request* r) noexcept { req_ = r; }

  struct result {
    std::size_t consumed = 0;
    parse_event event = parse_event::need_more;
  };
  // Feeds bytes. After headers_complete or message_complete, feed the rest
  // (data + consumed) again; after error, stop.
  result feed(const char* data, std::size_t len) noexcept;

  // Whether bytes of a message have been seen (false between messages).
  bool in_message() const noexcept { return in_message_; }
  bool headers_done() const noexcept { return headers_done_; }
  // After headers_complete:
  bool expect_continue() const noexcept { return expect_continue_; }
  bool has_body() const noexcept { return has_body_; }
  bool keep_alive() const noexcept { return keep_alive_; }
  bool upgrade() const noexcept { return upgrade_; }
  // After error: the status to answer (400, 413, 417, 431, 505) and why.
  int error_status() const noexcept { return error_status_; }
  const char* error_reason() const noexcept { return error_reason_; }

 private:
  static int on_message_begin(llhttp_t* p);
  static int on_url(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_field(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_field_complete(llhttp_t* p);
  static int on_header_value(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, std::size_t len);
  static int on_message_complete(llhttp_t* p);
  static const llhttp_settings_t* settings() noexcept;
  int fail(int status, const char* reason) noexcept;
  bool add_stored(std::size_t n) noexcept;

  llhttp_t parser_;
  parse_limits limits_;
  request* req_ = nullptr;
  headers::field* field_ = nullptr;  // the header being parsed
  // Fold detection (see on_header_value): the current feed's bounds, and how
  // the current field's value spans went so far.
  const char* feed_begin_ = nullptr;
  const char* feed_end_ = nullptr;
  int value_spans_ = 0;
  bool prev_cr_ = false;  // the last header byte seen was CR
  bool value_ended_at_cr_ = false;
  std::size_t stored_ = 0;           // header bytes stored for this message
  std::size_t header_bytes_ = 0;     // header bytes consumed for this message
  std::size_t field_count_ = 0;
  int host_count_ = 0;
  bool has_te_ = false;
  bool in_message_ = false;
  bool headers_done_ = false;
  bool message_done_ = false;
  bool expect_continue_ = false;
  bool has_body_ = false;
  bool keep_alive_ = true;
  bool upgrade_ = false;
  int error_status_ = 0;
  const char* error_reason_ = "";
};

}  // namespace sluice::http::detail
