#include <sluice/http/json.hpp>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdlib>
#include <string>
#include <vector>

namespace sluice::http {

std::optional<nlohmann::json> read_json(const request& req, response& res) {
  if (req.body().empty()) {
    write_json_error(res, 400, "invalid JSON: empty body");
    return std::nullopt;
  }
  try {
    return nlohmann::json::parse(req.body());
  } catch (const nlohmann::json::parse_error& e) {
    // Where, not the parser's own words (which echo the input back).
    write_json_error(res, 400, "invalid JSON at byte " + std::to_string(e.byte));
  }
  return std::nullopt;
}

namespace {

// A scanner over [p, e): each function advances p past what it accepts and
// returns false (leaving p anywhere) if the input is not valid there.
struct json_scanner {
  const unsigned char* p;
  const unsigned char* e;

  void ws() noexcept {
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) ++p;
  }
  // At '{' or '[': steps over it, and over `close` too when the container
  // is empty (true then).
  bool opens_empty(unsigned char close) noexcept {
    ++p;
    ws();
    if (p < e && *p == close) {
      ++p;
      return true;
    }
    return false;
  }
  bool literal(const char* word, std::size_t n) noexcept {
    if (static_cast<std::size_t>(e - p) < n) return false;
    for (std::size_t i = 0; i < n; ++i) {
      if (p[i] != static_cast<unsigned char>(word[i])) return false;
    }
    p += n;
    return true;
  }
  static int hex(unsigned char c) noexcept {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
  // Four hex digits after "\u"; -1 if malformed.
  long u4() noexcept {
    if (e - p < 4) return -1;
    long v = 0;
    for (int i = 0; i < 4; ++i) {
      const int h = hex(p[i]);
      if (h < 0) return -1;
      v = v * 16 + h;
    }
    p += 4;
    return v;
  }
  static bool cont(unsigned char c) noexcept { return (c & 0xC0) == 0x80; }

  // At the opening quote.
  // A mask with the high bit set in every byte of the eight at q that needs
  // a look: < 0x20, >= 0x80, '"' or '\\'. (x - 0x01..) & ~x & 0x80.. flags
  // the zero bytes of x; with 0x20.. the bytes below 0x20 (bytes with the
  // high bit are caught by the second term). A borrow can flag a byte above
  // a flagged one falsely, never below it, so the lowest flag is exact.
  static std::uint64_t look_mask(const unsigned char* q) noexcept {
    constexpr std::uint64_t ones = 0x0101010101010101ULL;
    constexpr std::uint64_t high = 0x8080808080808080ULL;
    std::uint64_t v;
    std::memcpy(&v, q, sizeof v);
    const auto zeros = [](std::uint64_t x) { return (x - ones) & ~x & high; };
    return ((v - ones * 0x20) & ~v & high) | (v & high) | zeros(v ^ (ones * '"')) |
           zeros(v ^ (ones * '\\'));
  }

  bool string() noexcept {
    ++p;
    for (;;) {
      // Plain ASCII runs are the common case: eight bytes at a time up to
      // the first that needs a look (a control character, a quote, a
      // backslash or a non-ASCII byte), then byte by byte.
      if constexpr (std::endian::native == std::endian::little) {  // the lowest byte comes first
        while (e - p >= 8) {
          if (const std::uint64_t m = look_mask(p)) {
            p += std::countr_zero(m) / 8;
            break;
          }
          p += 8;
        }
      }
      while (p < e && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') ++p;
      if (p >= e) return false;
      const unsigned char c = *p;
      if (c == '"') {
        ++p;
        return true;
      }
      if (c < 0x20) return false;  // control characters must be escaped
      if (c == '\\') {
        if (++p >= e) return false;
        switch (*p++) {
          case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't': break;
          case 'u': {
            const long cp = u4();
            if (cp < 0) return false;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a low surrogate alone
            if (cp >= 0xD800 && cp <= 0xDBFF) {              // must pair with a low one
              if (e - p < 2 || p[0] != '\\' || p[1] != 'u') return false;
              p += 2;
              const long lo = u4();
              if (lo < 0xDC00 || lo > 0xDFFF) return false;
            }
            break;
          }
          default: return false;
        }
        continue;
      }
      // UTF-8 (RFC 3629: shortest forms, no surrogates, at most U+10FFFF).
      const std::ptrdiff_t left = e - p;
      if (c >= 0xC2 && c <= 0xDF) {
        if (left < 2 || !cont(p[1])) return false;
        p += 2;
      } else if (c >= 0xE0 && c <= 0xEF) {
        if (left < 3 || !cont(p[1]) || !cont(p[2])) return false;
        if (c == 0xE0 && p[1] < 0xA0) return false;  // overlong
        if (c == 0xED && p[1] > 0x9F) return false;  // a surrogate
        p += 3;
      } else if (c >= 0xF0 && c <= 0xF4) {
        if (left < 4 || !cont(p[1]) || !cont(p[2]) || !cont(p[3])) return false;
        if (c == 0xF0 && p[1] < 0x90) return false;  // overlong
        if (c == 0xF4 && p[1] > 0x8F) return false;  // beyond U+10FFFF
        p += 4;
      } else {
        return false;
      }
    }
  }

  // An object member's name and its colon (whitespace around both).
  bool member_name() noexcept {
    ws();
    if (p >= e || *p != '"' || !string()) return false;
    ws();
    if (p >= e || *p != ':') return false;
    ++p;
    return true;
  }

  static bool digit(unsigned char c) noexcept { return c >= '0' && c <= '9'; }

  // At '-' or a digit.
  bool number() noexcept {
    const unsigned char* start = p;
    if (*p == '-') ++p;
    if (p >= e) return false;
    std::size_t int_digits = 0;
    if (*p == '0') {
      ++p;
      int_digits = 1;
    } else if (digit(*p)) {
      while (p < e && digit(*p)) ++p, ++int_digits;
    } else {
      return false;
    }
    bool exponent = false;
    if (p < e && *p == '.') {
      ++p;
      if (p >= e || !digit(*p)) return false;
      while (p < e && digit(*p)) ++p;
    }
    if (p < e && (*p == 'e' || *p == 'E')) {
      exponent = true;
      ++p;
      if (p < e && (*p == '+' || *p == '-')) ++p;
      if (p >= e || !digit(*p)) return false;
      while (p < e && digit(*p)) ++p;
    }
    // nlohmann refuses a number that overflows a double ("number
    // overflow"). Only an exponent or 309+ integer digits can get there.
    if (exponent || int_digits >= 309) {
      const std::string text(reinterpret_cast<const char*>(start), static_cast<std::size_t>(p - start));
      if (!std::isfinite(std::strtod(text.c_str(), nullptr))) return false;
    }
    return true;
  }
};

}  // namespace

bool json_valid(std::string_view text) noexcept {
  json_scanner s{reinterpret_cast<const unsigned char*>(text.data()),
                 reinterpret_cast<const unsigned char*>(text.data()) + text.size()};
  if (s.e - s.p >= 3 && s.p[0] == 0xEF && s.p[1] == 0xBB && s.p[2] == 0xBF) s.p += 3;  // BOM
  // The containers we are in ('[' or '{'), innermost last: no recursion.
  char inline_stack[64];
  std::size_t depth = 0;
  std::string spill;  // beyond 64 levels (allocation only then)
  auto push = [&](char c) {
    if (depth < sizeof inline_stack) {
      inline_stack[depth] = c;
    } else {
      spill.push_back(c);
    }
    ++depth;
  };
  auto top = [&]() -> char { return depth <= sizeof inline_stack ? inline_stack[depth - 1] : spill.back(); };
  auto pop = [&] {
    if (depth > sizeof inline_stack) spill.pop_back();
    --depth;
  };
  try {
    for (;;) {
      // A value.
      s.ws();
      if (s.p >= s.e) return false;
      switch (*s.p) {
        case '{':
          if (s.opens_empty('}')) break;
          push('{');
          if (!s.member_name()) return false;
          continue;  // the member's value
        case '[':
          if (s.opens_empty(']')) break;
          push('[');
          continue;  // the first element
        case '"':
          if (!s.string()) return false;
          break;
        case 't':
          if (!s.literal("true", 4)) return false;
          break;
        case 'f':
          if (!s.literal("false", 5)) return false;
          break;
        case 'n':
          if (!s.literal("null", 4)) return false;
          break;
        default:
          if (*s.p != '-' && !json_scanner::digit(*s.p)) return false;
          if (!s.number()) return false;
          break;
      }
      // After a value: close containers, or go on to the next element.
      for (;;) {
        s.ws();
        if (depth == 0) return s.p == s.e;
        if (s.p >= s.e) return false;
        const char c = top();
        if (*s.p == ',') {
          ++s.p;
          if (c == '{' && !s.member_name()) return false;
          break;  // the next value
        }
        if ((c == '[' && *s.p == ']') || (c == '{' && *s.p == '}')) {
          ++s.p;
          pop();
          continue;
        }
        return false;
      }
    }
  } catch (...) {
    return false;  // only the spill's allocation can throw
  }
}

void write_json(response& res, int status, const nlohmann::json& value) {
  res.send(status, value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
           "application/json");
}

void write_json_error(response& res, int status, std::string_view message) {
  write_json(res, status, nlohmann::json{{"error", message}});
}

}  // namespace sluice::http
