// Command-line durations for the examples: "500ms", "2s", "1.5s", "1m", "250us".
#pragma once

#include <sluice/clock.hpp>

#include <CLI/CLI.hpp>

#include <chrono>
#include <map>
#include <string>

namespace examples {

// Adds `--name DURATION` to app, parsed into *out when the command line is.
// CLI11's AsNumberWithUnit turns "250ms" into seconds; a unit is required.
inline CLI::Option* add_duration_option(CLI::App& app, const std::string& name,
                                        sluice::clock::duration* out, const std::string& help) {
  static const std::map<std::string, double> seconds_per{
      {"us", 1e-6}, {"ms", 1e-3}, {"s", 1.0}, {"m", 60.0}};
  CLI::Validator with_unit = CLI::AsNumberWithUnit(
      seconds_per,
      static_cast<CLI::AsNumberWithUnit::Options>(CLI::AsNumberWithUnit::CASE_SENSITIVE |
                                                  CLI::AsNumberWithUnit::UNIT_REQUIRED));
  with_unit.description("");  // the type name below says it
  return app
      .add_option_function<double>(
          name,
          [out](double seconds) {
            *out = std::chrono::duration_cast<sluice::clock::duration>(
                std::chrono::duration<double>(seconds));
          },
          help)
      ->transform(with_unit)
      ->check(CLI::Validator(
          [](std::string& seconds) -> std::string {
            return std::stod(seconds) < 0 ? "a duration cannot be negative" : "";
          },
          ""))
      ->type_name("DURATION");
}

}  // namespace examples
