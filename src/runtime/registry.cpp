// The registry of live tasks: see registry.hpp for the design and its bounds.
#include "registry.hpp"

namespace sluice::detail {

registry::registry(std::size_t workers) {
  segments_.reserve(workers + 1);
  for (std::size_t i = 0; i < workers + 1; ++i) segments_.push_back(std::make_unique<segment>());
}

registry::~registry() {
  for (auto& seg : segments_) {
    for (registry_chunk* c : seg->chunks) delete c;
  }
}

void registry::grow_if_needed(segment& s) {
  // Removed first, then added: a removal we count happened after its task's
  // add (through the run queue hand-off), so `live` cannot go below zero.
  std::uint64_t removed = 0;
  for (registry_chunk* c : s.chunks) removed += c->removed.load(std::memory_order_acquire);
  const std::uint64_t live = s.added.load(std::memory_order_relaxed) - removed;
  const std::size_t old_size = s.chunks.size();
  std::size_t size = old_size;
  while (2 * live >= size * registry_chunk::slots) ++size;
  if (size == old_size) return;
  std::vector<std::unique_ptr<registry_chunk>> fresh;
  for (std::size_t i = old_size; i < size; ++i) fresh.push_back(std::make_unique<registry_chunk>());
  {
    std::lock_guard lock(s.list_mu);
    s.chunks.reserve(size);
    for (auto& c : fresh) s.chunks.push_back(c.release());
  }
  // Continue in the first new chunk: it is all free.
  s.chunk_index = old_size;
}

std::atomic<task_record*>* registry::take_slot(segment& s, registry_chunk*& chunk) {
  for (;;) {
    if (s.pos < registry_chunk::slots) {
      registry_chunk* c = s.chunks[s.chunk_index];
      std::atomic<task_record*>* slot = &c->slot[s.pos++];
      // relaxed: nothing of the previous occupant is read; the finisher's
      // store of null only has to be seen eventually.
      if (slot->load(std::memory_order_relaxed) == nullptr) {
        chunk = c;
        return slot;
      }
      continue;
    }
    if (++s.chunk_index < s.chunks.size()) {
      s.pos = 0;
      continue;
    }
    // A full round of the cursor: make sure the next one finds at least half
    // of what it reads free. pos stays at the end until that is done, so a
    // bad_alloc leaves a state that the next call resumes from.
    s.chunk_index = 0;
    grow_if_needed(s);
    s.pos = 0;
  }
}

void registry::add(task_record* t, std::size_t worker_index) {
  const bool is_foreign = worker_index == foreign;
  segment& s = *segments_[is_foreign ? segments_.size() - 1 : worker_index];
  // Spawns from outside the workers are rare (the main task) and share one
  // segment, so they take turns; a worker's own segment needs no lock.
  std::unique_lock<std::mutex> serial(foreign_mu_, std::defer_lock);
  if (is_foreign) serial.lock();
  registry_chunk* chunk = nullptr;
  std::atomic<task_record*>* slot = take_slot(s, chunk);
  t->reg_slot = slot;
  t->reg_chunk = chunk;
  t->registered = true;
  s.added.store(s.added.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  // release: a reader that finds t in the slot sees its id and origin.
  slot->store(t, std::memory_order_release);
}

void registry::remove(task_record* t) noexcept {
  registry_chunk* c = t->reg_chunk;
  c->mu.lock();
  t->reg_slot->store(nullptr, std::memory_order_relaxed);
  t->registered = false;
  c->mu.unlock();
  // release: pairs with count()'s and grow_if_needed()'s acquire (see there).
  c->removed.fetch_add(1, std::memory_order_release);
}

std::size_t registry::count() const noexcept {
  std::uint64_t removed = 0;
  std::uint64_t added = 0;
  for (const auto& seg : segments_) {
    std::lock_guard lock(seg->list_mu);
    for (const registry_chunk* c : seg->chunks) removed += c->removed.load(std::memory_order_acquire);
  }
  for (const auto& seg : segments_) added += seg->added.load(std::memory_order_acquire);
  return added > removed ? static_cast<std::size_t>(added - removed) : 0;
}

std::vector<task_record*> registry::snapshot() const {
  std::vector<task_record*> out;
  for_each([&](task_record& t) { out.push_back(&t); });
  return out;
}

}  // namespace sluice::detail
