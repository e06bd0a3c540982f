#include "mdx/util/signal.h"

#include <csignal>
#include <cstring>
#include <string>

#include "mdx/util/error.h"

namespace mdx {
namespace {
volatile std::sig_atomic_t g_signal = 0;

void on_signal(int sig) {
  g_signal = sig;
}
}  // namespace

Interrupted::Interrupted(int sig)
    : std::runtime_error(std::string("interrupted by ") + (sig == SIGINT    ? "SIGINT"
                                                           : sig == SIGTERM ? "SIGTERM"
                                                           : sig == SIGHUP  ? "SIGHUP"
                                                                            : "a signal")),
      signal_(sig) {}

void install_signal_handlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESETHAND;  // a second signal kills at once: the user insists
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGHUP, &sa, nullptr);  // the terminal or ssh session that started the run went away
  // A closed standard output (`| head`) is a write error the tool reports, not a silent death.
  std::signal(SIGPIPE, SIG_IGN);
}

int pending_signal() { return g_signal; }

void check_interrupt() {
  if (g_signal != 0) throw Interrupted(g_signal);
}

}  // namespace mdx
