// Internal: the move-only RAII guard that co_await m.lock() returns, shared by
// mutex (exclusive) and rw_mutex (exclusive and shared).
#pragma once

#include <stdexcept>
#include <utility>

namespace sluice::detail {

void throw_empty_guard();

// Shared = true: releases with unlock_shared(), else unlock(). Only M makes
// non-empty guards.
template <class M, bool Shared>
class [[nodiscard]] basic_guard {
 public:
  basic_guard() noexcept = default;
  basic_guard(basic_guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
  basic_guard& operator=(basic_guard&& o) noexcept {
    if (this != &o) {
      release_lock();
      m_ = std::exchange(o.m_, nullptr);
    }
    return *this;
  }
  basic_guard(const basic_guard&) = delete;
  basic_guard& operator=(const basic_guard&) = delete;
  ~basic_guard() { release_lock(); }

  // Unlocks now; the guard becomes empty. Throws std::logic_error if empty.
  void unlock() {
    if (m_ == nullptr) throw_empty_guard();
    release_lock();
  }
  // True while the guard holds the lock.
  bool owns_lock() const noexcept { return m_ != nullptr; }
  explicit operator bool() const noexcept { return m_ != nullptr; }
  // Gives up ownership without unlocking: the caller must unlock the mutex.
  M* release() noexcept { return std::exchange(m_, nullptr); }

 private:
  friend M;
  explicit basic_guard(M* m) noexcept : m_(m) {}
  void release_lock() noexcept {
    if (M* m = std::exchange(m_, nullptr)) {
      if constexpr (Shared) {
        m->unlock_shared();
      } else {
        m->unlock();
      }
    }
  }
  M* m_ = nullptr;
};

}  // namespace sluice::detail
