// sleep, after() and ticker on the per-worker timer heaps.
#include <sluice/select.hpp>
#include <sluice/time.hpp>

#include <stdexcept>

namespace sluice {

void sleep_awaiter::await_suspend(std::coroutine_handle<> h) {
  detail::task_record* t = detail::require_task("sleep_for");
  detail::timer_heap* heap = detail::current_timer_heap();
  node_.task = t;
  node_.when = when_;
  node_.fire = &fire;
  node_.fire_locked = true;
  node_.prefetch_hint = t;  // schedule() writes the record
  node_.fired = false;      // the same awaiter may be awaited again
  detail::prepare_park(t, h, detail::wait_reason::sleep);
  heap->add(&node_);  // publishes the parked task: touch nothing after this
}

void sleep_awaiter::fire(detail::timer_node* n) noexcept {
  auto* sn = static_cast<node*>(n);
  sn->fired = true;  // before schedule(): afterwards the frame may be gone
  detail::schedule(sn->task);
}

void after_case::prepare() {
  heap_ = detail::current_timer_heap();
  if (heap_ == nullptr) throw std::logic_error("sluice::after: select must run inside a runtime");
}

void after_case::enqueue(detail::wait_node& n, result_type&) {
  timer_.wait = &n;
  timer_.when = when_;
  timer_.fire = &fire;
  timer_.fire_locked = true;
  heap_->add_locked(&timer_);
}

void after_case::fire(detail::timer_node* n) noexcept {
  // Under the heap lock: claim and wake, nothing else (see timer.hpp).
  detail::wait_node* w = static_cast<node*>(n)->wait;
  if (w->owner->try_claim(w->case_index)) w->owner->wake();
}

namespace detail {

// Shared between the ticker handle and the heap (while armed).
// Lock order: mu, then the heap's lock or the channel's lock; never the reverse
// (the timer fires in unlocked mode).
struct ticker_state : ref_counted {
  struct tick_node : timer_node {
    ticker_state* owner = nullptr;
  };
  spinlock mu;
  chan<clock::time_point> ch{1};
  clock::duration period{};
  tick_node node;
  timer_heap* home = nullptr;
  bool stopped = false;

  // Requires mu.
  void arm(clock::time_point when) {
    add_ref();  // held by the heap
    home->add(&node, when);
  }
  // Requires mu.
  void disarm() noexcept {
    if (timer_heap::remove(&node)) ref_counted::release(this);
  }

  static void fire(timer_node* n) noexcept {
    ticker_state* s = static_cast<tick_node*>(n)->owner;
    const clock::time_point now = clock::now();
    s->mu.lock();
    if (!s->stopped) {
      s->ch.try_send(now);  // a full channel drops the tick, like Go
      // Next tick one period after this one, skipping periods we fell behind on.
      clock::time_point next = detail::saturating_add(s->node.when, s->period);
      if (next <= now) next = detail::saturating_add(now, s->period);
      // reset() may have re-armed the node while this firing was in flight.
      if (s->node.heap.load(std::memory_order_relaxed) == nullptr) s->arm(next);
    }
    s->mu.unlock();
    ref_counted::release(s);
  }
  static void drop(timer_node* n) noexcept {
    ticker_state* s = static_cast<tick_node*>(n)->owner;
    s->mu.lock();
    s->stopped = true;
    s->mu.unlock();
    ref_counted::release(s);
  }
};

}  // namespace detail

ticker::ticker(clock::duration period) {
  if (period <= clock::duration::zero()) {
    throw std::invalid_argument("sluice::ticker: period must be positive");
  }
  detail::timer_heap* heap = detail::current_timer_heap();
  if (heap == nullptr) throw std::logic_error("sluice::ticker must be created inside a runtime");
  s_ = new detail::ticker_state();
  s_->period = period;
  s_->home = heap;
  s_->node.owner = s_;
  s_->node.fire = &detail::ticker_state::fire;
  s_->node.drop = &detail::ticker_state::drop;
  s_->node.fire_locked = false;
  s_->mu.lock();
  s_->arm(detail::deadline_after(period));
  s_->mu.unlock();
}

ticker::ticker(ticker&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}

ticker& ticker::operator=(ticker&& o) noexcept {
  if (this != &o) {
    stop();
    if (s_ != nullptr) detail::ref_counted::release(s_);
    s_ = std::exchange(o.s_, nullptr);
  }
  return *this;
}

ticker::~ticker() {
  if (s_ != nullptr) {
    stop();
    detail::ref_counted::release(s_);
  }
}

const chan<clock::time_point>& ticker::channel() const noexcept { return s_->ch; }

void ticker::stop() noexcept {
  if (s_ == nullptr) return;
  s_->mu.lock();
  s_->stopped = true;
  s_->disarm();
  s_->mu.unlock();
}

void ticker::reset(clock::duration period) {
  if (period <= clock::duration::zero()) {
    throw std::invalid_argument("sluice::ticker::reset: period must be positive");
  }
  s_->mu.lock();
  s_->disarm();
  s_->stopped = false;
  s_->period = period;
  s_->arm(detail::deadline_after(period));
  s_->mu.unlock();
}

namespace detail {

std::uint32_t fast_rand() noexcept {
  thread_local std::uint64_t s = 0;
  if (s == 0) s = reinterpret_cast<std::uintptr_t>(&s) | 1;
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  return static_cast<std::uint32_t>(s >> 32);
}

}  // namespace detail
}  // namespace sluice
