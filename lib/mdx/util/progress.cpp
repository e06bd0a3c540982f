#include "mdx/util/progress.h"

#include <unistd.h>

#include <cstdio>
#include <ctime>

#include "mdx/util/log.h"
#include "mdx/util/signal.h"

namespace mdx {
namespace {

// "0.42", "3.1", "170": a training run at under one step per second must not read "0 steps/s".
std::string format_rate(double rate) {
  char text[32];
  std::snprintf(text, sizeof text, rate >= 100 ? "%.0f" : rate >= 10 ? "%.1f" : "%.2f", rate);
  return text;
}

}  // namespace

Progress::Progress(std::string what, int64_t total, std::string unit, bool poll_signals)
    : what_(std::move(what)), unit_(std::move(unit)), total_(total),
      tty_(isatty(STDERR_FILENO) == 1), enabled_(!quiet()), poll_signals_(poll_signals),
      start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() {
  if (tty_ && enabled_ && !finished_ && done_ > 0) std::fputc('\n', stderr);
}

void Progress::advance(int64_t n) {
  if (poll_signals_) check_interrupt();
  done_ += n;
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  double since = std::chrono::duration<double>(now - last_draw_).count();
  if (tty_) {
    if (since >= 0.1 || done_ >= total_) draw(false);
  } else {
    int decile = total_ > 0 ? static_cast<int>(10 * done_ / total_) : 0;
    if (decile > last_decile_ || since >= 60.0) {
      last_decile_ = decile;
      draw(false);
    }
  }
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (enabled_ && (tty_ || drawn_ != done_)) draw(true);
}

void Progress::draw(bool final) {
  auto now = std::chrono::steady_clock::now();
  last_draw_ = now;
  drawn_ = done_;
  double elapsed = std::chrono::duration<double>(now - start_).count();
  double rate = elapsed > 0 ? done_ / elapsed : 0.0;
  double frac = total_ > 0 ? static_cast<double>(done_) / total_ : 1.0;
  if (tty_) {
    const int width = 30;
    int fill = static_cast<int>(frac * width + 0.5);
    std::string bar(fill, '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r%s: %s [%s] %3.0f%% %lld/%lld %s %s/s%s", program_name().c_str(), what_.c_str(),
                 bar.c_str(), 100 * frac, static_cast<long long>(done_), static_cast<long long>(total_),
                 format_rate(rate).c_str(), unit_.c_str(), final ? "\n" : "");
  } else {
    char stamp[32];
    std::time_t t = std::time(nullptr);
    std::strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", std::localtime(&t));
    std::fprintf(stderr, "%s: %s %s %3.0f%% %lld/%lld %s, %s %s/s, %.1f s\n", program_name().c_str(), stamp,
                 what_.c_str(), 100 * frac, static_cast<long long>(done_), static_cast<long long>(total_),
                 unit_.c_str(), format_rate(rate).c_str(), unit_.c_str(), elapsed);
  }
  std::fflush(stderr);
}

}  // namespace mdx
