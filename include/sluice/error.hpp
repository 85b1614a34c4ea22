// Error codes for the expected outcomes of blocking calls.
#pragma once

#include <exception>
#include <string>
#include <system_error>
#include <type_traits>

namespace sluice {

// Why a blocking call did not complete. Compare with `ec == sluice::errc::canceled`.
enum class errc {
  canceled = 1,           // the context was cancelled. Go: context.Canceled
  deadline_exceeded = 2,  // the context's deadline passed. Go: context.DeadlineExceeded
  exceeds_burst = 3,      // rate: n exceeds the limiter's burst
  would_exceed_deadline = 4,  // rate: waiting would pass the context's deadline
  closed = 5,             // the pool, limiter or server is shut down
};

// What `e` holds, for a log line: its what() if it is a std::exception,
// "unknown exception" otherwise (or if e is empty). Never throws except
// std::bad_alloc. Go: err.Error().
std::string describe(std::exception_ptr e);

// The category of sluice::errc ("sluice").
const std::error_category& error_category() noexcept;

inline std::error_code make_error_code(errc e) noexcept {
  return {static_cast<int>(e), error_category()};
}

}  // namespace sluice

// Registered as an error code enum only: registering it as an error condition
// too would make `ec == errc::canceled` ambiguous.
template <>
struct std::is_error_code_enum<sluice::errc> : std::true_type {};
