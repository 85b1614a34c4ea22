// The core of example-downloader, apart from its command line so the tests
// can drive it: fetch a list of URLs with at most K requests in flight, each
// bounded by its own timeout and all of them by an overall one.
//
//   sluice::http::client c;
//   auto results = co_await downloader::fetch_all(ctx, &c, urls,
//                                                 {.concurrency = 4, .timeout = 5s});
//   for (auto& r : results) std::puts(downloader::format_line(r).c_str());
//
// Go: an errgroup with SetLimit(K) around http.Client.Get, each request with
// context.WithTimeout under a parent context.WithTimeout.
#pragma once

#include <sluice/clock.hpp>
#include <sluice/context.hpp>
#include <sluice/errgroup.hpp>
#include <sluice/http/client.hpp>
#include <sluice/task.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace downloader {

struct options {
  std::int64_t concurrency = 4;                                    // requests in flight, >= 1
  sluice::clock::duration timeout = std::chrono::seconds(30);      // per request; <= 0: none
  sluice::clock::duration overall_timeout{};                       // all of them; <= 0: none
};

// What happened to one URL.
struct outcome {
  std::string url;
  int status = 0;              // 0 when there was no response
  std::size_t bytes = 0;       // body bytes
  sluice::clock::duration elapsed{};
  std::error_code error;       // no response: the client's error (see sluice/http/client.hpp)
  std::string error_message;

  // A URL failed when there was no response or the response was an error
  // (4xx, 5xx), as with curl --fail. Redirects are not followed and count as
  // answers.
  bool failed() const noexcept { return static_cast<bool>(error) || status >= 400; }
};

inline std::string describe(sluice::clock::duration d) {
  using namespace std::chrono;
  if (d >= seconds(1) && d % seconds(1) == sluice::clock::duration::zero()) {
    return std::to_string(duration_cast<seconds>(d).count()) + "s";
  }
  if (d >= milliseconds(1) && d % milliseconds(1) == sluice::clock::duration::zero()) {
    return std::to_string(duration_cast<milliseconds>(d).count()) + "ms";
  }
  return std::to_string(duration_cast<microseconds>(d).count()) + "us";
}

// One URL, into *out. Never throws: a malformed URL is that URL's error
// (an exception would cancel the whole group).
inline sluice::task<void> fetch_one(sluice::http::client* c, sluice::context group_ctx,
                                    std::string url, sluice::clock::duration timeout,
                                    outcome* out) {
  out->url = url;
  const auto start = sluice::clock::now();
  auto request = timeout > sluice::clock::duration::zero() ? sluice::with_timeout(group_ctx, timeout)
                                                           : sluice::with_cancel(group_ctx);
  try {
    sluice::http::client_result r = co_await c->get(request.ctx, url);
    out->error = r.error;
    out->error_message = std::move(r.error_message);
    // The line names the URL already: drop the message's "GET <url>: ".
    const std::string prefix = "GET " + url + ": ";
    if (out->error_message.starts_with(prefix)) out->error_message.erase(0, prefix.size());
    out->status = r.response.status;
    out->bytes = r.response.body.size();
  } catch (const std::exception& e) {
    out->error = std::make_error_code(std::errc::invalid_argument);
    out->error_message = e.what();
  }
  request.cancel();
  out->elapsed = sluice::clock::now() - start;
  if (out->error == sluice::errc::deadline_exceeded) {
    // Whose deadline: the overall one (the group's context is done too) or this request's.
    out->error_message = (group_ctx.err() ? std::string("overall timeout")
                                          : "timed out after " + describe(timeout)) +
                         " (" + out->error_message + ")";
  }
}

// Fetches every URL, at most opts.concurrency at a time, in list order; the
// results are in list order too. URLs still waiting when the overall timeout
// passes (or ctx ends) fail at once with its error. Throws
// std::invalid_argument if opts.concurrency < 1. Must be awaited from a task.
inline sluice::task<std::vector<outcome>> fetch_all(sluice::context ctx, sluice::http::client* c,
                                                    std::vector<std::string> urls, options opts) {
  if (opts.concurrency < 1) throw std::invalid_argument("downloader: concurrency must be >= 1");
  auto overall = opts.overall_timeout > sluice::clock::duration::zero()
                     ? sluice::with_timeout(ctx, opts.overall_timeout)
                     : sluice::with_cancel(ctx);
  std::vector<outcome> results(urls.size());
  {
    auto [group, group_ctx] = sluice::errgroup::with_context(overall.ctx);
    group.set_limit(opts.concurrency);
    for (std::size_t i = 0; i < urls.size(); ++i) {
      co_await group.go(fetch_one, c, group_ctx, urls[i], opts.timeout, &results[i]);
    }
    co_await group.wait();
  }
  overall.cancel();
  co_return results;
}

// "200      1234 B     12.3 ms  http://..." or
// "ERR         - B    100.2 ms  http://...  timed out after 100ms (...)".
inline std::string format_line(const outcome& o) {
  char head[64];
  const double ms = std::chrono::duration<double, std::milli>(o.elapsed).count();
  if (o.error) {
    std::snprintf(head, sizeof head, "ERR  %10s B %9.1f ms  ", "-", ms);
  } else {
    std::snprintf(head, sizeof head, "%3d  %10zu B %9.1f ms  ", o.status, o.bytes, ms);
  }
  std::string line = head;
  line.append(o.url);
  if (o.error) line.append("  ").append(o.error_message);
  return line;
}

}  // namespace downloader
