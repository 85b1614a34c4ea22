// signal_context: cancel a context when a signal arrives.
//
// The handler only writes the signal number to a pipe (async-signal-safe), so a
// signal raised on any thread of the process is seen (std::raise targets the
// calling thread; sigwait/signalfd on a helper thread would miss it). One
// process-wide watcher thread reads the pipe and cancels the registered
// contexts. It is part of the runtime (not a task: it must run even when no
// runtime does) and is stopped and joined at process exit.
#include <sluice/context.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

namespace sluice {
namespace {

int g_pipe_write = -1;  // written once before any handler is installed

extern "C" void on_signal(int signo) {
  const int saved = errno;
  const unsigned char b = static_cast<unsigned char>(signo);
  [[maybe_unused]] ssize_t r = write(g_pipe_write, &b, 1);
  errno = saved;
}

class signal_hub {
 public:
  static signal_hub& get() {
    static signal_hub hub;
    return hub;
  }

  void add(detail::context_node* node, const std::vector<int>& signals) {
    std::lock_guard lock(mu_);
    start_locked();
    for (int s : signals) {
      if (++counts_[s] == 1) {
        struct sigaction sa {};
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        sa.sa_flags = SA_RESTART;
        struct sigaction old {};
        if (sigaction(s, &sa, &old) != 0) {
          --counts_[s];
          throw std::system_error(errno, std::generic_category(), "sigaction");
        }
        saved_[s] = old;
      }
    }
    regs_.push_back({node, signals});
  }

  void remove(detail::context_node* node) noexcept {
    std::lock_guard lock(mu_);
    remove_locked(node);
  }

  ~signal_hub() {
    if (thread_.joinable()) {
      const unsigned char quit = 0;
      [[maybe_unused]] ssize_t r = write(g_pipe_write, &quit, 1);
      thread_.join();
    }
  }

 private:
  struct reg {
    detail::context_node* node;
    std::vector<int> signals;
  };

  // Unregisters node, restoring the saved handlers it was the last user of.
  void remove_locked(detail::context_node* node) noexcept {
    auto it = std::find_if(regs_.begin(), regs_.end(), [&](const reg& r) { return r.node == node; });
    if (it == regs_.end()) return;
    for (int s : it->signals) {
      if (--counts_[s] == 0) {
        sigaction(s, &saved_[s], nullptr);
        counts_.erase(s);
        saved_.erase(s);
      }
    }
    regs_.erase(it);
  }

  void start_locked() {
    if (thread_.joinable()) return;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    // The write end must never block inside a signal handler.
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    read_fd_ = fds[0];
    g_pipe_write = fds[1];
    thread_ = std::thread([this] { watch(); });
  }

  void watch() {
    for (;;) {
      unsigned char b = 0;
      const ssize_t r = read(read_fd_, &b, 1);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0 || b == 0) return;
      std::vector<detail::context_node*> hit;
      {
        std::lock_guard lock(mu_);
        for (const reg& g : regs_) {
          if (std::find(g.signals.begin(), g.signals.end(), static_cast<int>(b)) != g.signals.end() &&
              g.node->try_add_ref()) {
            hit.push_back(g.node);
          }
        }
        // Unregistered before they are cancelled: whoever sees a context done
        // (and calls its stop) finds the previous handlers back already.
        for (detail::context_node* n : hit) remove_locked(n);
      }
      // Cancel outside mu_: cancellation unregisters (on_cancel, a no-op by
      // now), which locks it.
      for (detail::context_node* n : hit) {
        n->cancel(errc::canceled);
        detail::ref_counted::release(n);
      }
    }
  }

  std::mutex mu_;
  std::vector<reg> regs_;
  std::map<int, int> counts_;
  std::map<int, struct sigaction> saved_;
  std::thread thread_;
  int read_fd_ = -1;
};

void unregister(detail::context_node* n) noexcept { signal_hub::get().remove(n); }

}  // namespace

context_with_cancel signal_context(const context& parent, std::initializer_list<int> signals) {
  std::vector<int> sigs(signals);
  if (sigs.empty()) throw std::invalid_argument("sluice::signal_context: no signals given");
  for (int s : sigs) {
    if (s <= 0 || s >= NSIG || s == SIGKILL || s == SIGSTOP) {
      throw std::invalid_argument("sluice::signal_context: cannot catch signal " +
                                  std::to_string(s));
    }
  }
  auto n = detail::ref_ptr<detail::context_node>::adopt(
      detail::context_node::make_cancel(parent.node(), std::nullopt));
  n->on_cancel = &unregister;
  if (!n->err()) signal_hub::get().add(n.get(), sigs);
  // A parent cancelled between make_cancel and add: on_cancel ran before add.
  if (n->err()) signal_hub::get().remove(n.get());
  return {context(n), cancel_func(n)};
}

}  // namespace sluice
