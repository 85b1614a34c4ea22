// Coroutine frame allocator: per-worker size-class caches carved from 64 KiB
// slabs, with remote frees (mimalloc's idea).
//
// Why: a task's frames are usually allocated by the worker that spawned it and
// freed by the worker that ran it. With malloc, those cross-thread frees contend
// on the allocating thread's arena lock (perf showed futex waits in
// __lll_lock_wait_private dominating spawn_join).
//
// Design:
//   * a slab is 64 KiB, 64 KiB-aligned, and holds blocks of one size class; its
//     header names the cache that owns it, so free() finds the owner by masking
//     the pointer: no per-block header (a parked task costs only its frames);
//   * each cache has one owner at a time (a worker, for its lifetime) which
//     uses its free lists without atomics; other threads push freed blocks on
//     the cache's lock-free remote stack (Treiber push; the owner takes the
//     whole stack with one exchange, so there is no ABA);
//   * caches are never destroyed: a worker takes one from a global pool when it
//     starts and returns it when it stops, so a frame freed after its worker is
//     gone (runtime shutdown) still has a live owner to go back to;
//   * threads that are not workers use one shared cache under a mutex;
//   * memory is kept for reuse (bounded by the peak number of live frames);
//     frames above 2 KiB go to operator new directly (an HTTP client's send
//     frame is about 1.1 KiB: malloc took it through its slow large-chunk path).
// Under ASan/TSan the allocator steps aside so the sanitizers see every frame.
#include "scheduler.hpp"

#include <sluice/task.hpp>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#include <sys/mman.h>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SLUICE_PLAIN_FRAMES 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SLUICE_PLAIN_FRAMES 1
#endif
#endif

namespace sluice::detail {

#ifndef SLUICE_PLAIN_FRAMES
namespace {

constexpr std::size_t slab_size = 64 * 1024;
constexpr std::size_t granule = 16;
constexpr std::size_t max_block = 2048;
constexpr std::size_t classes = max_block / granule;

// Slabs come from 4 MiB mmap'ed regions carved in order, so no page is
// touched before its slab is given to a size class (aligned_alloc touches
// malloc's chunk headers around every slab: ~10% extra RSS per parked task).
class slab_source {
 public:
  void* get() {
    void* s = nullptr;
    {
      std::lock_guard lock(mu_);
      if (next_ == end_) {
        constexpr std::size_t region = 4 * 1024 * 1024;
        void* m = mmap(nullptr, region + slab_size, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED) throw std::bad_alloc();
        const auto base = reinterpret_cast<std::uintptr_t>(m);
        const std::uintptr_t aligned = (base + slab_size - 1) & ~(slab_size - 1);
        next_ = reinterpret_cast<char*>(aligned);
        end_ = next_ + region;
      }
      s = next_;
      next_ += slab_size;
    }
#ifdef MADV_POPULATE_WRITE
    // One system call faults in the whole slab, instead of one page fault per
    // 4 KiB as its blocks are carved (8,700 faults for 100,000 new sleeping
    // tasks). The slab is about to be carved by its class anyway; the cost is
    // RSS taken early: at most one 64 KiB slab per cache (one per worker, one
    // shared) and size class in use, where pages on first touch took 4 KiB.
    // An old kernel answers EINVAL and the pages come on first touch as before.
    madvise(s, slab_size, MADV_POPULATE_WRITE);
#endif
    return s;
  }

 private:
  std::mutex mu_;
  char* next_ = nullptr;
  char* end_ = nullptr;
};

slab_source& slabs() {
  static slab_source* s = new slab_source();
  return *s;
}

struct free_block {
  free_block* next;
};

struct frame_cache;

struct alignas(64) slab_header {
  frame_cache* owner;
  std::uint32_t cls;
};

struct frame_cache {
  std::array<free_block*, classes> free{};
  std::array<char*, classes> bump{};      // next uncarved block of the current slab
  std::array<char*, classes> bump_end{};
  std::atomic<free_block*> remote{nullptr};

  void* allocate(std::size_t cls) {
    if (free_block* b = free[cls]) {
      free[cls] = b->next;
      return b;
    }
    if (drain_remote() && free[cls] != nullptr) {
      free_block* b = free[cls];
      free[cls] = b->next;
      return b;
    }
    const std::size_t size = (cls + 1) * granule;
    if (bump[cls] == nullptr || bump[cls] + size > bump_end[cls]) {
      void* mem = slabs().get();
      auto* h = ::new (mem) slab_header{this, static_cast<std::uint32_t>(cls)};
      bump[cls] = reinterpret_cast<char*>(h) + sizeof(slab_header);
      bump_end[cls] = reinterpret_cast<char*>(h) + slab_size;
    }
    void* p = bump[cls];
    bump[cls] += size;
    return p;
  }

  void free_local(void* p, std::size_t cls) noexcept {
    auto* b = static_cast<free_block*>(p);
    b->next = free[cls];
    free[cls] = b;
  }

  // Any thread. release: the block's last writes happen before the owner reuses it.
  void free_remote(void* p) noexcept {
    auto* b = static_cast<free_block*>(p);
    free_block* head = remote.load(std::memory_order_relaxed);
    do {
      b->next = head;
    } while (!remote.compare_exchange_weak(head, b, std::memory_order_release,
                                           std::memory_order_relaxed));
  }

  // Owner only. acquire pairs with free_remote's release.
  bool drain_remote() noexcept {
    free_block* b = remote.exchange(nullptr, std::memory_order_acquire);
    if (b == nullptr) return false;
    while (b != nullptr) {
      free_block* next = b->next;
      const auto* h = reinterpret_cast<const slab_header*>(reinterpret_cast<std::uintptr_t>(b) &
                                                           ~(slab_size - 1));
      free_local(b, h->cls);
      b = next;
    }
    return true;
  }
};

struct cache_pool {
  std::mutex mu;
  std::vector<frame_cache*> idle;
  frame_cache shared;  // for threads that are not workers, under mu
  std::mutex shared_mu;
};

cache_pool& pool() {
  // Never destroyed: frames may be freed during static destruction.
  static cache_pool* p = new cache_pool();
  return *p;
}

thread_local frame_cache* tl_cache = nullptr;

frame_cache* my_cache() noexcept {
  asm volatile("" ::: "memory");
  return tl_cache;
}

}  // namespace

void attach_frame_cache() {
  cache_pool& p = pool();
  std::lock_guard lock(p.mu);
  if (p.idle.empty()) {
    tl_cache = new frame_cache();
  } else {
    tl_cache = p.idle.back();
    p.idle.pop_back();
  }
}

void detach_frame_cache() noexcept {
  if (tl_cache == nullptr) return;
  cache_pool& p = pool();
  std::lock_guard lock(p.mu);
  p.idle.push_back(tl_cache);
  tl_cache = nullptr;
}

[[gnu::noinline]] void* allocate_frame(std::size_t size) {
  if (size > max_block) return ::operator new(size);
  const std::size_t cls = (size - 1) / granule;
  if (frame_cache* c = my_cache()) return c->allocate(cls);
  cache_pool& p = pool();
  std::lock_guard lock(p.shared_mu);
  return p.shared.allocate(cls);
}

[[gnu::noinline]] void deallocate_frame(void* ptr, std::size_t size) noexcept {
  if (size > max_block) {
    ::operator delete(ptr);
    return;
  }
  const auto* h =
      reinterpret_cast<const slab_header*>(reinterpret_cast<std::uintptr_t>(ptr) & ~(slab_size - 1));
  frame_cache* owner = h->owner;
  if (owner == my_cache()) {
    owner->free_local(ptr, h->cls);
  } else {
    owner->free_remote(ptr);
  }
}

#else  // sanitizers: plain operator new, so every frame is tracked

void attach_frame_cache() {}
void detach_frame_cache() noexcept {}
void* allocate_frame(std::size_t size) { return ::operator new(size); }
void deallocate_frame(void* p, std::size_t) noexcept { ::operator delete(p); }

#endif

}  // namespace sluice::detail
