// A seeded generator of JSON documents and of damaged ones, for the
// differential and fuzz tests of JSON handling (json_valid, the relay).
#pragma once

#include <cstdint>
#include <random>
#include <string>

namespace sl_http {

class json_gen {
 public:
  explicit json_gen(std::uint64_t seed) : rng_(seed) {}

  std::string document() {
    std::string out;
    value(out, 0);
    return out;
  }

  // One of several ways to damage a document.
  std::string mutate(std::string s) {
    if (s.empty()) s = "{}";
    switch (pick(7)) {
      case 0: s[pick(s.size())] = static_cast<char>(pick(256)); break;           // flip a byte
      case 1: s.resize(pick(s.size())); break;                                     // truncate
      case 2: s.insert(pick(s.size() + 1), 1, "{}[]\",:\\"[pick(8)]); break;       // stray syntax
      case 3: s.insert(pick(s.size() + 1), std::string(1 + pick(4), static_cast<char>(0x80 + pick(64)))); break;
      case 4: s.insert(pick(s.size() + 1), 1, '\0'); break;                        // NUL
      case 5: s = "\xef\xbb\xbf" + s; break;                                        // BOM
      default: s += s; break;                                                       // two documents
    }
    return s;
  }

  std::size_t pick(std::size_t n) { return n == 0 ? 0 : std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_); }

 private:
  void value(std::string& out, int depth) {
    switch (depth > 6 ? pick(4) : pick(6)) {
      case 0: out += std::to_string(static_cast<long long>(rng_()) >> pick(64)); break;
      case 1: {
        static const char* const odd[] = {"0", "-0", "1e308", "1e999", "-1.5E-7", "123456789012345678901234567890",
                                          "true", "false", "null", "0.000001"};
        out += odd[pick(10)];
        break;
      }
      case 2:
      case 3: string(out); break;
      case 4: {
        out += '[';
        const auto n = pick(5);
        for (std::size_t i = 0; i < n; ++i) {
          if (i) out += ',';
          value(out, depth + 1);
        }
        out += ']';
        break;
      }
      default: {
        out += '{';
        const auto n = pick(5);
        for (std::size_t i = 0; i < n; ++i) {
          if (i) out += ',';
          string(out);
          out += ':';
          value(out, depth + 1);
        }
        out += '}';
      }
    }
  }
  void string(std::string& out) {
    static const char* const pieces[] = {"a", "key", "\\n", "\\\"", "\\u00e9", "\\ud83d\\ude00", "caf\xc3\xa9",
                                         " ", "\\\\", "\\/", "\xe2\x82\xac", "x-y_z"};
    out += '"';
    const auto n = pick(6);
    for (std::size_t i = 0; i < n; ++i) out += pieces[pick(12)];
    out += '"';
  }
  std::mt19937_64 rng_;
};

}  // namespace sl_http
