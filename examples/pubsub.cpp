// example-pubsub: a market-data broker for about a second, to watch each
// overflow policy handle a subscriber that cannot keep up.
//
//   example-pubsub                                  # 1 s, 3 publishers at 1000 msg/s each
//   example-pubsub --duration 3s --rate 5000 --slow-delay 10ms
//
// Two publishers send ticks and one sends news. Every tick subscriber sees the
// same stream; "dashboard" keeps up, the others take --slow-delay per message
// and differ only in their policy: "archiver" makes publishers wait a little
// (block, 1 ms), "mobile" keeps the newest ticks (drop_oldest), "audit" keeps
// the oldest (drop_newest), and "flaky" is cut off (disconnect). Publishing
// stops at --duration (or Ctrl-C); closing the broker then ends every
// subscription, and the table shows what each subscriber got and lost.
#include <sluice/pubsub.hpp>
#include <sluice/sluice.hpp>

#include "duration_flag.hpp"

#include <CLI/CLI.hpp>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace sl = sluice;
using namespace std::chrono_literals;

namespace {

struct message {
  int publisher = 0;
  std::uint64_t seq = 0;  // per publisher
};

struct publisher_totals {
  std::uint64_t published = 0;
  std::uint64_t delivered = 0;
  std::uint64_t dropped = 0;
  std::uint64_t disconnected = 0;
};

// Publishes to `topic` every `interval` until ctx is done.
sl::task<publisher_totals> publisher(sl::broker<message>* b, sl::context ctx, std::string topic, int id,
                                     sl::clock::duration interval) {
  publisher_totals t;
  auto next = sl::clock::now();
  for (std::uint64_t seq = 0; !ctx.err(); ++seq) {
    const sl::publish_result r = co_await b->publish(ctx, topic, message{id, seq});
    ++t.published;
    t.delivered += r.delivered;
    t.dropped += r.dropped;
    t.disconnected += r.disconnected;
    next += interval;
    auto w = co_await sl::select(sl::at(next), sl::done(ctx));
    if (w.index() != 0) break;
  }
  co_return t;
}

struct consumer_totals {
  std::uint64_t received = 0;
  std::uint64_t last_seq = 0;  // of publisher 0, the last one received
};

// Receives until the subscription ends, taking `delay` per message.
sl::task<consumer_totals> consumer(sl::chan<message> ch, sl::clock::duration delay) {
  consumer_totals t;
  while (auto m = co_await ch.recv()) {
    ++t.received;
    if (m->publisher == 0) t.last_seq = m->seq;
    if (delay > sl::clock::duration::zero()) co_await sl::sleep_for(delay);
  }
  co_return t;
}

struct subscriber_spec {
  const char* name;
  const char* topic;
  sl::subscribe_options opts;
  bool slow;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"sluice pub/sub: several publishers, subscribers with different overflow policies"};
  sl::clock::duration duration = 1s;
  sl::clock::duration slow_delay = 5ms;
  int rate = 1000;
  examples::add_duration_option(app, "--duration", &duration, "how long to publish (default 1s)");
  examples::add_duration_option(app, "--slow-delay", &slow_delay,
                                "time a slow subscriber takes per message (default 5ms)");
  app.add_option("--rate", rate, "messages per second per publisher (default 1000)")
      ->check(CLI::Range(1, 1'000'000));
  CLI11_PARSE(app, argc, argv);

  return sl::run([&]() -> sl::task<int> {
    auto sig = sl::signal_context(sl::context::background(), {SIGINT, SIGTERM});
    auto run_for = sl::with_timeout(sig.ctx, duration);
    sl::broker<message> broker;
    using sl::overflow_policy;
    const std::vector<subscriber_spec> specs = {
        {"dashboard", "ticks", {.buffer = 256, .policy = overflow_policy::block}, false},
        {"archiver", "ticks", {.buffer = 32, .policy = overflow_policy::block, .block_timeout = 1ms}, true},
        {"mobile", "ticks", {.buffer = 8, .policy = overflow_policy::drop_oldest}, true},
        {"audit", "ticks", {.buffer = 8, .policy = overflow_policy::drop_newest}, true},
        {"flaky", "ticks", {.buffer = 8, .policy = overflow_policy::disconnect}, true},
        {"newsroom", "news", {.buffer = 16, .policy = overflow_policy::block}, false},
    };
    std::vector<sl::subscription<message>> subs;
    std::vector<sl::join_handle<consumer_totals>> consumers;
    for (const subscriber_spec& s : specs) {
      subs.push_back(broker.subscribe(s.topic, s.opts));
      consumers.push_back(sl::spawn(consumer, subs.back().channel(),
                                    s.slow ? slow_delay : sl::clock::duration::zero()));
    }

    const auto interval = std::chrono::duration_cast<sl::clock::duration>(1s) / rate;
    std::vector<sl::join_handle<publisher_totals>> publishers;
    publishers.push_back(sl::spawn(publisher, &broker, run_for.ctx, std::string("ticks"), 0, interval));
    publishers.push_back(sl::spawn(publisher, &broker, run_for.ctx, std::string("ticks"), 1, interval));
    publishers.push_back(sl::spawn(publisher, &broker, run_for.ctx, std::string("news"), 2, interval));
    std::uint64_t ticks = 0;
    std::uint64_t news = 0;
    std::uint64_t last_tick_seq = 0;
    for (std::size_t i = 0; i < publishers.size(); ++i) {
      const publisher_totals t = co_await publishers[i].join();
      (i < 2 ? ticks : news) += t.published;
      if (i == 0) last_tick_seq = t.published - 1;
      std::printf("publisher %zu (%s): %llu published, %llu deliveries, %llu dropped, %llu disconnected\n",
                  i, i < 2 ? "ticks" : "news", static_cast<unsigned long long>(t.published),
                  static_cast<unsigned long long>(t.delivered), static_cast<unsigned long long>(t.dropped),
                  static_cast<unsigned long long>(t.disconnected));
    }
    broker.close();  // every subscriber drains its buffer, then its channel ends

    std::printf("\n%-10s %-6s %-12s %6s %9s %8s %13s %14s\n", "subscriber", "topic", "policy", "buffer",
                "received", "dropped", "disconnected", "last tick seq");
    bool accounted = true;
    for (std::size_t i = 0; i < specs.size(); ++i) {
      const consumer_totals c = co_await consumers[i].join();
      const subscriber_spec& s = specs[i];
      const bool cut_off = subs[i].disconnected() && s.opts.policy == overflow_policy::disconnect;
      const std::uint64_t published = std::string(s.topic) == "ticks" ? ticks : news;
      if (!cut_off && c.received + subs[i].dropped() != published) accounted = false;
      std::printf("%-10s %-6s %-12s %6lld %9llu %8llu %13s %14s\n", s.name, s.topic,
                  sl::to_string(s.opts.policy), static_cast<long long>(s.opts.buffer),
                  static_cast<unsigned long long>(c.received),
                  static_cast<unsigned long long>(subs[i].dropped()), cut_off ? "yes" : "no",
                  std::string(s.topic) == "ticks" ? std::to_string(c.last_seq).c_str() : "-");
    }
    std::printf("\n%llu ticks and %llu news published; publisher 0's last tick was #%llu.\n"
                "received + dropped == published for every subscriber not cut off: %s\n",
                static_cast<unsigned long long>(ticks), static_cast<unsigned long long>(news),
                static_cast<unsigned long long>(last_tick_seq), accounted ? "yes" : "NO");
    run_for.cancel();
    sig.cancel();
    co_return accounted ? 0 : 1;
  });
}
