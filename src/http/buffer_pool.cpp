#include "buffer_pool.hpp"

namespace sluice::http::detail {

namespace {
// Bounds: a thread keeps at most this many free buffers of each kind; more go
// back to the allocator. Strings that grew past max_pooled_string are freed.
constexpr std::size_t max_free = 64;
constexpr std::size_t max_pooled_string = 64 * 1024;

struct pools {
  std::vector<std::unique_ptr<char[]>> reads;
  std::vector<std::string> strings;
};
thread_local pools tl_pools;
}  // namespace

void read_buffer::acquire() {
  auto& v = tl_pools.reads;
  if (!v.empty()) {
    mem_ = std::move(v.back());
    v.pop_back();
    return;
  }
  mem_ = std::make_unique<char[]>(size);
}

void read_buffer::release() noexcept {
  if (!mem_) return;
  auto& v = tl_pools.reads;
  if (v.size() < max_free) {
    try {
      v.push_back(std::move(mem_));
    } catch (...) {
    }
  }
  mem_.reset();
}

std::string take_string() {
  auto& v = tl_pools.strings;
  if (v.empty()) return {};
  std::string s = std::move(v.back());
  v.pop_back();
  return s;
}

void give_string(std::string&& s) noexcept {
  auto& v = tl_pools.strings;
  if (s.capacity() == 0 || s.capacity() > max_pooled_string || v.size() >= max_free) {
    std::string().swap(s);
    return;
  }
  s.clear();
  try {
    v.push_back(std::move(s));
  } catch (...) {
  }
  std::string().swap(s);
}

}  // namespace sluice::http::detail
