// Helpers for the HTTP tests: a server on a loopback port, and a raw client
// that writes bytes and reads responses (parsed here by hand, so the tests do
// not trust the code they test).
#pragma once

#include "../test_util.hpp"

#include <sluice/http/server.hpp>
#include <sluice/net.hpp>
#include <sluice/runtime.hpp>
#include <sluice/select.hpp>

#include <gtest/gtest.h>

#include <charconv>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sl_http {

using namespace std::chrono_literals;

// A server listening on 127.0.0.1:<free port>, serving from a task.
struct test_server {
  std::unique_ptr<sluice::http::server> srv;
  std::string address;
  std::optional<sluice::join_handle<std::error_code>> serving;

  static sluice::task<std::error_code> serve_task(sluice::http::server* s, sluice::net::tcp_listener ln) {
    co_return co_await s->serve(std::move(ln));
  }

  test_server(sluice::http::handler h, sluice::http::server_options o = {}) {
    srv = std::make_unique<sluice::http::server>(std::move(h), std::move(o));
    auto ln = sluice::net::tcp_listener::listen("127.0.0.1:0");
    address = ln.local_address();
    serving.emplace(sluice::spawn(&serve_task, srv.get(), std::move(ln)));
  }

  // Graceful shutdown with a deadline; returns shutdown's result. serve()
  // must have returned errc::closed.
  sluice::task<std::error_code> stop(sluice::clock::duration grace = 10s) {
    auto [ctx, cancel] = sluice::with_timeout(sluice::context::background(), grace);
    const std::error_code ec = co_await srv->shutdown(ctx);
    cancel();
    const std::error_code served = co_await serving->join();
    EXPECT_EQ(served, sluice::errc::closed);
    co_return ec;
  }
};

struct parsed_response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  bool chunked = false;

  std::optional<std::string> header(std::string_view name) const {
    for (const auto& [n, v] : headers) {
      if (sluice::http::iequals(n, name)) return v;
    }
    return std::nullopt;
  }
};

// A raw client connection.
class raw_client {
 public:
  static sluice::task<raw_client> connect(const std::string& address) {
    auto [s, ec] = co_await sluice::net::tcp_stream::connect(sluice::context::background(), address);
    EXPECT_FALSE(ec) << ec.message();
    raw_client c;
    c.stream_ = std::move(s);
    co_return c;
  }

  sluice::task<bool> send(std::string_view bytes) {
    auto r = co_await stream_.write(sluice::context::background(), bytes);
    co_return !r.error;
  }

  // Reads one response (to a request that was not HEAD unless `head`).
  // nullopt if the connection ended (or 10 s passed) first.
  sluice::task<std::optional<parsed_response>> read_response(bool head = false) {
    parsed_response out;
    std::size_t header_end;
    for (;;) {
      header_end = buf_.find("\r\n\r\n");
      if (header_end != std::string::npos) break;
      if (!co_await more()) co_return std::nullopt;
    }
    std::string_view head_text(buf_.data(), header_end);
    const std::size_t line_end = head_text.find("\r\n");
    std::string_view status_line = head_text.substr(0, line_end);
    if (status_line.size() < 12 || !status_line.starts_with("HTTP/1.")) co_return std::nullopt;
    out.status = std::stoi(std::string(status_line.substr(9, 3)));
    std::string_view rest = line_end == std::string_view::npos ? std::string_view() : head_text.substr(line_end + 2);
    while (!rest.empty()) {
      const std::size_t e = rest.find("\r\n");
      std::string_view line = rest.substr(0, e);
      const std::size_t colon = line.find(':');
      std::string value(line.substr(colon + 1));
      while (!value.empty() && value.front() == ' ') value.erase(0, 1);
      out.headers.emplace_back(std::string(line.substr(0, colon)), value);
      rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    }
    buf_.erase(0, header_end + 4);
    const bool no_body = head || out.status == 204 || out.status == 304 || out.status < 200;
    if (no_body) co_return out;
    if (auto te = out.header("Transfer-Encoding"); te && *te == "chunked") {
      out.chunked = true;
      for (;;) {
        std::size_t e;
        while ((e = buf_.find("\r\n")) == std::string::npos) {
          if (!co_await more()) co_return std::nullopt;
        }
        std::size_t n = 0;
        std::from_chars(buf_.data(), buf_.data() + e, n, 16);
        buf_.erase(0, e + 2);
        while (buf_.size() < n + 2) {
          if (!co_await more()) co_return std::nullopt;
        }
        out.body.append(buf_, 0, n);
        buf_.erase(0, n + 2);
        if (n == 0) break;
      }
      co_return out;
    }
    if (auto cl = out.header("Content-Length")) {
      const std::size_t n = std::stoul(*cl);
      while (buf_.size() < n) {
        if (!co_await more()) co_return std::nullopt;
      }
      out.body = buf_.substr(0, n);
      buf_.erase(0, n);
      co_return out;
    }
    // Close-delimited.
    while (co_await more()) {
    }
    out.body = std::move(buf_);
    buf_.clear();
    co_return out;
  }

  // True if the server closes the connection (end of stream or reset) with no
  // further bytes, within 10 s.
  sluice::task<bool> closed_by_server() {
    if (!buf_.empty()) co_return false;
    char b[512];
    auto r = co_await stream_.read(sluice::context::background(), b,
                                   sluice::clock::now() + 10s);
    if (r.error == sluice::errc::deadline_exceeded) co_return false;
    co_return r.bytes == 0;
  }

  sluice::net::tcp_stream& stream() { return stream_; }
  void close() { stream_.close(); }

 private:
  sluice::task<bool> more() {
    char b[16384];
    auto r = co_await stream_.read(sluice::context::background(), b, sluice::clock::now() + 10s);
    if (r.error || r.bytes == 0) co_return false;
    buf_.append(b, r.bytes);
    co_return true;
  }

  sluice::net::tcp_stream stream_;
  std::string buf_;
};

// One request on a fresh connection; the response (nullopt if none came).
inline sluice::task<std::optional<parsed_response>> fetch(const std::string& address,
                                                          std::string_view raw_request,
                                                          bool head = false) {
  auto c = co_await raw_client::connect(address);
  if (!co_await c.send(raw_request)) co_return std::nullopt;
  co_return co_await c.read_response(head);
}

inline std::string get(std::string_view path, std::string_view extra_headers = {}) {
  std::string r = "GET ";
  r.append(path).append(" HTTP/1.1\r\nHost: test\r\n").append(extra_headers).append("\r\n");
  return r;
}

}  // namespace sl_http
