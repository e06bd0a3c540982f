#include "mdx/util/provenance.h"

#include <torch/version.h>

#include <algorithm>
#include <ctime>

namespace mdx {

std::string libtorch_version() { return TORCH_VERSION; }

std::string shell_quote(const std::string& arg) {
  if (!arg.empty() && arg.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                                            "-_./=:,+@%") == std::string::npos)
    return arg;
  std::string out = "'";
  for (char c : arg) out += (c == '\'') ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string utc_now_iso8601() {
  char buf[32];
  std::time_t t = std::time(nullptr);
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&t));
  return buf;
}

void Provenance::add_input(const std::string& path, const std::vector<std::string>& input_history) {
  inputs.push_back(path);
  merge_history(input_history);
}

void Provenance::merge_history(const std::vector<std::string>& lines) {
  for (const auto& l : lines)
    if (!l.empty() && std::find(history.begin(), history.end(), l) == history.end()) history.push_back(l);
}

std::string Provenance::line() const {
  return created + " " + tool + " " + version() + " (" + git_commit() + "): " + command;
}

std::string Provenance::full_history() const {
  std::string out;
  for (const auto& l : history) out += l + "\n";
  return out + line();
}

std::vector<std::pair<std::string, std::string>> Provenance::fields() const {
  std::string in;
  for (size_t i = 0; i < inputs.size(); ++i) in += (i ? "\n" : "") + inputs[i];
  return {{"mdx_tool", tool},
          {"mdx_version", std::string(version()) + " (" + git_commit() + ")"},
          {"mdx_command", command},
          {"mdx_options", options},
          {"mdx_seed", std::to_string(seed)},
          {"mdx_libtorch", libtorch_version()},
          {"mdx_device", device},
          {"mdx_precision", precision},
          {"mdx_created", created},
          {"mdx_inputs", in},
          {"history", full_history()}};
}

}  // namespace mdx
