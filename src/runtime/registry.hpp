// Internal: the registry of live tasks (num_tasks, dump_tasks, leak_check and
// the runtime's shutdown). Go keeps every g on allgs; we keep a slot per live
// task in arrays owned by the worker that spawned it.
//
// Why slots and not a list: the task is usually finished by another worker than
// the one that spawned it. With a locked list per spawner, the finisher took the
// spawner's lock and wrote the spawner's newest records, so every spawn met a
// cache miss on its own lock (spawn_join spent most of its registry time in that
// one exchange). Here the spawner writes only its own cursor, its own `added`
// counter and the slot it takes; the finisher writes the slot back to null and
// a counter in the chunk header, under the chunk's lock, which the spawner never
// touches. The only lines that move between them are slot lines, one per eight
// tasks.
//
// Bounds: a segment keeps at least half of its slots free at the end of every
// round of its cursor (it adds chunks when it has to), so a round reads at most
// twice as many slots as it hands out and the slots take at most 16 bytes per
// task at the peak number of live tasks. Chunks are kept until the scheduler is
// destroyed (the same rule as Go's allgs and our frame caches).
#pragma once

#include <sluice/detail/spinlock.hpp>
#include <sluice/detail/task_record.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace sluice::detail {

struct registry_chunk {
  static constexpr std::size_t slots = 512;
  // The finishers' line: taken by whoever removes a task of this chunk and by
  // readers (for_each), never by the spawner.
  alignas(64) spinlock mu;
  std::atomic<std::uint64_t> removed{0};
  alignas(64) std::atomic<task_record*> slot[slots]{};
};

class registry {
 public:
  // One segment per worker, plus one (locked) for spawns from outside a worker.
  explicit registry(std::size_t workers);
  ~registry();
  registry(const registry&) = delete;
  registry& operator=(const registry&) = delete;

  // Records t, whose id and origin are already set. `worker_index` is the
  // calling worker's index; only that worker may use it. Pass `foreign` from a
  // thread that is not a worker of this scheduler.
  static constexpr std::size_t foreign = static_cast<std::size_t>(-1);
  void add(task_record* t, std::size_t worker_index);
  // Any thread. t must have been added and not removed.
  void remove(task_record* t) noexcept;
  // Live tasks. Exact when nothing is spawning or finishing meanwhile.
  std::size_t count() const noexcept;
  // Calls f(record) for every live task, holding one chunk lock at a time, so
  // no record is freed while f reads it.
  template <class F>
  void for_each(F&& f) const {
    for (const auto& seg : segments_) {
      std::lock_guard list_lock(seg->list_mu);
      for (registry_chunk* c : seg->chunks) {
        c->mu.lock();
        for (const auto& s : c->slot) {
          if (task_record* t = s.load(std::memory_order_acquire)) f(*t);
        }
        c->mu.unlock();
      }
    }
  }
  std::vector<task_record*> snapshot() const;

 private:
  struct alignas(64) segment {
    // Written by the owner only; the chunk list under list_mu (readers take it).
    std::vector<registry_chunk*> chunks;
    std::size_t chunk_index = 0;
    std::size_t pos = registry_chunk::slots;  // next slot of chunks[chunk_index] to look at
    std::atomic<std::uint64_t> added{0};
    mutable std::mutex list_mu;
  };
  std::atomic<task_record*>* take_slot(segment& s, registry_chunk*& chunk);
  void grow_if_needed(segment& s);

  std::vector<std::unique_ptr<segment>> segments_;
  std::mutex foreign_mu_;
};

}  // namespace sluice::detail
