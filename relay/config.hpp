// sluice-relay's settings: the command-line flags, their defaults, and the
// checks that refuse a value that makes no sense before anything starts.
#pragma once

#include <sluice/clock.hpp>

#include <chrono>
#include <cstddef>
#include <iosfwd>
#include <optional>
#include <string>

namespace relay {

using namespace std::chrono_literals;

struct config {
  std::string listen = "127.0.0.1:8080";               // --listen HOST:PORT
  int workers = 64;                                     // --workers: deliveries running at once
  int queue = 10000;                                    // --queue: deliveries waiting (new + retries)
  double rate = 100;                                    // --rate: events/s per client IP on /v1
  int burst = 200;                                      // --burst
  std::size_t max_body = 1048576;                       // --max-body BYTES
  sluice::clock::duration delivery_timeout = 5s;       // --delivery-timeout: one attempt
  int max_attempts = 5;                                 // --max-attempts
  sluice::clock::duration retry_base = 100ms;          // --retry-base
  sluice::clock::duration retry_max = 10s;             // --retry-max
  int per_subscriber_concurrency = 8;                   // --per-subscriber-concurrency
  std::size_t max_connections = 10000;                  // --max-connections
  sluice::clock::duration shutdown_timeout = 30s;      // --shutdown-timeout
  std::size_t retain_events = 100000;                   // --retain-events
  std::size_t max_subscriptions = 10000;                // --max-subscriptions (all topics)
  bool access_log = false;                              // --access-log: one line per request

  // Throws std::invalid_argument naming the flag when a value is out of range.
  void validate() const;
};

// Parses the command line into a config (validated). Returns the config, or
// nullopt with *exit_code set: 0 after --help (printed to `out`), 2 for a bad
// flag or value (the message printed to `err`).
std::optional<config> parse_command_line(int argc, const char* const* argv, std::ostream& out,
                                         std::ostream& err, int* exit_code);

}  // namespace relay
