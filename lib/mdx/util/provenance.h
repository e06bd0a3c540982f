// What every output records about how it was made (SPEC "Conventions"): tool, version and commit,
// the full command line, the effective options, seed, LibTorch version, device, input files, and
// the `history` of the inputs with this step appended as one more line.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace mdx {

const char* version();     // project version (generated)
const char* git_commit();  // git describe of the source tree at build time (generated)
std::string libtorch_version();

struct Provenance {
  std::string tool;       // mdx-tokenize
  std::string command;    // the command line, shell-quoted
  std::string options;    // effective options as TOML (defaults included)
  std::string device;     // the device the tool ran on
  std::string precision;  // fp32 | bf16: how its model computed (--precision resolved)
  std::string created;    // UTC time, ISO 8601
  uint64_t seed = 0;
  std::vector<std::string> inputs;
  std::vector<std::string> history;  // inherited lines, oldest first, duplicates removed

  // Records an input file and the history it carries.
  void add_input(const std::string& path, const std::vector<std::string>& input_history = {});
  // Adds history lines not already present, keeping their order.
  void merge_history(const std::vector<std::string>& lines);
  // This step's history line: "<created> <tool> <version> (<commit>): <command>".
  std::string line() const;
  // history + line(), newline-separated: the value of the `history` attribute.
  std::string full_history() const;
  // Key/value pairs, in a fixed order: the HDF5 attributes / PNG tEXt chunks.
  std::vector<std::pair<std::string, std::string>> fields() const;
};

std::string shell_quote(const std::string& arg);
std::string utc_now_iso8601();

}  // namespace mdx
