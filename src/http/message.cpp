#include <sluice/http/message.hpp>

#include <stdexcept>
#include <string>

namespace sluice::http {

namespace {
int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::optional<std::string> decode(std::string_view s, bool plus_is_space) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (c == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}
}  // namespace

std::optional<std::string> percent_decode(std::string_view s) { return decode(s, false); }
std::optional<std::string> decode_query(std::string_view s) { return decode(s, true); }

// ---- headers ----------------------------------------------------------------------------

std::optional<std::string_view> headers::get(std::string_view name) const noexcept {
  for (std::size_t i = 0; i < size_; ++i) {
    if (iequals(fields_[i].name, name)) return std::string_view(fields_[i].value);
  }
  return std::nullopt;
}

std::string_view headers::get_or(std::string_view name, std::string_view fallback) const noexcept {
  auto v = get(name);
  return v ? *v : fallback;
}

std::size_t headers::count(std::string_view name) const noexcept {
  std::size_t n = 0;
  for (std::size_t i = 0; i < size_; ++i) n += iequals(fields_[i].name, name) ? 1 : 0;
  return n;
}

headers::field& headers::append_empty() {
  if (size_ == fields_.size()) fields_.emplace_back();
  field& f = fields_[size_++];
  f.name.clear();
  f.value.clear();
  return f;
}

void headers::add(std::string_view name, std::string_view value) {
  field& f = append_empty();
  f.name.assign(name);
  f.value.assign(value);
}

void headers::set(std::string_view name, std::string_view value) {
  for (std::size_t i = 0; i < size_; ++i) {
    if (iequals(fields_[i].name, name)) {
      fields_[i].value.assign(value);
      // Drop later duplicates.
      std::size_t out = i + 1;
      for (std::size_t j = i + 1; j < size_; ++j) {
        if (!iequals(fields_[j].name, name)) {
          if (out != j) std::swap(fields_[out], fields_[j]);
          ++out;
        }
      }
      size_ = out;
      return;
    }
  }
  add(name, value);
}

std::size_t headers::erase(std::string_view name) noexcept {
  std::size_t out = 0;
  for (std::size_t j = 0; j < size_; ++j) {
    if (!iequals(fields_[j].name, name)) {
      if (out != j) std::swap(fields_[out], fields_[j]);
      ++out;
    }
  }
  const std::size_t removed = size_ - out;
  size_ = out;
  return removed;
}

void headers::release() noexcept {
  std::vector<field>().swap(fields_);
  size_ = 0;
}

// ---- request ------------------------------------------------------------------------------

request::request(std::string_view method, std::string_view target, std::string_view body)
    : method_(method), target_(target), body_(body) {
  if (method_.empty()) throw std::invalid_argument("sluice::http::request: empty method");
  if (target_.empty()) throw std::invalid_argument("sluice::http::request: empty target");
}

request::~request() { finish(true); }

std::string_view request::raw_path() const noexcept {
  std::string_view t = target_;
  return t.substr(0, t.find('?'));
}

std::string_view request::raw_query() const noexcept {
  std::string_view t = target_;
  const std::size_t q = t.find('?');
  return q == std::string_view::npos ? std::string_view() : t.substr(q + 1);
}

std::optional<std::string> request::query_value(std::string_view key) const {
  std::string_view q = raw_query();
  while (!q.empty()) {
    const std::size_t amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    const std::size_t eq = pair.find('=');
    auto k = decode_query(pair.substr(0, eq));
    if (!k || *k != key) continue;
    return decode_query(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
  }
  return std::nullopt;
}

void request::set_remote_address(std::string_view a) {
  remote_.assign(a);
  // "ip:port" or "[v6]:port"; anything else is all IP.
  std::size_t begin = 0;
  std::size_t len = a.size();
  const std::size_t colon = a.rfind(':');
  if (colon != std::string_view::npos && a.find(':') == colon) {
    len = colon;
  } else if (!a.empty() && a.front() == '[') {
    const std::size_t close = a.find(']');
    if (close != std::string_view::npos) {
      begin = 1;
      len = close - 1;
    }
  }
  ip_begin_ = begin;
  ip_len_ = len;
}

std::string_view request::path_value(std::string_view name) const noexcept {
  for (const auto& [n, v] : path_values_) {
    if (n == name) return v;
  }
  return {};
}

const context& request::ctx() {
  if (!ctx_) {
    auto [c, cancel] = with_cancel(parent_ != nullptr ? *parent_ : context::background());
    ctx_.emplace(std::move(c));
    cancel_ = std::move(cancel);
    if (hooks_ != nullptr) hooks_->watch_hangup(cancel_);
  }
  return *ctx_;
}

void request::set_context(context ctx) {
  (void)this->ctx();  // the base context (and its cancel) exist first
  ctx_.emplace(std::move(ctx));
}

void request::finish(bool release_storage) noexcept {
  if (ctx_) {
    if (hooks_ != nullptr) hooks_->watch_hangup(cancel_func());
    cancel_();
    cancel_ = cancel_func();
    ctx_.reset();
  }
  method_.clear();
  target_.clear();
  body_.clear();
  pattern_.clear();
  path_values_.clear();
  headers_.clear();
  if (release_storage) {
    std::string().swap(method_);
    std::string().swap(target_);
    std::string().swap(body_);
    std::string().swap(pattern_);
    std::vector<std::pair<std::string_view, std::string>>().swap(path_values_);
    headers_.release();
  }
}

// ---- response -----------------------------------------------------------------------------

void response::set_status(int code) {
  if (code < 100 || code > 999) {
    throw std::invalid_argument("sluice::http::response: status " + std::to_string(code) +
                                " is outside 100..999");
  }
  status_ = code;
}

void response::send(int code, std::string_view body, std::string_view content_type) {
  set_status(code);
  headers_.set("Content-Type", content_type);
  body_.assign(body);
}

void response::error(int code, std::string_view message) {
  set_status(code);
  headers_.set("Content-Type", "text/plain; charset=utf-8");
  headers_.set("X-Content-Type-Options", "nosniff");
  body_.assign(message);
  body_.push_back('\n');
}

task<std::error_code> response::flush() {
  if (hooks_ == nullptr) {
    headers_sent_ = true;
    co_return std::error_code();
  }
  co_return co_await hooks_->flush(*this);
}

void response::reset(bool release_storage) noexcept {
  status_ = 200;
  headers_sent_ = false;
  headers_.clear();
  body_.clear();
  if (release_storage) {
    headers_.release();
    std::string().swap(body_);
  }
}

std::string_view reason_phrase(int status) noexcept {
  switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "";
  }
}

}  // namespace sluice::http
