// The frame every mdx tool shares: CLI11 parsing with the common options, program-named logs,
// exit statuses (0 ok, 1 runtime error, 2 usage error, 128+N on signal N), signal handling, and
// the provenance that each output records.
#pragma once
#include <CLI/CLI.hpp>

#include <cstdint>
#include <functional>
#include <string>

#include "mdx/util/provenance.h"

namespace mdx {

struct CommonOptions {
  uint64_t seed = 0;
  std::string device = "auto";  // auto | cpu | cuda | cuda:N
  int threads = 0;              // 0: LibTorch's default
  std::string precision = "auto";  // auto | fp32 | bf16 (default: $MDX_PRECISION, else auto)
  bool quiet = false;
  void add_to(CLI::App& app);
};

// "I/N" for Slurm array jobs: part I (0-based) of N. Parsed from --shard.
struct Shard {
  int64_t index = 0, count = 1;
  // The half-open range [begin, end) of this shard over n items (contiguous blocks, in order, so
  // that the shards read in index order concatenate to the whole).
  std::pair<int64_t, int64_t> range(int64_t n) const;
};
Shard parse_shard(const std::string& text);  // throws UsageError

class Tool {
 public:
  // `usage` is what --help prints above the options: what the tool does, and a worked example.
  Tool(std::string name, std::string usage);
  CLI::App& app() { return app_; }
  // The tool computes on the CPU whatever --device says (the data stages); provenance says so.
  void cpu_only() { cpu_only_ = true; }
  const CommonOptions& common() const { return common_; }

  // Parses argv, sets up logging, threads and signals, runs body(provenance), maps exceptions to
  // exit statuses. The provenance has tool, command, options, seed, device and time filled in.
  int run(int argc, char** argv, const std::function<void(Provenance&)>& body);

 private:
  // Prints "name: error: what" (made one line), and the --help hint for a usage error (2).
  int report(const std::string& what, int status) const;

  std::string name_;
  CLI::App app_;
  CommonOptions common_;
  bool cpu_only_ = false;
};

// True when this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16 in /proc/cpuinfo).
bool cpu_has_bf16();
// --precision resolved on `device` ("cpu", "cuda", ...): fp32 or bf16. auto is bf16 on CUDA and on
// CPUs with bf16 arithmetic, fp32 elsewhere; bf16 asked for on a CPU without it runs (emulated,
// slower) with a warning.
std::string resolve_precision(const std::string& precision, const std::string& device);

// LibTorch's intra-op threads and, when the BLAS is OpenBLAS, its threads too.
void set_cpu_threads(int threads);

// The device string resolved: "auto" becomes "cuda" when LibTorch sees a GPU, else "cpu".
std::string resolve_device(const std::string& device);

}  // namespace mdx
