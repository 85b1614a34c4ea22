// Internal: intrusive reference counting for shared state (channels, contexts,
// tickers). Cheaper than shared_ptr (one allocation, no control block).
#pragma once

#include <atomic>
#include <utility>

namespace sluice::detail {

class ref_counted {
 public:
  void add_ref() const noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  // Adds a reference only if the object is not already dying (count > 0). For
  // parents that find a child through a raw pointer under their lock.
  bool try_add_ref() const noexcept {
    int n = refs_.load(std::memory_order_relaxed);
    while (n > 0) {
      if (refs_.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
    }
    return false;
  }
  // acq_rel: the last owner must see all writes made through other references
  // before it destroys the object.
  template <class T>
  static void release(const T* p) noexcept {
    if (p->refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete p;
  }

 protected:
  ref_counted() = default;
  ~ref_counted() = default;

 private:
  mutable std::atomic<int> refs_{1};
};

// Owning pointer to a ref_counted T.
template <class T>
class ref_ptr {
 public:
  ref_ptr() noexcept = default;
  // Adopts a reference the caller already owns.
  static ref_ptr adopt(T* p) noexcept {
    ref_ptr r;
    r.p_ = p;
    return r;
  }
  // Takes a new reference.
  static ref_ptr share(T* p) noexcept {
    if (p != nullptr) p->add_ref();
    return adopt(p);
  }
  ref_ptr(const ref_ptr& o) noexcept : p_(o.p_) {
    if (p_ != nullptr) p_->add_ref();
  }
  ref_ptr(ref_ptr&& o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  ref_ptr& operator=(ref_ptr o) noexcept {
    std::swap(p_, o.p_);
    return *this;
  }
  ~ref_ptr() {
    if (p_ != nullptr) ref_counted::release(p_);
  }
  T* get() const noexcept { return p_; }
  T* operator->() const noexcept { return p_; }
  T& operator*() const noexcept { return *p_; }
  explicit operator bool() const noexcept { return p_ != nullptr; }
  T* detach() noexcept { return std::exchange(p_, nullptr); }

 private:
  T* p_ = nullptr;
};

}  // namespace sluice::detail
