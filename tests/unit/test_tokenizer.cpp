// Tokenizers (round trips, identity, files and their kinds) and the objective registry's
// configuration round trip.
#include <doctest/doctest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "mdx/corrupt/objective.h"
#include "mdx/eval/sampler.h"
#include "mdx/io/hdf5.h"
#include "mdx/tokenize/patches.h"
#include "mdx/tokenize/pca.h"
#include "mdx/tokenize/tokenizer.h"
#include "mdx/util/error.h"
#include "mdx/util/sha256.h"
#include "mdx/util/torch_compat.h"

using namespace mdx;

namespace {

std::string temp_file(const std::string& name) {
  return "/tmp/mdx-unit-tokenizer-" + std::to_string(getpid()) + "-" + name + ".h5";
}

at::Tensor random_images(int64_t n, int64_t h, int64_t w, int64_t c, uint64_t seed) {
  auto g = compat::cpu_generator(seed);
  return at::randint(0, 256, {n, h, w, c}, g, at::TensorOptions().dtype(at::kLong)).to(at::kByte);
}

// A PCA at full dimension fitted on the patches of `images`.
PcaTokenizer full_pca(const at::Tensor& images, int64_t patch) {
  const int64_t D = patch * patch * images.size(3);
  CovarianceAccumulator acc(D);
  acc.add(PixelTokenizer(patch).encode_as(images, at::kDouble).reshape({-1, D}));
  return fit_pca(acc, true, patch, images.size(3), D, 1.0);
}

}  // namespace

TEST_CASE("pixel tokenizer: geometry, MAE's patch order, exact round trip") {
  PixelTokenizer tok(4);
  TokenGeometry g = tok.geometry(28, 12, 3);
  CHECK(g.grid_h == 7);
  CHECK(g.grid_w == 3);
  CHECK(g.values == 48);
  CHECK(g.tokens() == 21);
  CHECK(g.cell_h() == 4);
  CHECK_FALSE(g.discrete());
  at::Tensor images = random_images(5, 28, 12, 3, 1);
  at::Tensor x = tok.encode(images);
  REQUIRE(x.sizes() == at::IntArrayRef({5, 21, 48}));
  // Token (1, 2) of image 3, value (y 1, x 2, channel 0) is pixel (4 + 1, 8 + 2, 0).
  CHECK(x[3][1 * 3 + 2][(1 * 4 + 2) * 3].item<float>() ==
        doctest::Approx(images[3][5][10][0].item<int64_t>() / 127.5 - 1.0));
  CHECK(to_uint8(tok.decode(x, g)).equal(images));
  CHECK_THROWS_AS(tok.geometry(30, 12, 3), Error);  // 4 does not divide 30
  CHECK_THROWS_AS(PixelTokenizer(0), UsageError);
}

TEST_CASE("PCA tokenizer at full dimension: the round trip restores the image to 1e-6") {
  at::Tensor images = random_images(64, 8, 8, 1, 2);
  PcaTokenizer pca = full_pca(images, 2);
  REQUIRE(pca.dim == 4);
  TokenGeometry g = pca.geometry(8, 8, 1);
  CHECK(g.values == 4);
  CHECK(g.tokens() == 16);
  at::Tensor z = pca.encode(images);
  CHECK(z.sizes() == at::IntArrayRef({64, 16, 4}));
  at::Tensor back = pca.decode(z, g);
  CHECK((back - to_unit_range(images)).abs().max().item<float>() < 1e-6);
  // At d < D the round trip is the projection on the first d components, not the image.
  pca.dim = 2;
  g = pca.geometry(8, 8, 1);
  CHECK((pca.decode(pca.encode(images), g) - to_unit_range(images)).abs().max().item<float>() > 1e-2);
  CHECK_THROWS_AS(pca.geometry(8, 8, 3), Error);  // fitted on one channel
}

TEST_CASE("tokenizer files: saved with their kind, loaded by it, identity kept and content-bound") {
  at::Tensor images = random_images(32, 8, 8, 1, 3);
  PcaTokenizer pca = full_pca(images, 2);
  pca.dim = 3;
  const std::string path = temp_file("pca");
  {
    h5::Handle f = h5::create_file(path);
    pca.save(f);
    save_tokenizer(f, "pixels", PixelTokenizer(7));
  }
  auto loaded = load_tokenizer_file(path);
  CHECK(loaded->kind() == "pca");
  CHECK(loaded->identity() == pca.identity());
  CHECK(loaded->identity().rfind("pca:", 0) == 0);
  auto back = std::dynamic_pointer_cast<const PcaTokenizer>(loaded);
  REQUIRE(back);
  CHECK(back->dim == 3);
  CHECK(back->components.equal(pca.components));
  {
    h5::Handle f = h5::open_file(path);
    h5::Handle g(H5Gopen2(f, "pixels", H5P_DEFAULT));
    auto px = load_tokenizer(g, "the group");
    CHECK(px->kind() == "pixels");
    CHECK(std::dynamic_pointer_cast<const PixelTokenizer>(px)->patch() == 7);
    CHECK(px->identity() == PixelTokenizer(7).identity());
    CHECK(h5::read_attr_string(g, "identity") == px->identity());
  }
  // The identity follows the contents: one changed component value, another identity.
  PcaTokenizer other = pca;
  other.components = pca.components.clone();
  other.components[0][0] += 1e-12;
  CHECK(other.identity() != pca.identity());
  CHECK(PixelTokenizer(4).identity() != PixelTokenizer(2).identity());
  // SHA-256 itself, against the FIPS 180-2 example.
  CHECK(sha256_bytes("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  std::remove(path.c_str());
}

TEST_CASE("tokenizer files: a PCA file without a kind (before kinds) loads; an unknown kind is an error") {
  at::Tensor images = random_images(16, 4, 4, 1, 4);
  PcaTokenizer pca = full_pca(images, 2);
  const std::string path = temp_file("legacy");
  {
    h5::Handle f = h5::create_file(path);
    pca.save(f);
    H5Adelete(f, "kind");
  }
  CHECK(load_tokenizer_file(path)->kind() == "pca");
  {
    h5::Handle f(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT));
    h5::write_attr(f, "kind", std::string("vq-from-the-future"));
  }
  CHECK_THROWS_WITH_AS(load_tokenizer_file(path), doctest::Contains("unknown tokenizer kind 'vq-from-the-future'"),
                       Error);
  {
    h5::Handle f = h5::create_file(path);
    h5::write_attr(f, "note", std::string("not a tokenizer"));
  }
  CHECK_THROWS_WITH_AS(load_tokenizer_file(path), doctest::Contains("is not a tokenizer"), Error);
  std::remove(path.c_str());
}

TEST_CASE("objective registry: every objective's configuration survives the checkpoint round trip") {
  for (const auto& e : objective_registry()) {
    CAPTURE(e.name);
    ObjectiveSettings s;
    s.schedule = ScheduleKind::LdaeSigma;
    s.steps = 321;
    s.mask_policy = MaskPolicy::LmdPiecewise;
    s.mask_ratio = 0.6;
    // Every objective's own options away from their defaults, through the configuration form.
    std::map<std::string, std::string> own = {{"noisy_mask_ratio", "0.25"}, {"rep_share", "0.125"}, {"norm_pix", "1"}};
    auto params = e.params();
    params->load(own);
    auto a = make_objective(e.name, s, std::move(params));
    const auto config = a->config();
    CHECK(config.at("objective") == e.name);
    CHECK(config.at("timesteps") == "321");
    auto b = objective_from_config(config);
    CHECK(b->name() == e.name);
    CHECK(b->config() == config);
    CHECK(b->settings().steps == 321);
    CHECK(b->settings().mask_policy == MaskPolicy::LmdPiecewise);
    CHECK(b->schedule().kind() == (a->noises() ? ScheduleKind::LdaeSigma : e.schedule));
    for (const auto& [k, v] : own)
      if (config.count(k)) CHECK(config.at(k) == v);
  }
  CHECK(objective_from_config({})->name() == "umd");  // checkpoints before the objective was recorded
  CHECK_THROWS_AS(find_objective("nope"), UsageError);
  CHECK_THROWS_WITH(objective_from_config({{"objective", "umd"}, {"rep_share", "abc"}}),
                    doctest::Contains("rep_share"));
}

TEST_CASE("objective traits: which objectives mask, noise and generate") {
  std::map<std::string, std::string> want = {{"umd", "mn diffusion"}, {"mae", "m- "}, {"ldae", "-n "},
                                             {"dit", "-n diffusion"}, {"mage", "m- maskgit"}};
  for (const auto& e : objective_registry()) {
    auto o = make_objective(e.name, ObjectiveSettings{});
    std::string got = std::string(o->masks() ? "m" : "-") + (o->noises() ? "n" : "-") + " " + o->generator();
    CHECK(got == want.at(e.name));
  }
}

TEST_CASE("classifier-free guidance: u + s (c - u)") {
  at::Tensor c = at::tensor({1.0f, 2.0f}), u = at::tensor({0.5f, -1.0f});
  CHECK(guide(c, u, 1.0).equal(c));
  CHECK(guide(c, u, 0.0).equal(u));
  at::Tensor g = guide(c, u, 1.5);
  CHECK(g[0].item<float>() == doctest::Approx(0.5 + 1.5 * 0.5));
  CHECK(g[1].item<float>() == doctest::Approx(-1.0 + 1.5 * 3.0));
}
