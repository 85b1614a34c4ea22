// Internal: the server's shared state, and the connection registry.
//
// Shutdown protocol (who closes what):
//   * `shutting_down` is set once (seq_cst). A connection that goes idle
//     stores phase = idle and then reads the flag; shutdown sets the flag and
//     then scans the registry, moving idle connections to `closing` (CAS) and
//     cancelling their context. Both sides use seq_cst, so at least one of
//     them sees the other: an idle connection is never left waiting.
//   * A connection that wakes with a request CASes idle -> active; if the CAS
//     fails, shutdown got there first and the connection ends without reading.
//   * `members` counts the accept loop and every connection task. The accept
//     loop adds a connection before checking the flag (seq_cst), so once
//     shutdown has seen the flag set and `members` drop to zero, no task can
//     start. The last member out after the flag closes `all_done`.
#pragma once

#include <sluice/chan.hpp>
#include <sluice/http/server.hpp>

#include "parser.hpp"

#include <atomic>
#include <cstdint>
#include <mutex>
#include <string>

namespace sluice::http::detail {

enum class conn_phase : int { active = 0, idle = 1, closing = 2 };

struct conn_record {
  conn_record* prev = nullptr;
  conn_record* next = nullptr;
  std::atomic<conn_phase> phase{conn_phase::active};
  cancel_func cancel;  // the connection's context
};

}  // namespace sluice::http::detail

namespace sluice::http {

struct server::state {
  state(handler h, server_options o);

  handler h;
  server_options opts;
  detail::parse_limits limits;

  // Cancelled when shutdown's context ends: every connection's context is a child.
  context_with_cancel hard;
  // Cancelled when shutdown starts: ends the accept loop.
  context_with_cancel accept;

  std::atomic<bool> shutting_down{false};
  std::atomic<std::int64_t> members{0};
  std::atomic<bool> all_done_closed{false};
  chan<int> all_done{0};

  std::mutex registry_mu;
  detail::conn_record* registry = nullptr;  // guarded by registry_mu

  mutable std::mutex address_mu;
  std::string address;

  std::atomic<std::uint64_t> accepted{0}, rejected{0}, requests{0}, bad_requests{0}, timeouts{0};
  std::atomic<std::int64_t> open{0}, idle{0}, in_flight{0};

  void log(std::string_view line) const;
  void enlist(detail::conn_record* r);
  void delist(detail::conn_record* r) noexcept;
  // A member (the accept loop or a connection) ends.
  void leave() noexcept;
};

}  // namespace sluice::http
