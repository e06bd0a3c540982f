// mdx-tokenize as a library function: image files, class folders, IDX files or image tables ->
// one canonical image table.
#pragma once
#include <string>
#include <vector>

#include "mdx/util/provenance.h"

namespace CLI {
class App;
}

namespace mdx {

struct TokenizeOptions {
  std::vector<std::string> inputs;
  std::string output;
  std::string labels;     // IDX labels file (for IDX image input)
  std::vector<std::string> label_names;  // overrides the source's class names
  std::string size;       // "N" or "HxW"; empty: keep the source size
  std::string fit = "crop";
  int channels = 0;       // 0: as the source (IDX 1, tables theirs, files: 1 if gray else 3)
  int64_t limit = 0;      // 0: no limit
  std::string shard;      // "I/N"
  bool skip_bad = false;
  int jobs = 0;           // decoding threads; 0: one per core
  int64_t block = 512;    // images decoded and written per step
  std::string tokenizer;  // also store every image's tokens under this tokenizer

  void add_to(CLI::App& app);
  void validate() const;
};

// Parses "N" or "HxW" (throws UsageError).
std::pair<int64_t, int64_t> parse_size(const std::string& text);

void tokenize(const TokenizeOptions& opt, Provenance& prov);

}  // namespace mdx
