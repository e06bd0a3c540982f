// Outputs are written under a temporary name beside the final one and renamed when complete, so a
// failed or killed run never leaves a truncated file under the final name, and never clobbers an
// input.
#pragma once
#include <string>
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

// True when a and b name the same existing file (same device and inode).
bool same_file(const std::string& a, const std::string& b);
std::string lowercase_extension(const std::string& path);  // ".h5", ".png", "" (lowercase)

}  // namespace mdx
