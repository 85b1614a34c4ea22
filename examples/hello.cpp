// The README example: a producer, a consumer, a timeout and a wait group.
#include <sluice/sluice.hpp>

#include <cstdio>

using namespace std::chrono_literals;

sluice::task<void> produce(sluice::chan<int> out) {
  for (int i = 1; i <= 5; ++i) co_await out.send(i);
  out.close();
}

int main() {
  return sluice::run([]() -> sluice::task<int> {
    sluice::chan<int> numbers(2);
    sluice::go(produce, numbers);
    int sum = 0;
    for (;;) {
      auto r = co_await sluice::select(sluice::recv(numbers), sluice::after(1s));
      if (r.index() == 1) co_return 1;                 // timed out
      const std::optional<int>& v = r.get<0>();
      if (!v) break;                                   // closed and drained
      sum += *v;
    }
    std::printf("sum = %d\n", sum);                    // sum = 15
    co_return sum == 15 ? 0 : 1;
  });
}
