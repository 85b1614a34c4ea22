// Internal: per-thread pools of I/O buffers for connections.
//
// A keep-alive connection hands its read and write buffers back while it
// waits for the next request, so 5,000 idle connections hold none. The pool
// makes taking them back cheap: a thread-local free list, bounded, with no
// locking (a buffer may be returned on another thread than it was taken on;
// it simply joins that thread's list).
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace sluice::http::detail {

// A fixed-size read buffer.
class read_buffer {
 public:
  static constexpr std::size_t size = 16 * 1024;

  read_buffer() = default;
  read_buffer(const read_buffer&) = delete;
  read_buffer& operator=(const read_buffer&) = delete;
  ~read_buffer() { release(); }

  char* data() {
    if (!mem_) acquire();
    return mem_.get();
  }
  bool held() const noexcept { return mem_ != nullptr; }
  void release() noexcept;

 private:
  void acquire();
  std::unique_ptr<char[]> mem_;
};

// Strings used as write buffers (capacity kept when pooled).
std::string take_string();
void give_string(std::string&& s) noexcept;

}  // namespace sluice::http::detail
