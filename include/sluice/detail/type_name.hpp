// Internal: a type's name as the compiler spells it, for task origins in dumps.
#pragma once

#include <string_view>

namespace sluice::detail {

template <class T>
constexpr std::string_view type_name() noexcept {
#if defined(__clang__)
  constexpr std::string_view p = __PRETTY_FUNCTION__;
  constexpr std::string_view key = "T = ";
  constexpr auto start = p.find(key) + key.size();
  return p.substr(start, p.rfind(']') - start);
#elif defined(__GNUC__)
  constexpr std::string_view p = __PRETTY_FUNCTION__;
  constexpr std::string_view key = "T = ";
  constexpr auto start = p.find(key) + key.size();
  constexpr auto end = p.find_first_of(";]", start);
  return p.substr(start, end - start);
#else
  return "?";
#endif
}

// Static storage for type_name<T>(), so records can point at it.
template <class T>
inline constexpr std::string_view type_name_v = type_name<T>();

}  // namespace sluice::detail
