// Outputs are written under a temporary name beside the final one and renamed when complete, so a
// failed or killed run never leaves a truncated file under the final name, and never clobbers an
// input.
#pragma once
#include <string>
#include <utility>
#include <vector>

namespace mdx {

class AtomicOutput {
 public:
  // Checks that `path` names none of `inputs` and that its directory is writable.
  AtomicOutput(std::string path, const std::vector<std::string>& inputs = {});
  ~AtomicOutput();  // removes the temporary file unless committed
  AtomicOutput(const AtomicOutput&) = delete;
  AtomicOutput& operator=(const AtomicOutput&) = delete;

  const std::string& temp_path() const { return temp_; }
  const std::string& path() const { return path_; }
  // rename(2): atomic on one file system. Refuses once SIGINT/SIGTERM arrived, unless the output
  // is complete state saved because of the signal (mdx-train's checkpoint).
  void commit(bool despite_signal = false);

 private:
  std::string path_, temp_;
  bool committed_ = false;
};

// Every file a run reads and every file it writes (side files included), known to one check made
// before any work starts: an output that is also an input (by name, or as the same file under
// another name) or two outputs that are one file are refused, so that no input is ever overwritten
// and no output is lost to another.
class FilePlan {
 public:
  // `role` names the file in messages ("--tokenizer", "the metrics file"); empty paths are ignored.
  FilePlan& read(const std::string& path, const std::string& role = "an input");
  FilePlan& read(const std::vector<std::string>& paths, const std::string& role = "an input");
  FilePlan& write(const std::string& path, const std::string& role = "the output");
  // Throws Error naming both roles on the first clash.
  void check() const;

 private:
  std::vector<std::pair<std::string, std::string>> reads_, writes_;
};

// True when a and b name the same existing file (same device and inode).
bool same_file(const std::string& a, const std::string& b);
std::string lowercase_extension(const std::string& path);  // ".h5", ".png", "" (lowercase)

}  // namespace mdx
