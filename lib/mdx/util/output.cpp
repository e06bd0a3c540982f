#include "mdx/util/output.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <functional>

#include "mdx/util/error.h"
#include "mdx/util/signal.h"

namespace mdx {

namespace {
std::string fmt_clash(const std::string& a, const std::string& a_role, const std::string& b, const std::string& b_role,
                      const std::string& why) {
  std::string s = "'" + a + "' (" + a_role + ") is also '" + b + "' (" + b_role + "); " + why;
  if (a == b) s = "'" + a + "' is both " + a_role + " and " + b_role + "; " + why;
  return s;
}
// An output must be a regular file (or not exist yet) in an existing, writable directory: a
// directory, a device (-o /dev/null would be replaced by a file) or a FIFO is refused.
void check_writable(const std::string& path, const std::string& role) {
  const auto slash = path.find_last_of('/');
  const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
  if (slash != std::string::npos && slash + 1 == path.size())
    throw Error("output '" + path + "' (" + role + ") names a directory, not a file");
  struct stat st;
  if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    throw Error("output '" + path + "' (" + role + ") is " +
                (S_ISDIR(st.st_mode)   ? "a directory"
                 : S_ISCHR(st.st_mode) ? "a character device"
                 : S_ISBLK(st.st_mode) ? "a block device"
                 : S_ISFIFO(st.st_mode) ? "a FIFO"
                                        : "not a regular file") +
                "; mdx writes regular files only");
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    throw Error("cannot write '" + path + "': directory '" + dir + "' does not exist");
  if (access(dir.c_str(), W_OK) != 0)
    throw Error("cannot write '" + path + "': directory '" + dir + "' is not writable");
}
}  // namespace

bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (stat(a.c_str(), &sa) != 0 || stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

std::string lowercase_extension(const std::string& path) {
  auto slash = path.find_last_of('/');
  auto dot = path.find_last_of('.');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash)) return "";
  std::string ext = path.substr(dot);
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext;
}

FilePlan& FilePlan::read(const std::string& path, const std::string& role) {
  if (!path.empty()) reads_.emplace_back(path, role);
  return *this;
}

FilePlan& FilePlan::read(const std::vector<std::string>& paths, const std::string& role) {
  for (const auto& p : paths) read(p, role);
  return *this;
}

FilePlan& FilePlan::write(const std::string& path, const std::string& role) {
  if (!path.empty()) writes_.emplace_back(path, role);
  return *this;
}

void FilePlan::check() const {
  auto same = [](const std::string& a, const std::string& b) { return a == b || same_file(a, b); };
  for (size_t i = 0; i < writes_.size(); ++i) {
    const auto& [out, out_role] = writes_[i];
    for (const auto& [in, in_role] : reads_)
      if (same(in, out))
        throw Error(fmt_clash(out, out_role, in, in_role, "refusing to overwrite an input"));
    for (size_t j = 0; j < i; ++j)
      if (same(writes_[j].first, out))
        throw Error(fmt_clash(out, out_role, writes_[j].first, writes_[j].second, "one would be lost"));
    check_writable(out, out_role);
  }
}

AtomicOutput::AtomicOutput(std::string path, const std::vector<std::string>& inputs) : path_(std::move(path)) {
  if (path_.empty()) throw UsageError("an output file name is required (-o)");
  for (const auto& in : inputs)
    if (same_file(in, path_) || in == path_)
      throw Error("output '" + path_ + "' is also an input; refusing to overwrite an input");
  auto slash = path_.find_last_of('/');
  std::string base = slash == std::string::npos ? path_ : path_.substr(slash + 1);
  check_writable(path_, "the output");
  // A name near the 255-byte limit keeps its first 180 bytes and a hash in the temporary name.
  if (base.size() > 200) base = base.substr(0, 180) + "~" + std::to_string(std::hash<std::string>()(base) % 1000000007);
  temp_ = (slash == std::string::npos ? std::string() : path_.substr(0, slash + 1)) + "." + base + ".tmp" +
          std::to_string(getpid());
}

AtomicOutput::~AtomicOutput() {
  if (!committed_) ::unlink(temp_.c_str());
}

void AtomicOutput::commit(bool despite_signal) {
  if (!despite_signal) check_interrupt();  // an interrupted run leaves no output under the final name
  if (std::rename(temp_.c_str(), path_.c_str()) != 0)
    throw Error("cannot rename '" + temp_ + "' to '" + path_ + "': " + std::strerror(errno));
  committed_ = true;
}

}  // namespace mdx
