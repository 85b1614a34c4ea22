// Internal: the client's response parser. llhttp (HTTP_RESPONSE, strict mode)
// does the tokenizing and framing; this wrapper stores the final response,
// skips interim 1xx responses, and enforces the size limits.
//
// Where a message has no body llhttp must be told or it may wait for one:
// on_headers_complete returns 1 ("skip the body") for a response to HEAD and
// for 1xx, 204 and 304 (llhttp 8 would otherwise read a body announced by the
// Content-Length of a 304, which is the representation's length, not this
// message's). For every other response it pauses there, so feed() knows
// exactly where the header block ended; the bodyless ones reach
// on_message_complete (which always pauses) at that same point. Either way
// the header bytes are counted exactly, as received, and the limit holds
// across reads of any size.
//
// One parser reads one exchange (the interim responses and the final one);
// the connection is reused only if nothing followed the final response.
#pragma once

#include <sluice/http/client.hpp>

#include <llhttp.h>

#include <cstddef>
#include <system_error>

namespace sluice::http::detail {

struct response_limits {
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t max_body_bytes = 64 * 1024 * 1024;
};

class response_parser {
 public:
  // The final response goes into `out` (cleared at each message's start).
  // `head`: the request was HEAD, so the response has no body.
  response_parser(const response_limits& limits, client_response& out, bool head) noexcept;
  response_parser(const response_parser&) = delete;
  response_parser& operator=(const response_parser&) = delete;

  enum class status {
    need_more,  // all input consumed; the final response is not complete
    complete,   // the final response is complete; `consumed` says where it ended
    failed,     // error() says why; the connection must be closed
  };
  struct result {
    std::size_t consumed = 0;
    status st = status::need_more;
  };
  // Feeds bytes received. After complete or failed, feed nothing more.
  result feed(const char* data, std::size_t len) noexcept;
  // The connection reached end of stream: complete for a close-delimited
  // body, otherwise failed (connection_closed_early).
  status finish() noexcept;

  // Whether any byte has been received (a response had begun).
  bool started() const noexcept { return received_ > 0; }
  // After complete: whether the server allows another request on the connection.
  bool keep_alive() const noexcept { return keep_alive_; }
  // After failed: the error and a reason for the message.
  std::error_code error() const noexcept { return error_; }
  const char* reason() const noexcept { return reason_; }

 private:
  static int on_message_begin(llhttp_t* p);
  static int on_status(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_field(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_value(llhttp_t* p, const char* at, std::size_t len);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, std::size_t len);
  static int on_message_complete(llhttp_t* p);
  static const llhttp_settings_t* settings() noexcept;
  int fail(client_errc e, const char* reason) noexcept;
  status fail_now(client_errc e, const char* reason) noexcept;

  llhttp_t parser_;
  const response_limits limits_;
  client_response& out_;
  const bool head_;
  headers::field* field_ = nullptr;  // the header being parsed (nullptr: none)
  std::size_t received_ = 0;         // bytes fed in total
  std::size_t header_bytes_ = 0;     // heads of every message so far, plus trailers
  bool in_message_ = false;
  bool headers_done_ = false;        // of the current message
  bool message_done_ = false;        // of the current message
  bool interim_ = false;             // the current message is a 1xx
  bool final_done_ = false;
  bool keep_alive_ = false;
  std::error_code error_;
  const char* reason_ = "";
};

}  // namespace sluice::http::detail
