// sluice-relay: a webhook fan-out relay (see README "The reference service").
//
//   sluice-relay                                   # 127.0.0.1:8080, in-memory state
//   sluice-relay --listen 0.0.0.0:9000 --workers 128 --shutdown-timeout 10s
//
// Exit status: 0 after a shutdown by SIGTERM/SIGINT (drained or not: what was
// dropped is logged), 1 if it cannot listen or serving fails, 2 for a bad
// command line, 130 for a second SIGINT during the drain.
#include "config.hpp"
#include "service.hpp"

#include <sluice/sluice.hpp>

#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <iostream>

namespace sl = sluice;
using nlohmann::json;

namespace {

// The second SIGINT: the operator wants out now. Only async-signal-safe calls.
extern "C" void on_second_interrupt(int) {
  static const char msg[] =
      "{\"level\":\"error\",\"msg\":\"second interrupt: exiting at once; outstanding deliveries "
      "are lost\"}\n";
  [[maybe_unused]] ssize_t r = write(STDOUT_FILENO, msg, sizeof msg - 1);
  _exit(130);
}

// Before the runtime registers its own handlers, so that what they restore
// after the first signal is this: SIGINT exits at once, SIGTERM is ignored
// (a shutdown is already under way). No gap in which the default action
// could kill the process mid-drain.
void install_second_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_second_interrupt;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  sigemptyset(&ign.sa_mask);
  sigaction(SIGTERM, &ign, nullptr);
}

long long ms(sl::clock::duration d) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
}

json config_fields(const relay::config& c) {
  return {{"listen", c.listen},
          {"workers", c.workers},
          {"queue", c.queue},
          {"rate", c.rate},
          {"burst", c.burst},
          {"max_body", c.max_body},
          {"delivery_timeout_ms", ms(c.delivery_timeout)},
          {"max_attempts", c.max_attempts},
          {"retry_base_ms", ms(c.retry_base)},
          {"retry_max_ms", ms(c.retry_max)},
          {"per_subscriber_concurrency", c.per_subscriber_concurrency},
          {"max_connections", c.max_connections},
          {"shutdown_timeout_ms", ms(c.shutdown_timeout)},
          {"retain_events", c.retain_events},
          {"max_subscriptions", c.max_subscriptions},
          {"access_log", c.access_log}};
}

sl::task<void> serve(relay::service* svc, sl::net::tcp_listener ln, sl::cancel_func stop,
                     std::error_code* out) {
  *out = co_await svc->serve(std::move(ln));
  if (*out && *out != sl::errc::closed) {
    relay::stdout_sink(relay::log_line("error", "serving failed", {{"error", out->message()}}));
    stop();  // ends the wait for a signal: shut down
  }
}

sl::task<int> relay_main(relay::config cfg) {
  auto [sig, stop_waiting] = sl::signal_context(sl::context::background(), {SIGTERM, SIGINT});
  relay::stdout_sink(relay::log_line("info", "starting", {{"pid", getpid()}, {"config", config_fields(cfg)}}));
  sl::net::tcp_listener ln;
  try {
    ln = sl::net::tcp_listener::listen(cfg.listen);
  } catch (const std::exception& e) {
    relay::stdout_sink(relay::log_line("error", "cannot listen", {{"address", cfg.listen}, {"error", e.what()}}));
    stop_waiting();
    co_return 1;
  }
  relay::service svc(cfg);
  relay::stdout_sink(relay::log_line("info", "listening", {{"address", ln.local_address()}}));
  std::error_code served;
  auto server = sl::spawn(serve, &svc, std::move(ln), stop_waiting, &served);

  co_await sig.done();
  // Unregister now (not whenever the signal watcher gets to it): from here
  // on SIGINT is install_second_signal_handlers()'s, and SIGTERM ignored.
  stop_waiting();
  relay::stdout_sink(relay::log_line(
      "info", "shutdown: signal received; /readyz is 503 and new events are refused",
      {{"shutdown_timeout_ms", ms(cfg.shutdown_timeout)}}));
  auto [drain, cancel_drain] = sl::with_timeout(sl::context::background(), cfg.shutdown_timeout);
  relay::shutdown_report report = co_await svc.shutdown(drain);
  cancel_drain();
  co_await server.join();
  relay::stdout_sink(relay::log_line("info", "stopped", {{"dropped", report.dropped}, {"drained", report.drained}}));
  co_return served && served != sl::errc::closed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  int code = 0;
  auto cfg = relay::parse_command_line(argc, argv, std::cout, std::cerr, &code);
  if (!cfg) return code;
  install_second_signal_handlers();
  // One runtime worker per CPU this process may run on (its affinity mask,
  // as Go's GOMAXPROCS default), not per CPU of the machine: pinned or in a
  // cpuset, more workers than CPUs only contend.
  sl::runtime_options opts;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) opts.workers = CPU_COUNT(&set);
  sl::runtime rt(opts);
  return rt.run([c = std::move(*cfg)]() { return relay_main(c); });
}
