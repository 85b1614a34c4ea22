// The Prometheus text format (0.0.4), the collectors for sluice's own
// objects, and the HTTP request metrics.
#include <sluice/http/metrics.hpp>
#include <sluice/introspection.hpp>

#include <charconv>
#include <cmath>
#include <sstream>
#include <tuple>

namespace sluice::http {

namespace {

void append_value(std::string& out, double v) {
  if (std::isnan(v)) {
    out.append("NaN");
  } else if (std::isinf(v)) {
    out.append(v > 0 ? "+Inf" : "-Inf");
  } else if (v == std::floor(v) && std::fabs(v) < 1e15) {
    char buf[32];
    const auto r = std::to_chars(buf, buf + sizeof buf, static_cast<long long>(v));
    out.append(buf, r.ptr);
  } else {
    // Plain decimals where they are short ("0.0001", not "1e-04").
    char buf[400];
    const bool plain = std::fabs(v) >= 1e-9 && std::fabs(v) < 1e15;
    const auto r = plain ? std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed)
                         : std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, r.ptr);
  }
}

void append_escaped(std::string& out, std::string_view v, bool help) {
  for (char c : v) {
    if (c == '\\') {
      out.append("\\\\");
    } else if (c == '\n') {
      out.append("\\n");
    } else if (c == '"' && !help) {
      out.append("\\\"");
    } else {
      out.push_back(c);
    }
  }
}

double seconds(clock::duration d) { return std::chrono::duration<double>(d).count(); }

using label_list = std::vector<std::pair<std::string, std::string>>;

}  // namespace

// ---- writer -------------------------------------------------------------------------------

void prometheus_writer::family(std::string_view name, std::string_view type, std::string_view help) {
  out_.append("# HELP ").append(name).push_back(' ');
  append_escaped(out_, help, true);
  out_.append("\n# TYPE ").append(name).push_back(' ');
  out_.append(type).push_back('\n');
}

void prometheus_writer::labels_text(const label_list& l, std::string_view extra_name,
                                    std::string_view extra_value) {
  if (l.empty() && extra_name.empty()) return;
  out_.push_back('{');
  bool first = true;
  for (const auto& [k, v] : l) {
    if (!first) out_.push_back(',');
    first = false;
    out_.append(k).append("=\"");
    append_escaped(out_, v, false);
    out_.push_back('"');
  }
  if (!extra_name.empty()) {
    if (!first) out_.push_back(',');
    out_.append(extra_name).append("=\"").append(extra_value).push_back('"');
  }
  out_.push_back('}');
}

void prometheus_writer::sample(std::string_view name, labels l, double value) {
  label_list v;
  for (const auto& [k, val] : l) v.emplace_back(std::string(k), std::string(val));
  sample(name, v, value);
}

void prometheus_writer::sample(std::string_view name, const label_list& l, double value) {
  out_.append(name);
  labels_text(l);
  out_.push_back(' ');
  append_value(out_, value);
  out_.push_back('\n');
}

void prometheus_writer::histogram(std::string_view name, const label_list& l, const duration_summary& s) {
  std::string bucket(name);
  bucket.append("_bucket");
  for (std::size_t i = 0; i < duration_summary::bucket_count; ++i) {
    std::string le;
    if (i + 1 < duration_summary::bucket_count) {
      append_value(le, seconds(duration_summary::upper_bounds[i]));
    } else {
      le = "+Inf";
    }
    out_.append(bucket);
    labels_text(l, "le", le);
    out_.push_back(' ');
    append_value(out_, static_cast<double>(s.cumulative(i)));
    out_.push_back('\n');
  }
  sample(std::string(name) + "_sum", l, seconds(s.sum));
  sample(std::string(name) + "_count", l, static_cast<double>(s.count));
}

// ---- registry and handlers ------------------------------------------------------------------

void metrics_registry::add(collector c) {
  if (!c) throw std::invalid_argument("sluice::http::metrics_registry::add: empty collector");
  std::lock_guard lock(mu_);
  collectors_.push_back(std::move(c));
}

std::string metrics_registry::render() const {
  std::vector<collector> cs;
  {
    std::lock_guard lock(mu_);
    cs = collectors_;
  }
  prometheus_writer w;
  for (const auto& c : cs) c(w);
  return w.take();
}

handler metrics_handler(std::shared_ptr<const metrics_registry> registry) {
  if (!registry) throw std::invalid_argument("sluice::http::metrics_handler: null registry");
  return [registry](request&, response& res) -> task<void> {
    res.send(200, registry->render(), "text/plain; version=0.0.4; charset=utf-8");
    co_return;
  };
}

handler tasks_handler() {
  return [](request&, response& res) -> task<void> {
    std::ostringstream out;
    dump_tasks(out);
    res.send(200, out.str());
    co_return;
  };
}

void add_runtime_metrics(metrics_registry& reg) {
  reg.add([](prometheus_writer& w) {
    const runtime_stats st = current_runtime_stats();
    const auto gauge = [&](std::string_view name, std::string_view help, double v) {
      w.family(name, "gauge", help);
      w.sample(name, label_list{}, v);
    };
    gauge("sluice_runtime_tasks", "Live tasks.", static_cast<double>(st.tasks));
    gauge("sluice_runtime_workers", "Worker threads.", st.workers);
    gauge("sluice_runtime_idle_workers", "Parked worker threads.", st.idle_workers);
    gauge("sluice_runtime_spinning_workers", "Workers looking for work.", st.spinning_workers);
    gauge("sluice_runtime_global_queue_length", "Runnable tasks in the global queue.",
          static_cast<double>(st.global_queue));
    w.family("sluice_runtime_local_queue_length", "gauge", "Runnable tasks in a worker's own queue.");
    for (std::size_t i = 0; i < st.local_queues.size(); ++i) {
      w.sample("sluice_runtime_local_queue_length", label_list{{"worker", std::to_string(i)}},
               static_cast<double>(st.local_queues[i]));
    }
    gauge("sluice_runtime_netpoll_registrations", "Sockets registered with the netpoller.",
          static_cast<double>(st.io_registrations));
  });
}

void add_server_metrics(metrics_registry& reg, std::shared_ptr<const server> srv, std::string name) {
  if (!srv) throw std::invalid_argument("sluice::http::add_server_metrics: null server");
  // Weak: the server usually serves this registry's metrics_handler, which
  // holds the registry; a strong pointer here would make a cycle.
  reg.add([weak = std::weak_ptr<const server>(srv), name](prometheus_writer& w) {
    const auto srv = weak.lock();
    if (!srv) return;  // the server is gone: nothing to report
    const server_stats st = srv->stats();
    const label_list l{{"server", name}};
    w.family("sluice_http_connections", "gauge", "Open connections by state.");
    w.sample("sluice_http_connections", label_list{{"server", name}, {"state", "open"}},
             static_cast<double>(st.connections_open));
    w.sample("sluice_http_connections", label_list{{"server", name}, {"state", "idle"}},
             static_cast<double>(st.connections_idle));
    const auto counter = [&](std::string_view n, std::string_view help, double v) {
      w.family(n, "counter", help);
      w.sample(n, l, v);
    };
    counter("sluice_http_connections_accepted_total", "Connections accepted.",
            static_cast<double>(st.connections_accepted));
    counter("sluice_http_connections_rejected_total", "Connections refused over max_connections.",
            static_cast<double>(st.connections_rejected));
    counter("sluice_http_server_requests_total", "Requests given to the handler.",
            static_cast<double>(st.requests));
    counter("sluice_http_server_bad_requests_total", "Requests the server answered 4xx itself.",
            static_cast<double>(st.bad_requests));
    counter("sluice_http_server_timeouts_total", "Connections cut by a read, write or idle timeout.",
            static_cast<double>(st.timeouts));
    w.family("sluice_http_server_in_flight", "gauge", "Requests in a handler now.");
    w.sample("sluice_http_server_in_flight", l, static_cast<double>(st.requests_in_flight));
  });
}

void add_pool_metrics(metrics_registry& reg, std::shared_ptr<const worker_pool> pool) {
  if (!pool) throw std::invalid_argument("sluice::http::add_pool_metrics: null pool");
  reg.add([pool](prometheus_writer& w) {
    const worker_pool_stats st = pool->stats();
    const label_list l{{"pool", pool->name()}};
    w.family("sluice_pool_queued", "gauge", "Jobs waiting in the queue.");
    w.sample("sluice_pool_queued", l, static_cast<double>(st.queued));
    w.family("sluice_pool_running", "gauge", "Jobs running.");
    w.sample("sluice_pool_running", l, static_cast<double>(st.running));
    w.family("sluice_pool_jobs_total", "counter", "Jobs by outcome.");
    const std::pair<const char*, std::uint64_t> results[] = {
        {"completed", st.completed}, {"failed", st.failed},   {"dropped", st.dropped},
        {"expired", st.expired},     {"shed", st.shed},       {"rejected", st.rejected}};
    for (const auto& [r, v] : results) {
      w.sample("sluice_pool_jobs_total", label_list{{"pool", pool->name()}, {"result", r}},
               static_cast<double>(v));
    }
    w.family("sluice_pool_queue_wait_seconds", "histogram", "Time from acceptance to start.");
    w.histogram("sluice_pool_queue_wait_seconds", l, st.queue_wait);
    w.family("sluice_pool_run_seconds", "histogram", "Time from start to finish.");
    w.histogram("sluice_pool_run_seconds", l, st.run_time);
  });
}

void add_rate_limiter_metrics(metrics_registry& reg, std::shared_ptr<const client_rate_limiter> lim,
                              std::string name) {
  if (!lim) throw std::invalid_argument("sluice::http::add_rate_limiter_metrics: null limiter");
  reg.add([lim, name](prometheus_writer& w) {
    const rate::keyed_limiter_stats st = lim->stats();
    const label_list l{{"limiter", name}};
    w.family("sluice_rate_limiter_keys", "gauge", "Clients tracked.");
    w.sample("sluice_rate_limiter_keys", l, static_cast<double>(st.keys));
    w.family("sluice_rate_limiter_rejected_total", "counter", "Requests answered 429.");
    w.sample("sluice_rate_limiter_rejected_total", l, static_cast<double>(lim->rejected()));
    w.family("sluice_rate_limiter_evicted_total", "counter", "Clients forgotten, by reason.");
    w.sample("sluice_rate_limiter_evicted_total", label_list{{"limiter", name}, {"reason", "stale"}},
             static_cast<double>(st.evicted_stale));
    w.sample("sluice_rate_limiter_evicted_total", label_list{{"limiter", name}, {"reason", "live"}},
             static_cast<double>(st.evicted_live));
  });
}

void add_concurrency_limiter_metrics(metrics_registry& reg,
                                     std::shared_ptr<const concurrency_limiter> lim, std::string name) {
  if (!lim) throw std::invalid_argument("sluice::http::add_concurrency_limiter_metrics: null limiter");
  reg.add([lim, name](prometheus_writer& w) {
    const concurrency_limiter_stats st = lim->stats();
    const label_list l{{"limiter", name}};
    w.family("sluice_concurrency_limiter_in_flight", "gauge", "Permits held.");
    w.sample("sluice_concurrency_limiter_in_flight", l, static_cast<double>(lim->in_flight()));
    w.family("sluice_concurrency_limiter_limit", "gauge", "Permits in all.");
    w.sample("sluice_concurrency_limiter_limit", l, static_cast<double>(lim->limit()));
    w.family("sluice_concurrency_limiter_admitted_total", "counter", "Permits granted.");
    w.sample("sluice_concurrency_limiter_admitted_total", l, static_cast<double>(st.acquired));
    w.family("sluice_concurrency_limiter_rejected_total", "counter", "Requests shed.");
    w.sample("sluice_concurrency_limiter_rejected_total", l, static_cast<double>(st.rejected));
  });
}

// ---- HTTP request metrics -------------------------------------------------------------------

http_metrics::http_metrics(std::size_t max_series) : max_series_(max_series) {
  if (max_series == 0) throw std::invalid_argument("sluice::http::http_metrics: max_series must be >= 1");
}

http_metrics::series* http_metrics::find_series(std::string_view route, std::string_view method, int code) {
  std::unique_lock lock(mu_);
  auto it = series_.find(series_view(route, method, code));
  if (it != series_.end()) return it->second.get();
  const auto key = std::make_tuple(std::string(route), std::string(method), code);
  if (series_.size() >= max_series_) {
    // Bounded: everything beyond the limit shares one "other" series per code.
    auto other = std::make_tuple(std::string("other"), std::string("other"), code);
    auto& slot = series_[other];
    if (!slot) slot = std::make_unique<series>();
    return slot.get();
  }
  auto& slot = series_[key];
  slot = std::make_unique<series>();
  return slot.get();
}

http_metrics::route_hist* http_metrics::find_hist(std::string_view route) {
  std::unique_lock lock(mu_);
  auto it = hists_.find(route);
  if (it != hists_.end()) return it->second.get();
  const std::string key = hists_.size() >= max_series_ ? std::string("other") : std::string(route);
  auto& slot = hists_[key];
  if (!slot) slot = std::make_unique<route_hist>();
  return slot.get();
}

void http_metrics::observe(std::string_view route, std::string_view method, int code, clock::duration d) {
  if (route.empty()) route = "unmatched";
  // The usual case: both exist; one shared lock, no key built (the maps
  // compare string_views with their keys).
  series* s = nullptr;
  route_hist* h = nullptr;
  {
    std::shared_lock lock(mu_);
    if (auto it = series_.find(series_view(route, method, code)); it != series_.end()) {
      s = it->second.get();
    }
    if (auto it = hists_.find(route); it != hists_.end()) h = it->second.get();
  }
  // First sightings: find_series / find_hist add them (exclusively).
  if (s == nullptr) s = find_series(route, method, code);
  if (h == nullptr) h = find_hist(route);
  s->count.fetch_add(1, std::memory_order_relaxed);
  h->buckets[duration_summary::bucket_of(d)].fetch_add(1, std::memory_order_relaxed);
  h->count.fetch_add(1, std::memory_order_relaxed);
  h->sum_ns.fetch_add(d.count(), std::memory_order_relaxed);
}

http::middleware http_metrics::middleware() {
  return [this](handler next) -> handler {
    return [this, next](request& req, response& res) -> task<void> {
      const auto start = clock::now();
      in_flight_.fetch_add(1, std::memory_order_relaxed);
      std::exception_ptr failure;
      try {
        co_await next(req, res);
      } catch (...) {
        failure = std::current_exception();
      }
      in_flight_.fetch_sub(1, std::memory_order_relaxed);
      observe(req.pattern(), req.method(), failure ? 500 : res.status(), clock::now() - start);
      if (failure) std::rethrow_exception(failure);
    };
  };
}

void http_metrics::collect(prometheus_writer& w) const {
  std::shared_lock lock(mu_);
  w.family("sluice_http_requests_total", "counter", "HTTP requests by route, method and status code.");
  for (const auto& [key, s] : series_) {
    const auto& [route, method, code] = key;
    w.sample("sluice_http_requests_total",
             label_list{{"route", route}, {"method", method}, {"code", std::to_string(code)}},
             static_cast<double>(s->count.load(std::memory_order_relaxed)));
  }
  w.family("sluice_http_request_duration_seconds", "histogram", "HTTP request duration by route.");
  for (const auto& [route, h] : hists_) {
    duration_summary snap;
    for (std::size_t i = 0; i < duration_summary::bucket_count; ++i) {
      snap.buckets[i] = h->buckets[i].load(std::memory_order_relaxed);
    }
    snap.count = h->count.load(std::memory_order_relaxed);
    snap.sum = clock::duration(h->sum_ns.load(std::memory_order_relaxed));
    w.histogram("sluice_http_request_duration_seconds", label_list{{"route", route}}, snap);
  }
  w.family("sluice_http_requests_in_flight", "gauge", "HTTP requests in the handler now.");
  w.sample("sluice_http_requests_in_flight", label_list{}, static_cast<double>(in_flight()));
}

}  // namespace sluice::http
