#include <sluice/http/middleware.hpp>

#include <nlohmann/json.hpp>

#include <arpa/inet.h>

#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>
#include <iostream>
#include <random>
#include <stdexcept>

namespace sluice::http {

namespace {

void emit(const log_sink& log, std::string_view line) {
  if (log) {
    log(line);
  } else {
    std::cerr << line << '\n';
  }
}

// A number's decimal text in a small buffer (no allocation).
struct number_text {
  explicit number_text(long long v) noexcept : len(static_cast<std::size_t>(std::to_chars(buf, buf + sizeof buf, v).ptr - buf)) {}
  operator std::string_view() const noexcept { return {buf, len}; }  // NOLINT: implicit on purpose
  char buf[24];
  std::size_t len;
};

// Whole seconds, rounded up (a client that waits the advertised time must
// find a token).
long long ceil_seconds(clock::duration d) {
  if (d <= clock::duration::zero()) return 0;
  const auto s = std::chrono::ceil<std::chrono::seconds>(d).count();
  return static_cast<long long>(s);
}

std::string now_rfc3339() {
  timespec ts{};
  clock_gettime(CLOCK_REALTIME, &ts);
  std::tm tm{};
  gmtime_r(&ts.tv_sec, &tm);
  char buf[40];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, ".%03ldZ", ts.tv_nsec / 1000000);
  return buf;
}


std::string new_id() {
  // A per-thread generator seeded once from the OS: ids need to be unique,
  // not secret.
  thread_local std::mt19937_64 gen([] {
    std::random_device rd;
    return (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
  }());
  static constexpr char hex[] = "0123456789abcdef";
  std::string out(16, '0');
  std::uint64_t v = gen();
  for (int i = 0; i < 16; ++i) {
    out[static_cast<std::size_t>(i)] = hex[v & 15];
    v >>= 4;
  }
  return out;
}

// The request id's header name, kept on the request so request_id() finds it.
constexpr std::string_view id_marker = "X-Sluice-Request-Id";

void set_rate_headers(response& res, const rate_limit_options& o, const rate::verdict& v) {
  res.header().set("RateLimit-Limit", number_text(o.burst));
  res.header().set("RateLimit-Remaining",
                   number_text(static_cast<long long>(std::floor(std::max(0.0, v.remaining)))));
  res.header().set("RateLimit-Reset", number_text(ceil_seconds(v.reset)));
}

}  // namespace

bool is_safe_id(std::string_view id) noexcept {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

handler chain(handler h, std::initializer_list<middleware> layers) {
  if (!h) throw std::invalid_argument("sluice::http::chain: empty handler");
  std::vector<middleware> v(layers);
  for (auto it = v.rbegin(); it != v.rend(); ++it) {
    if (!*it) throw std::invalid_argument("sluice::http::chain: empty middleware");
    h = (*it)(std::move(h));
    if (!h) throw std::invalid_argument("sluice::http::chain: a middleware returned an empty handler");
  }
  return h;
}

// ---- recover --------------------------------------------------------------------------

middleware recover(log_sink log) {
  return [log](handler next) -> handler {
    return [log, next](request& req, response& res) -> task<void> {
      std::string what;
      try {
        co_await next(req, res);
        co_return;
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
        what = "non-std exception";
      }
      nlohmann::json line = {{"time", now_rfc3339()},
                             {"level", "error"},
                             {"msg", "handler threw"},
                             {"method", req.method()},
                             {"target", req.target()},
                             {"request_id", request_id(req)},
                             {"error", what}};
      emit(log, line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      if (res.headers_sent()) {
        // Half a stream is out: only closing the connection tells the client.
        throw std::runtime_error("handler threw after streaming began: " + what);
      }
      res.header().clear();
      res.error(500, "internal server error");
    };
  };
}

// ---- request id -------------------------------------------------------------------------

middleware request_id(std::string header) {
  if (header.empty()) throw std::invalid_argument("sluice::http::request_id: empty header name");
  return [header](handler next) -> handler {
    return [header, next](request& req, response& res) -> task<void> {
      std::string id;
      if (auto given = req.header().get(header); given && is_safe_id(*given)) {
        id.assign(*given);
      } else {
        id = new_id();
      }
      req.header().set(id_marker, id);
      res.header().set(header, id);
      co_await next(req, res);
    };
  };
}

std::string_view request_id(const request& req) noexcept { return req.header().get_or(id_marker, ""); }

// ---- access log -----------------------------------------------------------------------

middleware access_log(log_sink log) {
  return [log](handler next) -> handler {
    return [log, next](request& req, response& res) -> task<void> {
      const auto start = clock::now();
      co_await next(req, res);
      const double ms = std::chrono::duration<double, std::milli>(clock::now() - start).count();
      nlohmann::json line = {{"time", now_rfc3339()},
                             {"level", "info"},
                             {"msg", "request"},
                             {"method", req.method()},
                             {"target", req.target()},
                             {"pattern", req.pattern()},
                             {"status", res.status()},
                             {"bytes", res.body().size()},
                             {"duration_ms", std::round(ms * 1000) / 1000},
                             {"remote", req.remote_address()},
                             {"request_id", request_id(req)}};
      emit(log, line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    };
  };
}

// ---- timeout --------------------------------------------------------------------------

middleware timeout(clock::duration d, std::string message) {
  if (d <= clock::duration::zero()) throw std::invalid_argument("sluice::http::timeout: d must be > 0");
  return [d, message](handler next) -> handler {
    return [d, message, next](request& req, response& res) -> task<void> {
      auto [ctx, cancel] = with_timeout(req.ctx(), d);
      req.set_context(ctx);
      co_await next(req, res);
      const bool expired = ctx.err() == errc::deadline_exceeded;
      cancel();
      if (expired && !res.headers_sent()) {
        res.header().clear();
        res.error(503, message);
      }
    };
  };
}

// ---- rate limit ---------------------------------------------------------------------------

struct client_rate_limiter::cidr {
  int family = AF_INET;
  std::array<unsigned char, 16> addr{};
  int prefix = 0;

  static bool parse_ip(std::string_view text, int& family, std::array<unsigned char, 16>& out) {
    std::string s(text);
    if (s.size() >= 2 && s.front() == '[' && s.back() == ']') s = s.substr(1, s.size() - 2);
    out.fill(0);
    if (inet_pton(AF_INET, s.c_str(), out.data()) == 1) {
      family = AF_INET;
      return true;
    }
    if (inet_pton(AF_INET6, s.c_str(), out.data()) == 1) {
      family = AF_INET6;
      return true;
    }
    return false;
  }

  bool contains(std::string_view ip) const noexcept {
    int fam = 0;
    std::array<unsigned char, 16> a{};
    try {
      if (!parse_ip(ip, fam, a) || fam != family) return false;
    } catch (...) {
      return false;
    }
    int bits = prefix;
    for (std::size_t i = 0; bits > 0; ++i, bits -= 8) {
      const unsigned char mask = bits >= 8 ? 0xff : static_cast<unsigned char>(0xff << (8 - bits));
      if ((a[i] & mask) != (addr[i] & mask)) return false;
    }
    return true;
  }
};

namespace {
rate::keyed_limiter_options limiter_options(const rate_limit_options& o) {
  if (o.burst < 1) throw std::invalid_argument("sluice::http::rate_limit: burst must be >= 1");
  return {.limit = o.limit, .burst = o.burst, .max_keys = o.max_keys, .idle_ttl = o.idle_ttl};
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}
}  // namespace

client_rate_limiter::client_rate_limiter(rate_limit_options o)
    : opts_(std::move(o)), limiter_(limiter_options(opts_)) {
  for (const std::string& p : opts_.trusted_proxies) {
    auto c = std::make_shared<cidr>();
    std::string_view text = p;
    const std::size_t slash = text.find('/');
    if (!cidr::parse_ip(text.substr(0, slash), c->family, c->addr)) {
      throw std::invalid_argument("sluice::http::rate_limit: trusted proxy \"" + p +
                                  "\" is not an IP address or CIDR range");
    }
    const int max_bits = c->family == AF_INET ? 32 : 128;
    c->prefix = max_bits;
    if (slash != std::string_view::npos) {
      const std::string_view bits = text.substr(slash + 1);
      int v = -1;
      const auto r = std::from_chars(bits.data(), bits.data() + bits.size(), v);
      if (r.ec != std::errc() || r.ptr != bits.data() + bits.size() || v < 0 || v > max_bits) {
        throw std::invalid_argument("sluice::http::rate_limit: trusted proxy \"" + p +
                                    "\" has a bad prefix length");
      }
      c->prefix = v;
    }
    proxies_.push_back(std::move(c));
  }
  if (opts_.key == rate_key::api_key && opts_.api_key_header.empty()) {
    throw std::invalid_argument("sluice::http::rate_limit: api_key_header is empty");
  }
}

std::size_t client_rate_limiter::key_hash::operator()(const std::string& s) const noexcept {
  std::uint64_t h = 0x9e3779b97f4a7c15ull ^ s.size();
  std::size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    std::uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0xff51afd7ed558ccdull;
    h ^= h >> 32;
  }
  std::uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  h = (h ^ tail) * 0xc4ceb9fe1a85ec53ull;
  return static_cast<std::size_t>(h ^ (h >> 29));
}

bool client_rate_limiter::trusted(std::string_view ip) const noexcept {
  for (const auto& c : proxies_) {
    if (c->contains(ip)) return true;
  }
  return false;
}

std::string client_rate_limiter::key_of(const request& req) const {
  if (opts_.key == rate_key::api_key) {
    if (auto k = req.header().get(opts_.api_key_header); k && !k->empty()) {
      std::string key = "key:";
      key.append(*k);
      return key;
    }
  }
  const std::string_view peer = req.remote_ip();
  if (proxies_.empty() || !trusted(peer)) return std::string(peer);
  // The rightmost hop that is not one of ours is the client (everything to
  // its left was written by the client and may be forged).
  std::string_view leftmost;
  const auto& h = req.header();
  for (std::size_t i = h.size(); i-- > 0;) {
    if (!iequals(h[i].name, "x-forwarded-for")) continue;
    std::string_view list = h[i].value;
    while (!list.empty()) {
      const std::size_t comma = list.rfind(',');
      const std::string_view hop = trim(comma == std::string_view::npos ? list : list.substr(comma + 1));
      list = comma == std::string_view::npos ? std::string_view() : list.substr(0, comma);
      if (hop.empty()) continue;
      if (!trusted(hop)) return std::string(hop);
      leftmost = hop;
    }
  }
  return std::string(leftmost.empty() ? peer : leftmost);
}

rate::verdict client_rate_limiter::check(const request& req, clock::time_point now) {
  const rate::verdict v = limiter_.check_n(key_of(req), now, 1);
  // Only rejections are counted here: a counter every allowed request
  // increments would be one cache line bounced between all cores.
  if (!v.allowed) rejected_.fetch_add(1, std::memory_order_relaxed);
  return v;
}

middleware rate_limit(rate_limit_options o) {
  return rate_limit(std::make_shared<client_rate_limiter>(std::move(o)));
}

namespace {
task<void> answered() { co_return; }

task<void> add_rate_headers_after(handler& next, request& req, response& res,
                                  const rate_limit_options& o, rate::verdict v) {
  co_await next(req, res);
  if (!res.headers_sent()) set_rate_headers(res, o, v);
}
}  // namespace

middleware rate_limit(std::shared_ptr<client_rate_limiter> limiter) {
  if (!limiter) throw std::invalid_argument("sluice::http::rate_limit: null limiter");
  return [limiter](handler next) -> handler {
    // Not a coroutine: an allowed request runs the next handler's task
    // itself (no frame of our own); a rejected one gets a finished task.
    return [limiter, next](request& req, response& res) mutable -> task<void> {
      const clock::time_point t = req.received_at();
      const rate::verdict v = limiter->check(req, t == clock::time_point{} ? clock::now() : t);
      const rate_limit_options& o = limiter->options();
      if (!v.allowed) {
        res.header().set("Retry-After", number_text(std::max<long long>(1, ceil_seconds(v.retry_after))));
        set_rate_headers(res, o, v);
        // Short and plain: under attack, rejecting must stay cheaper than serving.
        res.send(429, "too many requests\n", "text/plain");
        return answered();
      }
      if (o.headers_on_success) return add_rate_headers_after(next, req, res, o, v);
      return next(req, res);
    };
  };
}

// ---- concurrency limit --------------------------------------------------------------------

middleware concurrency_limit(std::shared_ptr<concurrency_limiter> limiter, std::chrono::seconds retry_after) {
  if (!limiter) throw std::invalid_argument("sluice::http::concurrency_limit: null limiter");
  const std::string retry(number_text(std::max<long long>(1, retry_after.count())));
  return [limiter, retry](handler next) -> handler {
    return [limiter, retry, next](request& req, response& res) -> task<void> {
      auto permit = limiter->try_permit();
      if (!permit) {
        res.header().set("Retry-After", retry);
        res.error(503, "server busy, retry later");
        co_return;
      }
      co_await next(req, res);
    };
  };
}

middleware concurrency_limit(std::size_t max_in_flight, std::chrono::seconds retry_after) {
  if (max_in_flight == 0) throw std::invalid_argument("sluice::http::concurrency_limit: max_in_flight must be >= 1");
  return concurrency_limit(std::make_shared<concurrency_limiter>(static_cast<std::int64_t>(max_in_flight)),
                           retry_after);
}

}  // namespace sluice::http
