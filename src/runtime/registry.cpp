// The registry of live tasks: see registry.hpp for why it is laid out this way.
#include "registry.hpp"

namespace sluice::detail {

void registry::add(task_record* t, std::size_t worker_index) noexcept {
  // Consecutive ids go to different lists of the spawner's group.
  const std::size_t groups = lists_.size() / lists_per_worker;
  const std::size_t index =
      (worker_index % groups) * lists_per_worker + (t->id % lists_per_worker);
  list& l = lists_[index];
  t->reg_list = static_cast<std::uint16_t>(index);
  l.mu.lock();
  t->reg_prev = nullptr;
  t->reg_next = l.head;
  if (l.head != nullptr) l.head->reg_prev = t;
  l.head = t;
  ++l.count;
  t->registered = true;
  l.mu.unlock();
}

void registry::remove(task_record* t) noexcept {
  list& l = lists_[t->reg_list];
  l.mu.lock();
  if (t->registered) {
    if (t->reg_prev != nullptr) {
      t->reg_prev->reg_next = t->reg_next;
    } else {
      l.head = t->reg_next;
    }
    if (t->reg_next != nullptr) t->reg_next->reg_prev = t->reg_prev;
    t->registered = false;
    --l.count;
  }
  l.mu.unlock();
}

std::size_t registry::count() const noexcept {
  std::size_t n = 0;
  for (const list& l : lists_) {
    l.mu.lock();
    n += l.count;
    l.mu.unlock();
  }
  return n;
}

std::vector<task_record*> registry::snapshot() const {
  std::vector<task_record*> out;
  for_each([&](task_record& t) { out.push_back(&t); });
  return out;
}

}  // namespace sluice::detail
