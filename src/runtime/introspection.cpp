// dump_tasks, list_tasks and leak_check.
#include "scheduler.hpp"
#include "symbolize.hpp"

#include <sluice/introspection.hpp>
#include <sluice/testing.hpp>
#include <sluice/time.hpp>

#include <algorithm>
#include <ostream>
#include <sstream>

namespace sluice {
namespace detail {

task_info describe(const task_record& t) {
  task_info info;
  info.id = t.id;
  info.state = to_string(t.reason.load(std::memory_order_relaxed));
  std::ostringstream o;
  std::string entry = symbolize(t.origin.entry_address);
  if (entry.empty() && t.origin.entry_type != nullptr) entry = std::string(*t.origin.entry_type);
  o << "entry: " << entry << "\n  created by " << to_string(t.origin.kind) << " at "
    << t.origin.file << ":" << t.origin.line;
  info.origin = o.str();
  return info;
}

}  // namespace detail

std::vector<task_info> list_tasks() {
  std::vector<task_info> out;
  detail::scheduler* s = detail::current_scheduler();
  if (s == nullptr) return out;
  // Origins are immutable once registered and the list lock orders us after
  // registration and keeps the record from being freed while we describe it.
  s->tasks().for_each([&](const detail::task_record& t) { out.push_back(detail::describe(t)); });
  std::sort(out.begin(), out.end(),
            [](const task_info& a, const task_info& b) { return a.id < b.id; });
  return out;
}

void dump_tasks(std::ostream& out) {
  for (const task_info& t : list_tasks()) {
    out << "task " << t.id << " [" << t.state << "]:\n  " << t.origin << "\n\n";
  }
}

namespace testing {

leak_check::leak_check() {
  detail::scheduler* s = detail::current_scheduler();
  if (s == nullptr) throw std::logic_error("sluice::testing::leak_check must be created in a task");
  s->tasks().for_each([&](const detail::task_record& t) { baseline_.push_back(t.id); });
  std::sort(baseline_.begin(), baseline_.end());
}

std::vector<task_info> leak_check::leaked_now() const {
  std::vector<task_info> out;
  detail::scheduler* s = detail::current_scheduler();
  if (s == nullptr) return out;
  const detail::task_record* self = detail::current_task();
  s->tasks().for_each([&](const detail::task_record& t) {
    if (&t == self || std::binary_search(baseline_.begin(), baseline_.end(), t.id)) return;
    out.push_back(detail::describe(t));
  });
  std::sort(out.begin(), out.end(),
            [](const task_info& a, const task_info& b) { return a.id < b.id; });
  return out;
}

task<std::vector<task_info>> leak_check::verify(clock::duration grace) const {
  const clock::time_point deadline = detail::deadline_after(grace);
  // goleak's schedule: retry quickly first, then back off.
  clock::duration step = std::chrono::microseconds(50);
  for (;;) {
    std::vector<task_info> leaked = leaked_now();
    if (leaked.empty() || clock::now() >= deadline) co_return leaked;
    // Let runnable tasks finish before sleeping at all.
    for (int i = 0; i < 8; ++i) co_await yield();
    leaked = leaked_now();
    if (leaked.empty()) co_return leaked;
    co_await sleep_for(std::min<clock::duration>(step, deadline - clock::now()));
    step = std::min<clock::duration>(step * 2, std::chrono::milliseconds(10));
  }
}

}  // namespace testing
}  // namespace sluice

namespace sluice {

runtime_stats current_runtime_stats() {
  runtime_stats st;
  if (detail::scheduler* s = detail::current_scheduler()) s->fill_stats(st);
  return st;
}

}  // namespace sluice
