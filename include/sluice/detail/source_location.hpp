// Internal: the call site of go()/spawn(). std::source_location is unusable with
// clang 14 on libstdc++ 12 (it needs __builtin_source_location, clang >= 15), so
// this uses the builtins both compilers have.
#pragma once

namespace sluice::detail {

class source_location {
 public:
  static constexpr source_location current(const char* file = __builtin_FILE(),
                                           unsigned line = __builtin_LINE(),
                                           const char* function = __builtin_FUNCTION()) noexcept {
    source_location s;
    s.file_ = file;
    s.line_ = line;
    s.function_ = function;
    return s;
  }
  constexpr const char* file_name() const noexcept { return file_; }
  constexpr unsigned line() const noexcept { return line_; }
  constexpr const char* function_name() const noexcept { return function_; }

 private:
  const char* file_ = "";
  unsigned line_ = 0;
  const char* function_ = "";
};

}  // namespace sluice::detail
