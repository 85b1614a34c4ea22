#include "config.hpp"

#include "duration_flag.hpp"


#include <CLI/CLI.hpp>

#include <ostream>
#include <stdexcept>
#include <string>

namespace relay {

namespace {
void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}
}  // namespace

void config::validate() const {
  // The listen address is checked by the same parser the listener uses: a
  // host we can bind (an IP literal, "localhost" or empty) and a port.
  const auto colon = listen.rfind(':');
  require(colon != std::string::npos && colon + 1 < listen.size(),
          "--listen: expected HOST:PORT, got \"" + listen + "\"");
  const std::string port = listen.substr(colon + 1);
  require(port.find_first_not_of("0123456789") == std::string::npos && port.size() <= 5 &&
              std::stoul(port) <= 65535,
          "--listen: the port must be a number in 0..65535, got \"" + port + "\"");
  require(workers >= 1 && workers <= 100000, "--workers must be in 1..100000");
  require(queue >= 1 && queue <= 100000000, "--queue must be in 1..100000000");
  require(rate > 0 && rate <= 1e9, "--rate must be > 0 (events per second per client)");
  require(burst >= 1, "--burst must be >= 1");
  require(max_body >= 1 && max_body <= (std::size_t{1} << 30), "--max-body must be in 1..1073741824");
  require(delivery_timeout > sluice::clock::duration::zero(), "--delivery-timeout must be > 0");
  require(max_attempts >= 1 && max_attempts <= 1000, "--max-attempts must be in 1..1000");
  require(retry_base > sluice::clock::duration::zero(), "--retry-base must be > 0");
  require(retry_max >= retry_base, "--retry-max must be >= --retry-base");
  require(per_subscriber_concurrency >= 1, "--per-subscriber-concurrency must be >= 1");
  require(max_connections >= 1, "--max-connections must be >= 1");
  require(shutdown_timeout >= sluice::clock::duration::zero(), "--shutdown-timeout must be >= 0");
  require(retain_events >= 1, "--retain-events must be >= 1");
  require(max_subscriptions >= 1, "--max-subscriptions must be >= 1");
}

std::optional<config> parse_command_line(int argc, const char* const* argv, std::ostream& out,
                                         std::ostream& err, int* exit_code) {
  config c;
  CLI::App app{
      "sluice-relay: a webhook fan-out relay. Takes events over HTTP and delivers each one to "
      "every subscriber of its topic through a bounded worker pool, with retries, rate limits "
      "and a graceful shutdown (SIGTERM/SIGINT: drain, then report what was dropped)."};
  app.add_option("--listen", c.listen, "address to listen on, HOST:PORT")->capture_default_str();
  app.add_option("--workers", c.workers, "delivery workers (deliveries running at once)")
      ->capture_default_str();
  app.add_option("--queue", c.queue,
                 "deliveries waiting to start, new ones and scheduled retries alike; an event "
                 "whose deliveries do not all fit is refused with 503")
      ->capture_default_str();
  app.add_option("--rate", c.rate, "events per second per client IP on /v1 (token bucket)")
      ->capture_default_str();
  app.add_option("--burst", c.burst, "token bucket size per client IP on /v1")->capture_default_str();
  app.add_option("--max-body", c.max_body, "largest request body in bytes (413 beyond)")
      ->capture_default_str();
  examples::add_duration_option(app, "--delivery-timeout", &c.delivery_timeout,
                                "bound on one delivery attempt")
      ->default_str("5s");
  app.add_option("--max-attempts", c.max_attempts, "attempts per delivery before it is failed")
      ->capture_default_str();
  examples::add_duration_option(app, "--retry-base", &c.retry_base,
                                "first retry's backoff cap (exponential, full jitter)")
      ->default_str("100ms");
  examples::add_duration_option(app, "--retry-max", &c.retry_max,
                                "largest wait between attempts (also caps a Retry-After)")
      ->default_str("10s");
  app.add_option("--per-subscriber-concurrency", c.per_subscriber_concurrency,
                 "deliveries in flight per subscription at most")
      ->capture_default_str();
  app.add_option("--max-connections", c.max_connections, "client connections at once (503 beyond)")
      ->capture_default_str();
  examples::add_duration_option(app, "--shutdown-timeout", &c.shutdown_timeout,
                                "how long queued deliveries may drain after SIGTERM/SIGINT; "
                                "the rest are dropped and logged")
      ->default_str("30s");
  app.add_option("--retain-events", c.retain_events, "newest events kept for GET /v1/events/{id}")
      ->capture_default_str();
  app.add_option("--max-subscriptions", c.max_subscriptions,
                 "subscriptions at most, over all topics (409 beyond)")
      ->capture_default_str();
  app.add_flag("--access-log", c.access_log, "log one line per HTTP request");
  try {
    app.parse(argc, argv);
    c.validate();
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    *exit_code = 0;
    return std::nullopt;
  } catch (const CLI::ParseError& e) {
    err << "sluice-relay: " << e.what() << "\n(run sluice-relay --help for the flags)\n";
    *exit_code = 2;
    return std::nullopt;
  } catch (const std::invalid_argument& e) {
    err << "sluice-relay: " << e.what() << "\n";
    *exit_code = 2;
    return std::nullopt;
  }
  *exit_code = 0;
  return c;
}

}  // namespace relay
