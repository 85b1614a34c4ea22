// Internal: the registry of live tasks (num_tasks, dump_tasks, leak_check and
// the runtime's shutdown). Go keeps every g on allgs; we link every task into
// one of a group of lists owned by the worker that spawned it.
//
// Why a group of lists per worker and not one: a task is usually finished by
// another worker than the one that spawned it. With one locked list per
// spawner, the finisher took the very lock the spawner was about to take next
// and wrote the spawner's newest records, so every spawn met a cache miss on
// its own lock (perf: 77% of submit_new's samples on the lock's exchange in
// spawn_join). A task joins list `id % lists_per_worker` of its spawner's
// group, so the spawner and a finisher meet on one lock only when they work
// on tasks 16 ids apart at the same moment.
//
// Tried and dropped: a slot per task in arrays owned by the spawner (no lock
// on the spawn path at all). Same speed in spawn_join, but the slot arrays
// cost 11 bytes per parked task (park_memory 322 -> 333 bytes), where the
// links here live in the task record the task has anyway.
#pragma once

#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/task_record.hpp>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sluice::detail {

class registry {
 public:
  static constexpr std::size_t lists_per_worker = 16;
  explicit registry(std::size_t workers) : lists_(workers * lists_per_worker) {}

  // Records t, whose id and origin are already set, in a list of the group
  // of `worker_index` (the spawning worker; any index for other threads).
  void add(task_record* t, std::size_t worker_index) noexcept;
  // Any thread. Does nothing if t is not registered.
  void remove(task_record* t) noexcept;
  // Live tasks. Exact when nothing is spawning or finishing meanwhile.
  std::size_t count() const noexcept;
  // Calls f(record) for every live task, holding one list lock at a time, so
  // no record is freed while f reads it.
  template <class F>
  void for_each(F&& f) const {
    for (const list& l : lists_) {
      l.mu.lock();
      for (task_record* t = l.head; t != nullptr; t = t->reg_next) f(*t);
      l.mu.unlock();
    }
  }
  std::vector<task_record*> snapshot() const;

 private:
  struct alignas(64) list {
    mutable spinlock mu;
    task_record* head = nullptr;
    std::size_t count = 0;
  };
  std::vector<list> lists_;  // worker w's group: [w * lists_per_worker, (w + 1) * lists_per_worker)
};

}  // namespace sluice::detail
