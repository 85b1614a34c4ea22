// libFuzzer target: arbitrary bytes through one connection's parse-and-
// dispatch path (the same connection code the server runs on sockets, here
// on an in-memory transport). The first input byte picks how the rest is cut
// into reads, so split points are fuzzed too. Handlers cover the paths a
// request can take: routing with wildcards, bodies, JSON, streaming, errors.
//
//   build/fuzz/bin/sluice-fuzz-http -max_total_time=60 fuzz/corpus/http
#include "http/connection.hpp"

#include <sluice/http/json.hpp>
#include <sluice/http/middleware.hpp>
#include <sluice/http/router.hpp>
#include <sluice/runtime.hpp>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

namespace http = sluice::http;

namespace {

// Reads hand out the input in chunks; writes are swallowed (their size is
// checked for sanity); waiting never blocks: at the end of the input every
// read reports end of stream.
class memory_transport {
 public:
  memory_transport(const std::uint8_t* data, std::size_t size, std::size_t chunk)
      : data_(reinterpret_cast<const char*>(data)), size_(size), chunk_(chunk == 0 ? 1 : chunk) {}

  std::optional<sluice::net::io_result> try_read(std::span<char> b) noexcept {
    const std::size_t n = std::min({b.size(), chunk_, size_ - pos_});
    std::memcpy(b.data(), data_ + pos_, n);
    pos_ += n;
    return sluice::net::io_result{n, {}};
  }
  sluice::task<sluice::net::io_result> read(const sluice::context&, std::span<char> b,
                                            sluice::clock::time_point) {
    co_return *try_read(b);
  }
  sluice::net::io_result try_write(std::string_view d) noexcept {
    written_ += d.size();
    return {d.size(), {}};
  }
  sluice::task<sluice::net::io_result> write(const sluice::context&, std::string_view d,
                                             sluice::clock::time_point) {
    co_return try_write(d);
  }
  sluice::task<std::error_code> wait_readable(const sluice::context&, sluice::clock::time_point) {
    co_return std::error_code();
  }
  void cancel_on_hangup(const sluice::cancel_func&) noexcept {}
  std::error_code shutdown_write() noexcept { return {}; }

 private:
  const char* data_;
  std::size_t size_;
  std::size_t chunk_;
  std::size_t pos_ = 0;
  std::size_t written_ = 0;
};

http::handler make_handler() {
  http::router mux;
  mux.handle("GET /hello", [](http::request&, http::response& res) -> sluice::task<void> {
    res.send(200, "hello\n");
    co_return;
  });
  mux.handle("POST /json/{name}", [](http::request& req, http::response& res) -> sluice::task<void> {
    auto v = http::read_json(req, res);
    if (!v) co_return;
    http::write_json(res, 200, {{"name", req.path_value("name")}, {"body", *v}});
  });
  mux.handle("/echo/{rest...}", [](http::request& req, http::response& res) -> sluice::task<void> {
    std::string out(req.method());
    out.append(" ").append(req.path_value("rest")).append(" ").append(req.body());
    for (const auto& f : req.header()) out.append(f.name).append("=").append(f.value);
    if (auto q = req.query_value("q")) out.append(*q);
    res.send(200, out);
    co_return;
  });
  mux.handle("GET /stream", [](http::request&, http::response& res) -> sluice::task<void> {
    res.write("a");
    co_await res.flush();
    res.write("b");
  });
  mux.handle("/throw", [](http::request&, http::response&) -> sluice::task<void> {
    throw std::runtime_error("fuzz");
    co_return;
  });
  return http::chain(mux, {http::recover([](std::string_view) {}), http::request_id()});
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::size_t chunk = 1 + data[0] % 64 * (data[0] >= 128 ? 256 : 1);
  static const http::handler h = make_handler();
  sluice::runtime_options o;
  o.workers = 1;
  sluice::runtime rt(o);
  rt.run([&]() -> sluice::task<void> {
    http::server::state st(h, {.max_header_bytes = 4096, .max_headers = 32, .max_body_bytes = 8192,
                               .error_log = [](std::string_view) {}});
    http::detail::conn_record rec;
    auto [ctx, cancel] = sluice::with_cancel(sluice::context::background());
    memory_transport io(data + 1, size - 1, chunk);
    {
      http::detail::connection<memory_transport> c(io, st, rec, ctx);
      co_await c.run("192.0.2.1:4242");
    }
    cancel();
  });
  return 0;
}
