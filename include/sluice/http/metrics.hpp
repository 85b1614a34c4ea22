// Prometheus metrics (text exposition format 0.0.4) and the /metrics and
// /debug/tasks handlers. Go: prometheus/client_golang's registry and
// promhttp.Handler, net/http/pprof's goroutine dump.
//
//   auto reg = std::make_shared<sluice::http::metrics_registry>();
//   auto http_m = std::make_shared<sluice::http::http_metrics>();
//   sluice::http::add_runtime_metrics(*reg);
//   reg->add([http_m](auto& out) { http_m->collect(out); });
//   mux.handle("GET /metrics", sluice::http::metrics_handler(reg));
//   mux.handle("GET /debug/tasks", sluice::http::tasks_handler());
//   sluice::http::server srv(sluice::http::chain(mux, {http_m->middleware()}));
//
// A registry is a list of collectors: functions that write their families
// when /metrics is scraped. Whatever a collector reads (a server, a pool, a
// limiter) must outlive the registry's use; capture shared_ptrs where you can.
#pragma once

#include <sluice/http/middleware.hpp>
#include <sluice/http/server.hpp>
#include <sluice/stats.hpp>
#include <sluice/worker_pool.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

namespace sluice::http {

// Writes the text format: one family header (HELP, TYPE) then its samples.
// Label values are escaped as the format requires.
class prometheus_writer {
 public:
  using labels = std::initializer_list<std::pair<std::string_view, std::string_view>>;

  // Starts a family; type is "counter", "gauge" or "histogram".
  void family(std::string_view name, std::string_view type, std::string_view help);
  // One sample of the current family (`suffix` for histograms: "_bucket", "_sum", "_count").
  void sample(std::string_view name, labels l, double value);
  void sample(std::string_view name, const std::vector<std::pair<std::string, std::string>>& l,
              double value);
  // A histogram from a duration_summary (buckets in seconds).
  void histogram(std::string_view name, const std::vector<std::pair<std::string, std::string>>& l,
                 const duration_summary& s);

  const std::string& text() const noexcept { return out_; }
  std::string take() noexcept { return std::move(out_); }

 private:
  void labels_text(const std::vector<std::pair<std::string, std::string>>& l,
                   std::string_view extra_name = {}, std::string_view extra_value = {});
  std::string out_;
};

// Collectors, rendered in the order added. Thread-safe.
class metrics_registry {
 public:
  using collector = std::function<void(prometheus_writer&)>;
  void add(collector c);
  // The whole exposition.
  std::string render() const;

 private:
  mutable std::mutex mu_;
  std::vector<collector> collectors_;
};

// GET /metrics: the registry's text, Content-Type text/plain; version=0.0.4.
handler metrics_handler(std::shared_ptr<const metrics_registry> registry);
// GET /debug/tasks: dump_tasks() of the runtime serving the request, as
// text. Go: /debug/pprof/goroutine?debug=2.
handler tasks_handler();

// sluice_runtime_{tasks,workers,idle_workers,spinning_workers,
// global_queue_length,local_queue_length{worker},netpoll_registrations}
// of the runtime that serves the scrape.
void add_runtime_metrics(metrics_registry& reg);
// sluice_http_connections{server,state=open|idle}, ..._accepted_total,
// ..._rejected_total, sluice_http_server_requests_total, ..._bad_requests_total,
// ..._timeouts_total, ..._in_flight. Holds `srv` weakly (the server serving
// this registry's metrics_handler holds the registry: no cycle); once the
// server is destroyed its families are left out.
void add_server_metrics(metrics_registry& reg, std::shared_ptr<const server> srv, std::string name);
// sluice_pool_{queued,running}{pool} and sluice_pool_jobs_total{pool,result},
// sluice_pool_queue_wait_seconds / sluice_pool_run_seconds histograms.
void add_pool_metrics(metrics_registry& reg, std::shared_ptr<const worker_pool> pool);
// sluice_rate_limiter_{keys,rejected_total,evicted_total{reason}}{limiter}.
void add_rate_limiter_metrics(metrics_registry& reg, std::shared_ptr<const client_rate_limiter> lim,
                              std::string name);
// sluice_concurrency_limiter_{in_flight,limit,admitted_total,rejected_total}{limiter}.
void add_concurrency_limiter_metrics(metrics_registry& reg,
                                     std::shared_ptr<const concurrency_limiter> lim, std::string name);

// HTTP request metrics, recorded by middleware(): requests by route (the
// router's pattern, so cardinality is bounded by the routes; "unmatched"
// otherwise), method and status code; a duration histogram by route; the
// requests in flight. At most max_series (route, method, code) series are
// kept; later ones are counted under route "other".
class http_metrics {
 public:
  explicit http_metrics(std::size_t max_series = 1000);
  // Records every request passing through (put it outside the router).
  http::middleware middleware();
  // sluice_http_requests_total{route,method,code}, sluice_http_request_duration_seconds{route},
  // sluice_http_requests_in_flight.
  void collect(prometheus_writer& out) const;

  // Direct recording (what the middleware does).
  void observe(std::string_view route, std::string_view method, int code, clock::duration d);
  std::int64_t in_flight() const noexcept { return in_flight_.load(std::memory_order_relaxed); }

 private:
  struct series {
    std::atomic<std::uint64_t> count{0};
  };
  struct route_hist {
    std::array<std::atomic<std::uint64_t>, duration_summary::bucket_count> buckets{};
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::int64_t> sum_ns{0};
  };
  // Find or add, under the exclusive lock (observe looks first under the shared one).
  series* find_series(std::string_view route, std::string_view method, int code);
  route_hist* find_hist(std::string_view route);

  const std::size_t max_series_;
  mutable std::shared_mutex mu_;
  // (route, method, code); looked up by string_views without building a key.
  using series_key = std::tuple<std::string, std::string, int>;
  using series_view = std::tuple<std::string_view, std::string_view, int>;
  struct series_less {
    using is_transparent = void;
    static series_view view(const series_key& k) noexcept {
      return {std::get<0>(k), std::get<1>(k), std::get<2>(k)};
    }
    static const series_view& view(const series_view& k) noexcept { return k; }
    template <class A, class B>
    bool operator()(const A& a, const B& b) const noexcept {
      return view(a) < view(b);
    }
  };
  std::map<series_key, std::unique_ptr<series>, series_less> series_;
  std::map<std::string, std::unique_ptr<route_hist>, std::less<>> hists_;
  std::atomic<std::int64_t> in_flight_{0};
};

}  // namespace sluice::http
