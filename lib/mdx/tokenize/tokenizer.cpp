#include "mdx/tokenize/tokenizer.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <cstring>
#include <fstream>

#include "mdx/io/hdf5.h"
#include "mdx/tokenize/learned.h"
#include "mdx/tokenize/patches.h"
#include "mdx/tokenize/pca.h"
#include "mdx/util/error.h"
#include "mdx/util/sha256.h"

namespace mdx {

namespace {

struct TokenizerEntry {
  const char* kind;
  std::function<std::shared_ptr<const Tokenizer>(hid_t, const std::string&)> load;
};

// Every tokenizer kind, by the `kind` attribute its files carry.
const std::vector<TokenizerEntry>& tokenizer_registry() {
  static const std::vector<TokenizerEntry> entries = {
      {"pixels", PixelTokenizer::load},
      {"pca", [](hid_t g, const std::string& w) -> std::shared_ptr<const Tokenizer> {
         return PcaTokenizer::load(g, w);
       }},
      {"vae", VaeTokenizer::load},
      {"vq", VqTokenizer::load},
      {"torchscript", TorchScriptTokenizer::load},
  };
  return entries;
}

}  // namespace

std::string Tokenizer::identity() const {
  Sha256 sha;
  const std::string k = kind();
  sha.update(k);
  hash_contents([&](const void* data, size_t bytes) { sha.update(data, bytes); });
  return k + ":" + sha.hex();
}

std::pair<at::Tensor, at::Tensor> Tokenizer::moments(const at::Tensor&) const {
  throw Error("the " + kind() + " tokenizer has no posterior (a VAE's mean and log-variance)");
}

PixelTokenizer::PixelTokenizer(int64_t patch) : patch_(patch) {
  if (patch < 1) throw UsageError(fmt::format("the patch size must be at least 1, got {}", patch));
}

std::string PixelTokenizer::describe() const { return fmt::format("pixels (patch {})", patch_); }

TokenGeometry PixelTokenizer::geometry(int64_t height, int64_t width, int64_t channels) const {
  check_patch(patch_, height, width);
  TokenGeometry g;
  g.height = height, g.width = width, g.channels = channels;
  g.grid_h = height / patch_, g.grid_w = width / patch_;
  g.values = patch_ * patch_ * channels;
  return g;
}

at::Tensor PixelTokenizer::encode(const at::Tensor& images) const { return encode_as(images, at::kFloat); }

at::Tensor PixelTokenizer::encode_as(const at::Tensor& images, at::ScalarType type) const {
  return patchify(to_unit_range(images, type), patch_);
}

at::Tensor PixelTokenizer::decode(const at::Tensor& tokens, const TokenGeometry& g) const {
  return unpatchify(tokens, patch_, g.height, g.width, g.channels);
}

void PixelTokenizer::save(hid_t group) const {
  h5::write_attr(group, "kind", kind());
  h5::write_attr(group, "patch", patch_);
  h5::write_attr(group, "pixel_scale", std::string("[-1, 1]: x / 127.5 - 1"));
  h5::write_attr(group, "patch_layout", std::string("row-major (y, x, channel) within a p x p patch"));
}

std::shared_ptr<const Tokenizer> PixelTokenizer::load(hid_t group, const std::string& where) {
  if (!h5::has_attr(group, "patch")) throw Error(where + ": a pixel tokenizer without the attribute 'patch'");
  const int64_t p = h5::read_attr_int(group, "patch");
  if (p < 1 || p > 4096) throw Error(fmt::format("{}: patch size {} is out of range", where, p));
  return std::make_shared<PixelTokenizer>(p);
}

void PixelTokenizer::hash_contents(const std::function<void(const void*, size_t)>& add) const {
  add(&patch_, sizeof patch_);
}

std::shared_ptr<const Tokenizer> load_tokenizer(hid_t group, const std::string& where) {
  std::string kind;
  if (h5::has_attr(group, "kind")) kind = h5::read_attr_string(group, "kind");
  else if (h5::has(group, "components") && h5::has_attr(group, "patch")) kind = "pca";  // before kinds
  else if (h5::has(group, "tokenizer") && h5::has(group, "config")) {
    // A checkpoint (mdx-vae-fit's, mdx-vq-fit's, mdx-train's): the token space it records.
    h5::Handle g(H5Gopen2(group, "tokenizer", H5P_DEFAULT));
    if (g.get() < 0) throw Error(where + ": cannot open its 'tokenizer' group");
    return load_tokenizer(g, "the tokenizer of " + where);
  } else
    throw Error(where + " is not a tokenizer (no 'kind' attribute; mdx-pca-fit, mdx-vae-fit and mdx-vq-fit write one)");
  for (const auto& e : tokenizer_registry())
    if (kind == e.kind) return e.load(group, where);
  throw Error(fmt::format("{}: unknown tokenizer kind '{}' (known: {})", where, kind, tokenizer_kinds()));
}

std::shared_ptr<const Tokenizer> load_tokenizer_file(const std::string& path) {
  // torch.jit.save writes a ZIP archive; HDF5 files start with their own signature.
  char magic[4] = {};
  {
    std::ifstream in(path, std::ios::binary);
    in.read(magic, 4);
  }
  if (std::memcmp(magic, "PK\x03\x04", 4) == 0) return TorchScriptTokenizer::from_file(path);
  h5::Handle f = h5::open_file(path);
  return load_tokenizer(f, "'" + path + "'");
}

void save_tokenizer(hid_t file, const std::string& name, const Tokenizer& tok) {
  h5::Handle g(H5Gcreate2(file, name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
  if (g.get() < 0) throw Error("cannot create the group '" + name + "'");
  tok.save(g);
  h5::write_attr(g, "identity", tok.identity());
}

std::string tokenizer_kinds() {
  std::string s;
  for (const auto& e : tokenizer_registry()) s += (s.empty() ? "" : ", ") + std::string(e.kind);
  return s;
}

}  // namespace mdx
