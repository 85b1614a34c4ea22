// libFuzzer target: json_valid (the relay's event-body check) must give
// nlohmann::json::accept's answer on every input (a raw NUL aside: see
// json.hpp), and never crash, leak or trip a sanitizer.
//
//   build/fuzz/bin/sluice-fuzz-json -max_total_time=30 fuzz/corpus/json
#include <sluice/http/json.hpp>

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const bool want = text.find('\0') == std::string::npos && nlohmann::json::accept(text);
  if (sluice::http::json_valid(text) != want) {
    std::fprintf(stderr, "json_valid disagrees with nlohmann (want %d) on %zu bytes\n", want, size);
    std::abort();
  }
  return 0;
}
