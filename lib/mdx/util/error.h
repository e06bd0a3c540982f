// Errors that reach the user. Tools throw these; the frame in tool.cpp maps them to exit codes.
#pragma once
#include <stdexcept>
#include <string>

namespace mdx {

// A runtime error (bad input, I/O failure): one line, exit status 1.
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& what) : std::runtime_error(what) {}
};

// A usage error found after parsing (an inconsistent combination of options): exit status 2.
class UsageError : public std::runtime_error {
 public:
  explicit UsageError(const std::string& what) : std::runtime_error(what) {}
};

// SIGINT or SIGTERM arrived; the signal number picks the exit status (128 + signal).
class Interrupted : public std::runtime_error {
 public:
  explicit Interrupted(int signal);
  int signal() const { return signal_; }

 private:
  int signal_;
};

}  // namespace mdx

namespace mdx {

// A run stopped by a signal after saving its state (mdx-train): exit status 75 (EX_TEMPFAIL).
class Suspended : public std::runtime_error {
 public:
  explicit Suspended(const std::string& what) : std::runtime_error(what) {}
};

}  // namespace mdx
