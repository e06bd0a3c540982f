#include "mdx/model/config.h"

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cmath>

#include "mdx/corrupt/schedule.h"
#include "mdx/util/error.h"

#include <cerrno>
#include <cstdlib>

namespace mdx {

void ModelConfig::add_to(CLI::App& app) {
  app.add_option("--model", preset, "size preset: tiny (192 wide, 6+2 blocks), s (384, 12+4), b (768, 12+4), "
                                    "l (1024, 24+8)")
      ->capture_default_str();
  app.add_option("--patch", patch, "patch size p: a token is p x p x C pixels")->capture_default_str();
  app.add_option("--dim", dim, "encoder width (0: the preset's)")->capture_default_str();
  app.add_option("--depth", depth, "encoder blocks (0: the preset's)")->capture_default_str();
  app.add_option("--heads", heads, "encoder attention heads (0: the preset's)")->capture_default_str();
  app.add_option("--decoder-dim", decoder_dim, "decoder width (0: as the encoder)")->capture_default_str();
  app.add_option("--decoder-depth", decoder_depth, "decoder blocks (0: the preset's)")->capture_default_str();
  app.add_option("--decoder-heads", decoder_heads,
                 "decoder attention heads (0: as the encoder; one per 64 channels when the widths differ)")
      ->capture_default_str();
  app.add_option("--mlp-ratio", mlp_ratio, "MLP hidden width / block width")->capture_default_str();
  app.add_option("--cls-tokens", cls_tokens, "CLS tokens of the encoder")->capture_default_str();
  app.add_option("--dropout", dropout,
                 "dropout in the token embedding and the blocks (-1: the objective's, 0.1 for mage as MAGE's, else 0)")
      ->capture_default_str();
  app.add_option("--positions", positions, "auto (learned for umd, else sincos) | sincos | learned")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "sincos", "learned"}));
  app.add_option("--condition", condition,
                 "auto (shared for umd, else separate) | separate | shared: one time/label vector for encoder, "
                 "decoder and final modulation")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "separate", "shared"}));
}

void ModelConfig::resolve() {
  struct Size {
    int64_t dim, depth, heads, decoder_depth;
  };
  static const std::map<std::string, Size> presets = {
      {"tiny", {192, 6, 3, 2}}, {"s", {384, 12, 6, 4}}, {"b", {768, 12, 12, 4}}, {"l", {1024, 24, 16, 8}}};
  auto it = presets.find(preset);
  if (it == presets.end()) throw UsageError("--model must be tiny, s, b or l, got '" + preset + "'");
  const Size& s = it->second;
  if (dim == 0) dim = s.dim;
  if (depth == 0) depth = s.depth;
  if (heads == 0) heads = s.heads;
  if (decoder_dim == 0) decoder_dim = dim;
  if (decoder_depth == 0) decoder_depth = s.decoder_depth;
  if (decoder_heads == 0) decoder_heads = decoder_dim == dim ? heads : std::max<int64_t>(1, decoder_dim / 64);
  for (const auto& [name, v] : {std::pair<const char*, int64_t>{"--dim", dim}, {"--heads", heads},
                                {"--decoder-dim", decoder_dim}, {"--decoder-heads", decoder_heads}})
    if (v < 1) throw UsageError(fmt::format("{} must be positive, got {}", name, v));
  if (dim % heads != 0 || decoder_dim % decoder_heads != 0)
    throw UsageError(fmt::format("widths must be multiples of the head counts ({} / {}, {} / {})", dim, heads,
                                 decoder_dim, decoder_heads));
  if (dim % 4 != 0 || decoder_dim % 4 != 0)
    throw UsageError(fmt::format("--dim ({}) and --decoder-dim ({}) must be multiples of 4 (2-D sin-cos positions)",
                                 dim, decoder_dim));
  for (const auto& [name, v] : {std::pair<const char*, int64_t>{"--patch", patch}, {"--depth", depth},
                                {"--decoder-depth", decoder_depth}, {"--cls-tokens", cls_tokens}})
    if (v < 1) throw UsageError(fmt::format("{} must be positive, got {}", name, v));
  if (!(mlp_ratio > 0) || !std::isfinite(mlp_ratio))
    throw UsageError(fmt::format("--mlp-ratio must be positive, got {}", mlp_ratio));
  if (dropout < 0) dropout = 0;  // callers that know the objective decide first
  if (!(dropout < 1) || !std::isfinite(dropout))
    throw UsageError(fmt::format("--dropout must lie in [0, 1), got {}", dropout));
  if (vocabulary < 0) throw Error(fmt::format("a token vocabulary of {} codes", vocabulary));
  if (positions == "auto") positions = "sincos";  // callers that know the objective decide first
  if (condition == "auto") condition = "separate";
  if (shared_condition() && decoder_dim != dim)
    throw UsageError(fmt::format("--condition shared needs a decoder as wide as the encoder (--decoder-dim {} vs "
                                 "--dim {}), as UMD's", decoder_dim, dim));
  if (height > 0 && grid_h == 0) {  // a pixel token space of --patch (checkpoints before tokenizers)
    if (height % patch != 0 || width % patch != 0)
      throw Error(fmt::format("patch size {} does not divide the image size {}x{}", patch, height, width));
    grid_h = height / patch, grid_w = width / patch, values = patch * patch * channels;
  }
}

void ModelConfig::set_geometry(const TokenGeometry& g) {
  height = g.height, width = g.width, channels = g.channels;
  grid_h = g.grid_h, grid_w = g.grid_w, values = g.values, vocabulary = g.vocabulary;
  patch = g.cell_h();
}

TokenGeometry ModelConfig::geometry() const {
  TokenGeometry g;
  g.height = height, g.width = width, g.channels = channels;
  g.grid_h = grid_h, g.grid_w = grid_w, g.values = values, g.vocabulary = vocabulary;
  return g;
}

std::map<std::string, std::string> ModelConfig::to_map() const {
  std::map<std::string, std::string> m = {{"preset", preset},
          {"height", std::to_string(height)},
          {"width", std::to_string(width)},
          {"channels", std::to_string(channels)},
          {"patch", std::to_string(patch)},
          {"grid_h", std::to_string(grid_h)},
          {"grid_w", std::to_string(grid_w)},
          {"token_dim", std::to_string(values)},
          {"dim", std::to_string(dim)},
          {"depth", std::to_string(depth)},
          {"heads", std::to_string(heads)},
          {"decoder_dim", std::to_string(decoder_dim)},
          {"decoder_depth", std::to_string(decoder_depth)},
          {"decoder_heads", std::to_string(decoder_heads)},
          {"mlp_ratio", fmt::format("{}", mlp_ratio)},
          {"cls_tokens", std::to_string(cls_tokens)},
          {"num_classes", std::to_string(num_classes)},
          {"timesteps", std::to_string(timesteps)},
          {"positions", positions},
          {"condition", condition}};
  // Written only where they differ from what a checkpoint without them meant (continuous, no
  // dropout), so that older checkpoints and their identities read the same.
  if (vocabulary > 0) m["vocabulary"] = std::to_string(vocabulary);
  if (dropout > 0) m["dropout"] = fmt::format("{}", dropout);
  return m;
}

ModelConfig ModelConfig::from_map(const std::map<std::string, std::string>& m) {
  auto get = [&](const char* k) -> const std::string& {
    auto it = m.find(k);
    if (it == m.end()) throw Error(std::string("checkpoint configuration lacks '") + k + "'");
    return it->second;
  };
  // Counts bounded before anything is built from them: a corrupt or hostile configuration
  // must not allocate a model of its choosing.
  auto num = [&](const char* k, int64_t lo = 0, int64_t hi = 1 << 20) {
    const std::string& v = get(k);
    char* end = nullptr;
    errno = 0;
    const long long n = std::strtoll(v.c_str(), &end, 10);
    if (v.empty() || *end != '\0' || errno != 0 || n < lo || n > hi)
      throw Error(fmt::format("checkpoint configuration: '{}' is '{}', not a count in [{}, {}]", k, v, lo, hi));
    return static_cast<int64_t>(n);
  };
  ModelConfig c;
  c.preset = get("preset");
  const int64_t side = 1 << 16, width = 1 << 16, blocks = 1024;
  c.height = num("height", 1, side), c.width = num("width", 1, side), c.channels = num("channels", 1, 4096);
  c.patch = num("patch", 1, side);
  c.dim = num("dim", 1, width), c.depth = num("depth", 1, blocks), c.heads = num("heads", 1, width);
  c.decoder_dim = num("decoder_dim", 1, width), c.decoder_depth = num("decoder_depth", 1, blocks);
  c.decoder_heads = num("decoder_heads", 1, width);
  {
    const std::string& v = get("mlp_ratio");
    char* end = nullptr;
    c.mlp_ratio = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(c.mlp_ratio > 0 && c.mlp_ratio <= 64))
      throw Error(fmt::format("checkpoint configuration: 'mlp_ratio' is '{}', not a number in (0, 64]", v));
  }
  c.cls_tokens = num("cls_tokens", 1, 1024), c.num_classes = num("num_classes", 0, 1 << 20);
  c.timesteps = num("timesteps", 1, kMaxTimesteps);
  // Checkpoints before UMD's form have neither key: sin-cos positions, one conditioning per side.
  c.positions = m.count("positions") ? m.at("positions") : "sincos";
  c.condition = m.count("condition") ? m.at("condition") : "separate";
  if (c.positions != "sincos" && c.positions != "learned")
    throw Error(fmt::format("checkpoint configuration: 'positions' is '{}', not sincos or learned", c.positions));
  if (c.condition != "separate" && c.condition != "shared")
    throw Error(fmt::format("checkpoint configuration: 'condition' is '{}', not separate or shared", c.condition));
  if (m.count("vocabulary")) c.vocabulary = num("vocabulary", 1, 1 << 24);
  if (m.count("dropout")) {
    const std::string& v = m.at("dropout");
    char* end = nullptr;
    c.dropout = std::strtod(v.c_str(), &end);
    if (v.empty() || *end != '\0' || !(c.dropout >= 0 && c.dropout < 1))
      throw Error(fmt::format("checkpoint configuration: 'dropout' is '{}', not a number in [0, 1)", v));
  }
  if (m.count("grid_h"))
    c.grid_h = num("grid_h", 1, side), c.grid_w = num("grid_w", 1, side), c.values = num("token_dim", 1, 1 << 20);
  c.resolve();
  return c;
}

}  // namespace mdx
