// Progress on stderr: a live bar on a terminal; on a file (a Slurm log) a timestamped line every
// ~10% or every minute, whichever comes first; nothing with --quiet.
#pragma once
#include <chrono>
#include <cstdint>
#include <string>

namespace mdx {

class Progress {
 public:
  // With `poll_signals`, advance() throws Interrupted once SIGINT/SIGTERM arrived; a loop that
  // handles signals itself (mdx-train checkpoints first) passes false.
  Progress(std::string what, int64_t total, std::string unit = "items", bool poll_signals = true);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void advance(int64_t n = 1);
  void finish();                // final line with the rate

 private:
  void draw(bool final);
  std::string what_, unit_;
  int64_t total_, done_ = 0, drawn_ = -1;
  bool tty_, enabled_, poll_signals_, finished_ = false;
  int last_decile_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace mdx
