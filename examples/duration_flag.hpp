// Command-line durations for the examples: "500ms", "2s", "1.5s", "1m", "250us".
#pragma once

#include <sluice/clock.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>

namespace examples {

// The duration written as a number and a unit (us, ms, s, m); nullopt if it is not one.
inline std::optional<sluice::clock::duration> parse_duration(const std::string& text) {
  char* end = nullptr;
  const double n = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || n < 0) return std::nullopt;
  const std::string unit(end);
  double seconds = 0;
  if (unit == "us") {
    seconds = n / 1e6;
  } else if (unit == "ms") {
    seconds = n / 1e3;
  } else if (unit == "s") {
    seconds = n;
  } else if (unit == "m") {
    seconds = n * 60;
  } else {
    return std::nullopt;
  }
  return std::chrono::duration_cast<sluice::clock::duration>(std::chrono::duration<double>(seconds));
}

// Adds `--name DURATION` to app, parsed into *out when the command line is.
inline CLI::Option* add_duration_option(CLI::App& app, const std::string& name,
                                        sluice::clock::duration* out, const std::string& help) {
  return app
      .add_option_function<std::string>(
          name, [out](const std::string& text) { *out = *parse_duration(text); }, help)
      ->check(CLI::Validator(
          [](std::string& text) -> std::string {
            return parse_duration(text) ? "" : "expected a duration such as 250us, 500ms, 2s or 1m";
          },
          "DURATION"));
}

}  // namespace examples
