// Internal: RFC 9110 §5.6.2 tokens (methods and header names), by table.
#pragma once

#include <array>
#include <string_view>

namespace sluice::http::detail {

inline constexpr std::array<bool, 256> tchar_table = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (char c : std::string_view("!#$%&'*+-.^_`|~")) t[static_cast<unsigned char>(c)] = true;
  return t;
}();

inline bool token_char(char c) noexcept { return tchar_table[static_cast<unsigned char>(c)]; }

// A non-empty run of tchars.
inline bool is_token(std::string_view s) noexcept {
  if (s.empty()) return false;
  for (char c : s) {
    if (!token_char(c)) return false;
  }
  return true;
}

}  // namespace sluice::http::detail
