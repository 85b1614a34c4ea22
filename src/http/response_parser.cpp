#include "response_parser.hpp"

namespace sluice::http::detail {

namespace {
response_parser& self(llhttp_t* p) noexcept { return *static_cast<response_parser*>(p->data); }

bool bodyless_status(int status) noexcept {
  return (status >= 100 && status < 200) || status == 204 || status == 304;
}
}  // namespace

const llhttp_settings_t* response_parser::settings() noexcept {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t v;
    llhttp_settings_init(&v);
    v.on_message_begin = &on_message_begin;
    v.on_status = &on_status;
    v.on_header_field = &on_header_field;
    v.on_header_value = &on_header_value;
    v.on_header_value_complete = &on_header_value_complete;
    v.on_headers_complete = &on_headers_complete;
    v.on_body = &on_body;
    v.on_message_complete = &on_message_complete;
    return v;
  }();
  return &s;
}

response_parser::response_parser(const response_limits& limits, client_response& out,
                                 bool head) noexcept
    : limits_(limits), out_(out), head_(head) {
  llhttp_init(&parser_, HTTP_RESPONSE, settings());
  parser_.data = this;
}

int response_parser::fail(client_errc e, const char* reason) noexcept {
  error_ = make_error_code(e);
  reason_ = reason;
  llhttp_set_error_reason(&parser_, reason);
  return -1;  // an error for every kind of callback
}

response_parser::status response_parser::fail_now(client_errc e, const char* reason) noexcept {
  error_ = make_error_code(e);
  reason_ = reason;
  return status::failed;
}

int response_parser::on_message_begin(llhttp_t* p) {
  response_parser& s = self(p);
  s.in_message_ = true;
  s.headers_done_ = s.message_done_ = s.interim_ = false;
  s.field_ = nullptr;
  s.out_.status = 0;
  s.out_.header.clear();  // an interim response's headers are not the final one's
  s.out_.body.clear();
  return 0;
}

int response_parser::on_status(llhttp_t*, const char*, std::size_t) {
  return 0;  // the reason phrase is not kept; its bytes count in feed()
}

int response_parser::on_header_field(llhttp_t* p, const char* at, std::size_t len) {
  response_parser& s = self(p);
  if (s.headers_done_) {
    // A trailer field: dropped, but bounded with the heads (feed() only
    // counts the bytes before each header block's end).
    s.header_bytes_ += len;
    if (s.header_bytes_ > s.limits_.max_header_bytes) {
      return s.fail(client_errc::response_too_large, "response trailers too large");
    }
    return 0;
  }
  if (s.field_ == nullptr) s.field_ = &s.out_.header.append_empty();
  s.field_->name.append(at, len);
  return 0;
}

int response_parser::on_header_value(llhttp_t* p, const char* at, std::size_t len) {
  response_parser& s = self(p);
  if (s.headers_done_) {
    s.header_bytes_ += len;
    if (s.header_bytes_ > s.limits_.max_header_bytes) {
      return s.fail(client_errc::response_too_large, "response trailers too large");
    }
    return 0;
  }
  if (s.field_ == nullptr) return s.fail(client_errc::malformed_response, "header value without a name");
  s.field_->value.append(at, len);
  return 0;
}

int response_parser::on_header_value_complete(llhttp_t* p) {
  response_parser& s = self(p);
  if (s.field_ != nullptr) {
    // llhttp keeps a value's trailing whitespace (RFC 9110 §5.5: not part of it).
    std::string& v = s.field_->value;
    while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
  }
  s.field_ = nullptr;
  return 0;
}

int response_parser::on_headers_complete(llhttp_t* p) {
  response_parser& s = self(p);
  if (llhttp_get_http_major(p) != 1) return s.fail(client_errc::malformed_response, "not an HTTP/1.x response");
  const int status = llhttp_get_status_code(p);
  // We never ask for a protocol switch, so a 101 cannot be ours to follow.
  if (status == 101) {
    return s.fail(client_errc::malformed_response, "101 Switching Protocols to a request without Upgrade");
  }
  s.out_.status = status;
  s.out_.version_minor = llhttp_get_http_minor(p);
  s.headers_done_ = true;
  s.interim_ = status >= 100 && status < 200;
  if (s.head_ || bodyless_status(status)) return 1;  // no body, whatever the headers say
  if ((p->flags & F_CONTENT_LENGTH) != 0 && (p->flags & F_CHUNKED) == 0 &&
      p->content_length > s.limits_.max_body_bytes) {
    return s.fail(client_errc::response_too_large, "response body too large (Content-Length)");
  }
  return HPE_PAUSED;
}

int response_parser::on_body(llhttp_t* p, const char* at, std::size_t len) {
  response_parser& s = self(p);
  std::string& body = s.out_.body;
  if (body.size() + len > s.limits_.max_body_bytes) {
    return s.fail(client_errc::response_too_large, "response body too large");
  }
  body.append(at, len);
  return 0;
}

int response_parser::on_message_complete(llhttp_t* p) {
  response_parser& s = self(p);
  // Read before llhttp resets its per-message state for the next message.
  s.keep_alive_ = llhttp_should_keep_alive(p) != 0;
  s.message_done_ = true;
  s.in_message_ = false;
  return HPE_PAUSED;
}

response_parser::result response_parser::feed(const char* data, std::size_t len) noexcept {
  received_ += len;
  const char* pos = data;
  const char* const end = data + len;
  // Each round either consumes bytes or moves past a pause, so this ends.
  for (;;) {
    const bool in_head = !headers_done_ && !message_done_;
    const llhttp_errno_t err = llhttp_execute(&parser_, pos, static_cast<std::size_t>(end - pos));
    std::size_t consumed = 0;
    if (err == HPE_OK) {
      consumed = static_cast<std::size_t>(end - pos);
    } else if (err == HPE_PAUSED) {
      consumed = static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - pos);
      llhttp_resume(&parser_);
    } else {
      if (!error_) {  // llhttp's own error, not one of our checks
        error_ = make_error_code(client_errc::malformed_response);
        reason_ = llhttp_get_error_reason(&parser_);
        if (reason_ == nullptr) reason_ = llhttp_errno_name(err);
      }
      return {len, status::failed};
    }
    if (in_head) {
      // Up to the pause (the end of the header block) or all of it (the block
      // goes on in the next read).
      header_bytes_ += consumed;
      if (header_bytes_ > limits_.max_header_bytes) {
        return {len, fail_now(client_errc::response_too_large, "response status line and headers too large")};
      }
    }
    pos += consumed;
    if (message_done_) {
      if (!interim_) {
        final_done_ = true;
        return {static_cast<std::size_t>(pos - data), status::complete};
      }
      // 100 Continue, 103 Early Hints, ...: the final response follows.
      message_done_ = headers_done_ = false;
      if (pos == end) return {len, status::need_more};
      continue;
    }
    if (err == HPE_OK) return {len, status::need_more};
    // Paused after a header block with a body to come: go on (even with no
    // bytes left, so llhttp settles into the body state it will wait in).
  }
}

response_parser::status response_parser::finish() noexcept {
  if (final_done_) return status::complete;
  if (error_) return status::failed;
  if (!in_message_) {
    return fail_now(client_errc::connection_closed_early,
                    received_ == 0 ? "the server closed the connection without a response"
                                   : "the server closed the connection after an interim response");
  }
  const llhttp_errno_t err = llhttp_finish(&parser_);
  // A close-delimited body ends here: on_message_complete ran (and asked for
  // a pause, which llhttp_finish reports as its result).
  if ((err == HPE_OK || err == HPE_PAUSED) && message_done_ && !interim_) {
    final_done_ = true;
    keep_alive_ = false;
    return status::complete;
  }
  if (error_) return status::failed;
  return fail_now(client_errc::connection_closed_early,
                  headers_done_ ? "the server closed the connection in the middle of the body"
                                : "the server closed the connection in the middle of the headers");
}

}  // namespace sluice::http::detail
