#include "parser.hpp"

#include <cstdint>
#include <cstring>

namespace sluice::http::detail {

namespace {
request_parser& self(llhttp_t* p) noexcept { return *static_cast<request_parser*>(p->data); }

// The first '\n' in [p, end), or end. Eight bytes a step (a request head is
// a few dozen bytes with a handful of line ends).
const char* find_lf(const char* p, const char* end) noexcept {
  constexpr std::uint64_t ones = 0x0101010101010101ull;
  constexpr std::uint64_t highs = 0x8080808080808080ull;
  constexpr std::uint64_t lfs = 0x0a0a0a0a0a0a0a0aull;
  while (end - p >= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    const std::uint64_t x = w ^ lfs;
    const std::uint64_t hit = (x - ones) & ~x & highs;
    if (hit != 0) return p + (__builtin_ctzll(hit) >> 3);
    p += 8;
  }
  while (p < end && *p != '\n') ++p;
  return p;
}
}  // namespace

const llhttp_settings_t* request_parser::settings() noexcept {
  static const llhttp_settings_t s = [] {
    llhttp_settings_t v;
    llhttp_settings_init(&v);
    v.on_message_begin = &on_message_begin;
    v.on_url = &on_url;
    v.on_header_field = &on_header_field;
    v.on_header_field_complete = &on_header_field_complete;
    v.on_header_value = &on_header_value;
    v.on_header_value_complete = &on_header_value_complete;
    v.on_headers_complete = &on_headers_complete;
    v.on_body = &on_body;
    v.on_message_complete = &on_message_complete;
    return v;
  }();
  return &s;
}

request_parser::request_parser(const parse_limits& limits) noexcept { reset(limits); }

void request_parser::reset(const parse_limits& limits) noexcept {
  limits_ = limits;
  llhttp_init(&parser_, HTTP_REQUEST, settings());
  parser_.data = this;
  req_ = nullptr;
  field_ = nullptr;
  stored_ = header_bytes_ = field_count_ = 0;
  host_count_ = 0;
  value_spans_ = 0;
  prev_cr_ = value_ended_at_cr_ = false;
  has_te_ = in_message_ = headers_done_ = message_done_ = false;
  expect_continue_ = has_body_ = upgrade_ = false;
  keep_alive_ = true;
  error_status_ = 0;
  error_reason_ = "";
}

int request_parser::fail(int status, const char* reason) noexcept {
  error_status_ = status;
  error_reason_ = reason;
  llhttp_set_error_reason(&parser_, reason);
  return -1;  // an error for every kind of callback (headers_complete included)
}

// Bounds what one message can make us store, independently of how the bytes
// were split across reads.
bool request_parser::add_stored(std::size_t n) noexcept {
  stored_ += n;
  return stored_ <= limits_.max_header_bytes;
}

int request_parser::on_message_begin(llhttp_t* p) {
  request_parser& s = self(p);
  s.in_message_ = true;
  s.headers_done_ = s.message_done_ = false;
  s.field_ = nullptr;
  s.stored_ = s.header_bytes_ = s.field_count_ = 0;
  s.host_count_ = 0;
  s.has_te_ = s.expect_continue_ = s.has_body_ = s.upgrade_ = false;
  s.keep_alive_ = true;
  return 0;
}

int request_parser::on_url(llhttp_t* p, const char* at, std::size_t len) {
  request_parser& s = self(p);
  if (!s.add_stored(len)) return s.fail(431, "request line and headers too large");
  s.req_->target_storage().append(at, len);
  return 0;
}

int request_parser::on_header_field(llhttp_t* p, const char* at, std::size_t len) {
  request_parser& s = self(p);
  if (!s.add_stored(len)) return s.fail(431, "request line and headers too large");
  if (s.field_ == nullptr) {
    if (++s.field_count_ > s.limits_.max_headers) return s.fail(431, "too many header fields");
    s.field_ = &s.req_->header().append_empty();
    s.value_spans_ = 0;
    s.value_ended_at_cr_ = false;
  }
  s.field_->name.append(at, len);
  return 0;
}

int request_parser::on_header_field_complete(llhttp_t* p) {
  request_parser& s = self(p);
  if (s.field_ == nullptr) return s.fail(400, "empty header name");
  return 0;
}

int request_parser::on_header_value(llhttp_t* p, const char* at, std::size_t len) {
  request_parser& s = self(p);
  if (s.field_ == nullptr) return s.fail(400, "empty header name");
  if (!s.add_stored(len)) return s.fail(431, "request line and headers too large");
  // llhttp accepts obs-fold and hands the continuation line over as one more
  // span of the same value, skipping the CR LF. A value split only by the
  // end of a read continues exactly at the start of the next feed, after a
  // span that ended at the end of the previous one. Anything else (the last
  // span stopped at a CR, or this one starts after some skipped bytes) is a
  // fold.
  if (s.value_spans_ > 0 && (s.value_ended_at_cr_ || at != s.feed_begin_)) {
    return s.fail(400, "folded header line (obs-fold)");
  }
  ++s.value_spans_;
  s.value_ended_at_cr_ = at + len < s.feed_end_ && at[len] == '\r';
  s.field_->value.append(at, len);
  return 0;
}

int request_parser::on_header_value_complete(llhttp_t* p) {
  request_parser& s = self(p);
  if (s.field_ == nullptr || s.field_->name.empty()) return s.fail(400, "empty header name");
  // llhttp keeps trailing whitespace of a value (RFC 9110 §5.5: not part of it).
  std::string& v = s.field_->value;
  while (!v.empty() && (v.back() == ' ' || v.back() == '\t')) v.pop_back();
  if (iequals(s.field_->name, "host")) ++s.host_count_;
  if (iequals(s.field_->name, "transfer-encoding")) s.has_te_ = true;
  s.field_ = nullptr;
  return 0;
}

int request_parser::on_headers_complete(llhttp_t* p) {
  request_parser& s = self(p);
  const int major = llhttp_get_http_major(p);
  const int minor = llhttp_get_http_minor(p);
  if (major != 1) return s.fail(505, "only HTTP/1.x is supported");
  if (minor == 1 && s.host_count_ != 1) {
    return s.fail(400, s.host_count_ == 0 ? "missing Host header" : "repeated Host header");
  }
  if (s.host_count_ > 1) return s.fail(400, "repeated Host header");
  if (minor == 0 && s.has_te_) return s.fail(400, "Transfer-Encoding in an HTTP/1.0 request");
  s.req_->set_version(major, minor);
  s.req_->set_method(llhttp_method_name(static_cast<llhttp_method_t>(llhttp_get_method(p))));
  const bool chunked = (p->flags & F_CHUNKED) != 0;
  if ((p->flags & F_CONTENT_LENGTH) != 0 && !chunked) {
    if (p->content_length > s.limits_.max_body_bytes) return s.fail(413, "request body too large");
    s.has_body_ = p->content_length > 0;
  } else {
    s.has_body_ = chunked;
  }
  if (auto e = s.req_->header().get("expect")) {
    if (!iequals(*e, "100-continue")) return s.fail(417, "unsupported Expect");
    s.expect_continue_ = minor >= 1;
  }
  s.keep_alive_ = llhttp_should_keep_alive(p) != 0;
  s.upgrade_ = p->upgrade != 0;
  s.headers_done_ = true;
  return HPE_PAUSED;
}

int request_parser::on_body(llhttp_t* p, const char* at, std::size_t len) {
  request_parser& s = self(p);
  std::string& body = s.req_->body();
  if (body.size() + len > s.limits_.max_body_bytes) return s.fail(413, "request body too large");
  body.append(at, len);
  return 0;
}

int request_parser::on_message_complete(llhttp_t* p) {
  request_parser& s = self(p);
  // Read before llhttp resets its per-message state for the next message.
  s.keep_alive_ = llhttp_should_keep_alive(p) != 0;
  s.message_done_ = true;
  s.in_message_ = false;
  return HPE_PAUSED;
}

request_parser::result request_parser::feed(const char* data, std::size_t len) noexcept {
  const bool counting = !headers_done_;
  feed_begin_ = data;
  feed_end_ = data + len;
  llhttp_errno_t err = llhttp_execute(&parser_, data, len);
  if (err == HPE_PAUSED && headers_done_ && !message_done_ && !has_body_) {
    // No body: go on to the end of the message (which needs no more bytes;
    // llhttp completes it on the next execute, even an empty one).
    const char* pos = llhttp_get_error_pos(&parser_);
    llhttp_resume(&parser_);
    err = llhttp_execute(&parser_, pos, static_cast<std::size_t>(data + len - pos));
  }
  result r;
  if (err == HPE_OK) {
    r.consumed = len;
    r.event = parse_event::need_more;
  } else if (err == HPE_PAUSED || err == HPE_PAUSED_UPGRADE) {
    r.consumed = static_cast<std::size_t>(llhttp_get_error_pos(&parser_) - data);
    if (err == HPE_PAUSED) {
      llhttp_resume(&parser_);
    } else {
      // An Upgrade (or CONNECT) request: answered as a plain request, and
      // nothing after it is parsed (the connection closes after the answer).
      upgrade_ = true;
      message_done_ = true;
      in_message_ = false;
    }
    r.event = message_done_ ? parse_event::message_complete : parse_event::headers_complete;
  } else {
    if (error_status_ == 0) {  // llhttp's own error, not one of our checks
      error_status_ = 400;
      error_reason_ = llhttp_get_error_reason(&parser_);
      if (error_reason_ == nullptr) error_reason_ = llhttp_errno_name(err);
    }
    r.consumed = len;
    r.event = parse_event::error;
    return r;
  }
  if (counting) {
    // Header bytes as sent (request line, names, values, separators). A feed
    // that started before the end of the headers stops there (the pause).
    const std::size_t header_part = r.event == parse_event::need_more ? len : r.consumed;
    header_bytes_ += header_part;
    // llhttp's strict mode still takes a bare LF after the request line;
    // RFC 9112 §2.2 lets us reject it, and a proxy in front may not agree
    // with us on where the line ends, so we do.
    const char* const head_end = data + header_part;
    for (const char* p = data; p < head_end;) {
      const char* lf = find_lf(p, head_end);
      if (lf == head_end) break;
      const bool cr_before = lf > data ? lf[-1] == '\r' : prev_cr_;
      if (!cr_before) {
        error_status_ = 400;
        error_reason_ = "bare LF in the request head";
        r.event = parse_event::error;
        return r;
      }
      p = lf + 1;
    }
    if (header_part > 0) prev_cr_ = data[header_part - 1] == '\r';
    if (header_bytes_ > limits_.max_header_bytes) {
      error_status_ = 431;
      error_reason_ = "request line and headers too large";
      r.event = parse_event::error;
      return r;
    }
  }
  if (r.event == parse_event::message_complete) headers_done_ = false;
  return r;
}

}  // namespace sluice::http::detail
