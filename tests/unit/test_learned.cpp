// Learned tokenizers: the KL term and the reparameterization against their closed forms, VQ
// assignment against a brute-force nearest neighbour, one EMA codebook step against a hand
// computation, dead-code restart on a constructed case, k-means on separated clusters, and the
// tokenizer file round trip.
#include <doctest/doctest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>

#include "mdx/io/hdf5.h"
#include "mdx/tokenize/learned.h"
#include "mdx/util/torch_compat.h"

using mdx::CoderConfig;

TEST_CASE("gaussian KL equals the closed form KL(N(mu, s^2) || N(0, 1))") {
  // KL = log(1/s) + (s^2 + mu^2)/2 - 1/2 for each value.
  for (auto [mu, s] : {std::pair{0.0, 1.0}, {1.5, 1.0}, {0.0, 0.5}, {-2.0, 3.0}, {0.3, 0.01}}) {
    at::Tensor m = at::full({1}, mu, at::kDouble), lv = at::full({1}, 2 * std::log(s), at::kDouble);
    const double want = std::log(1 / s) + (s * s + mu * mu) / 2 - 0.5;
    CHECK(mdx::gaussian_kl(m, lv).item<double>() == doctest::Approx(want).epsilon(1e-12));
  }
  // And against a Monte-Carlo estimate E_q[log q(z) - log p(z)].
  auto g = mdx::compat::cpu_generator(5);
  const double mu = 0.7, s = 0.6;
  at::Tensor z = mu + s * at::randn({400000}, g, at::kDouble);
  at::Tensor logq = -0.5 * ((z - mu) / s).pow(2) - std::log(s), logp = -0.5 * z.pow(2);
  const double mc = (logq - logp).mean().item<double>();
  at::Tensor kl = mdx::gaussian_kl(at::full({1}, mu, at::kDouble), at::full({1}, 2 * std::log(s), at::kDouble));
  CHECK(mc == doctest::Approx(kl.item<double>()).epsilon(0.01));
}

TEST_CASE("reparameterize: mu + exp(logvar/2) eps, and the draws have the posterior's moments") {
  at::Tensor mean = at::tensor({0.5, -1.0}), logvar = at::tensor({std::log(4.0), std::log(0.25)});
  at::Tensor eps = at::tensor({1.0, -2.0});
  at::Tensor z = mdx::reparameterize(mean, logvar, eps);
  CHECK(z[0].item<double>() == doctest::Approx(0.5 + 2.0 * 1.0));
  CHECK(z[1].item<double>() == doctest::Approx(-1.0 + 0.5 * -2.0));
  auto g = mdx::compat::cpu_generator(9);
  at::Tensor many = mdx::reparameterize(at::full({200000}, 3.0), at::full({200000}, std::log(0.09)),
                                        at::randn({200000}, g));
  CHECK(many.mean().item<double>() == doctest::Approx(3.0).epsilon(0.002));
  CHECK(many.std().item<double>() == doctest::Approx(0.3).epsilon(0.01));
}

TEST_CASE("split_moments clamps the log-variance to [-30, 20] as the SD VAE does") {
  at::Tensor m = at::tensor({1.0, 2.0, -50.0, 40.0}).reshape({1, 4, 1, 1});
  auto [mean, logvar] = mdx::split_moments(m);
  CHECK(mean.flatten()[1].item<double>() == 2.0);
  CHECK(logvar.flatten()[0].item<double>() == -30.0);
  CHECK(logvar.flatten()[1].item<double>() == 20.0);
}

TEST_CASE("vq_assign equals a brute-force nearest neighbour") {
  auto g = mdx::compat::cpu_generator(11);
  at::Tensor z = at::randn({300, 6}, g), codebook = at::randn({37, 6}, g);
  at::Tensor idx = mdx::vq_assign(z, codebook);
  auto zi = z.accessor<float, 2>();
  auto ci = codebook.accessor<float, 2>();
  for (int64_t n = 0; n < 300; ++n) {
    int64_t best = -1;
    double best_d = 1e300;
    for (int64_t k = 0; k < 37; ++k) {
      double d = 0;
      for (int64_t j = 0; j < 6; ++j) d += (zi[n][j] - ci[k][j]) * (zi[n][j] - ci[k][j]);
      if (d < best_d) best_d = d, best = k;
    }
    CHECK(idx[n].item<int64_t>() == best);
  }
}

TEST_CASE("one EMA codebook step equals the hand computation") {
  // K = 2, d = 1. N = (1, 1), m = (0, 10); this batch: code 0 took 3 vectors summing to 6, code 1 none.
  at::Tensor cs = at::tensor({1.0, 1.0}, at::kDouble), es = at::tensor({0.0, 10.0}, at::kDouble).reshape({2, 1});
  at::Tensor counts = at::tensor({3.0, 0.0}, at::kDouble), sums = at::tensor({6.0, 0.0}, at::kDouble).reshape({2, 1});
  const double decay = 0.9, eps = 1e-5;
  at::Tensor cb = mdx::vq_ema_update(cs, es, counts, sums, decay, eps);
  // N <- 0.9 (1, 1) + 0.1 (3, 0) = (1.2, 0.9); m <- 0.9 (0, 10) + 0.1 (6, 0) = (0.6, 9)
  CHECK(cs[0].item<double>() == doctest::Approx(1.2));
  CHECK(cs[1].item<double>() == doctest::Approx(0.9));
  CHECK(es[1][0].item<double>() == doctest::Approx(9.0));
  // Laplace smoothing: N_i' = (N_i + eps) / (n + K eps) n with n = 2.1.
  const double n = 2.1, n0 = (1.2 + eps) / (n + 2 * eps) * n, n1 = (0.9 + eps) / (n + 2 * eps) * n;
  CHECK(cb[0][0].item<double>() == doctest::Approx(0.6 / n0).epsilon(1e-12));
  CHECK(cb[1][0].item<double>() == doctest::Approx(9.0 / n1).epsilon(1e-12));
}

TEST_CASE("dead codes, and only they, are restarted from the candidates") {
  at::Tensor codebook = at::arange(8, at::kFloat).reshape({4, 2});  // rows (0,1) (2,3) (4,5) (6,7)
  at::Tensor keep = codebook.clone();
  at::Tensor cs = at::full({4}, 5.0), es = codebook * 5;
  at::Tensor usage = at::tensor({3.0f, 0.0f, 7.0f, 0.0f});
  at::Tensor candidates = at::full({3, 2}, 100.0f) + at::arange(3, at::kFloat).unsqueeze(1);
  auto g = mdx::compat::cpu_generator(1);
  CHECK(mdx::restart_dead_codes(codebook, cs, es, usage, candidates, g) == 2);
  CHECK(codebook[0].equal(keep[0]));
  CHECK(codebook[2].equal(keep[2]));
  for (int64_t k : {1, 3}) {
    CHECK(codebook[k][0].item<float>() >= 100.0f);  // one of the candidates
    CHECK(codebook[k][1].item<float>() == codebook[k][0].item<float>());
    CHECK(cs[k].item<float>() == 1.0f);
    CHECK(es[k].equal(codebook[k]));
  }
  CHECK_FALSE(codebook[1].equal(codebook[3]));  // distinct candidates while there are enough
  CHECK(cs[0].item<float>() == 5.0f);
  at::Tensor none_dead = at::ones({4});
  CHECK(mdx::restart_dead_codes(codebook, cs, es, none_dead, candidates, g) == 0);
}

TEST_CASE("k-means finds well-separated clusters") {
  auto g = mdx::compat::cpu_generator(2);
  at::Tensor centres = at::tensor({0.0f, 0.0f, 10.0f, 0.0f, 0.0f, 10.0f}).reshape({3, 2});
  at::Tensor z = at::cat({centres[0] + 0.1 * at::randn({200, 2}, g), centres[1] + 0.1 * at::randn({200, 2}, g),
                          centres[2] + 0.1 * at::randn({200, 2}, g)});
  at::Tensor found = mdx::kmeans(z, 3, 20, g);
  for (int64_t k = 0; k < 3; ++k) {
    at::Tensor d = (found - centres[k]).pow(2).sum(1).min();
    CHECK(d.item<float>() < 0.01f);
  }
}

TEST_CASE("perplexity: uniform use of k codes gives k, one code gives 1") {
  CHECK(mdx::perplexity(at::tensor({5.0, 5.0, 5.0, 5.0})) == doctest::Approx(4.0));
  CHECK(mdx::perplexity(at::tensor({9.0, 0.0, 0.0})) == doctest::Approx(1.0));
}

TEST_CASE("coder geometry: cells of stride pixels; wrong sizes and channels refused") {
  CoderConfig c;
  c.stride = 4, c.latent = 3, c.channels = 1;
  auto g = c.geometry(28, 28, 1);
  CHECK(g.grid_h == 7);
  CHECK(g.values == 3);
  CHECK_THROWS_WITH(c.geometry(30, 28, 1), doctest::Contains("does not divide"));
  CHECK_THROWS_WITH(c.geometry(28, 28, 3), doctest::Contains("1 channels"));
  c.stride = 3;
  CHECK_THROWS_WITH(c.validate(), doctest::Contains("power of 2"));
}

TEST_CASE("conv and patch coders map images to the latent grid and back") {
  for (const char* form : {"conv", "patch"}) {
    CoderConfig c;
    c.form = form, c.stride = 4, c.latent = 5, c.width = 16, c.channels = 3;
    mdx::CoderNet net(c, 2 * c.latent);
    at::Tensor x = at::rand({2, 3, 28, 28}) * 2 - 1;
    at::Tensor z = net->encode(x);
    CHECK(z.sizes() == at::IntArrayRef({2, 10, 7, 7}));
    at::Tensor back = net->decode(z.slice(1, 0, 5));
    CHECK(back.sizes() == at::IntArrayRef({2, 3, 28, 28}));
  }
}

TEST_CASE("patch coder: each token depends on its own patch only") {
  CoderConfig c;
  c.form = "patch", c.stride = 4, c.latent = 2, c.width = 16, c.channels = 1;
  mdx::CoderNet net(c, 2);
  at::Tensor x = at::zeros({1, 1, 8, 8});
  at::Tensor a = net->encode(x);
  x.index_put_({0, 0, 0, 0}, 1.0);  // inside cell (0, 0)
  at::Tensor b = net->encode(x);
  at::Tensor changed = (a - b).abs().sum(1).flatten() > 0;
  CHECK(changed[0].item<bool>());
  CHECK_FALSE(changed.slice(0, 1).any().item<bool>());
}

namespace {
std::string temp_h5(const char* name) { return "/tmp/mdx-unit-" + std::to_string(::getpid()) + "-" + name + ".h5"; }
}  // namespace

TEST_CASE("VAE and VQ tokenizers survive a file round trip: same tokens, same identity") {
  at::manual_seed(3);
  CoderConfig c;
  c.stride = 4, c.latent = 3, c.width = 8, c.channels = 1;
  auto g = mdx::compat::cpu_generator(4);
  at::Tensor images = at::randint(0, 256, {5, 28, 28, 1}, g).to(at::kByte);
  mdx::CoderNet vae_net(c, 6);
  auto vae = std::make_shared<mdx::VaeTokenizer>(vae_net, 0.5, 1e-3);
  auto vq = std::make_shared<mdx::VqTokenizer>(mdx::CoderNet(c, 3), at::randn({16, 3}, g), 0.25);
  for (std::shared_ptr<const mdx::Tokenizer> tok : {std::shared_ptr<const mdx::Tokenizer>(vae),
                                                    std::shared_ptr<const mdx::Tokenizer>(vq)}) {
    const std::string path = temp_h5(tok->kind().c_str());
    {
      mdx::h5::Handle f = mdx::h5::create_file(path);
      tok->save(f);
    }
    auto back = mdx::load_tokenizer_file(path);
    ::unlink(path.c_str());
    CHECK(back->kind() == tok->kind());
    CHECK(back->identity() == tok->identity());
    at::Tensor t1 = tok->encode(images), t2 = back->encode(images);
    CHECK(t1.equal(t2));
    auto geo = tok->geometry(28, 28, 1);
    CHECK(tok->decode(t1, geo).equal(back->decode(t2, geo)));
  }
  // The scale multiplies the posterior mean: a tokenizer of the same weights at scale 1 gives twice
  // the tokens of this one (scale 0.5), and decode divides the scale out.
  mdx::VaeTokenizer unit(mdx::clone_coder(vae_net, 6), 1.0, 1e-3);
  auto geo = vae->geometry(28, 28, 1);
  at::Tensor tokens = vae->encode(images);
  CHECK(unit.encode(images).allclose(2 * tokens, 1e-5, 1e-6));
  CHECK(unit.decode(2 * tokens, geo).allclose(vae->decode(tokens, geo), 1e-5, 1e-5));
  auto [mean, logvar] = vae->moments(images);
  CHECK(mean.equal(tokens));
  CHECK(mean.sizes() == at::IntArrayRef({5, 49, 3}));
  CHECK((vq->encode(images).scalar_type() == at::kLong));
  CHECK(vq->geometry(28, 28, 1).vocabulary == 16);
}

TEST_CASE("a learned tokenizer file with damaged weights is refused with its name") {
  CoderConfig c;
  c.stride = 4, c.latent = 3, c.width = 8, c.channels = 1;
  const std::string path = temp_h5("damaged");
  {
    mdx::VaeTokenizer vae(mdx::CoderNet(c, 6), 1.0, 0);
    mdx::h5::Handle f = mdx::h5::create_file(path);
    vae.save(f);
    mdx::h5::write_attr(f, "latent", int64_t{4});  // the weights no longer fit
  }
  CHECK_THROWS_WITH(mdx::load_tokenizer_file(path), doctest::Contains("its attributes imply"));
  ::unlink(path.c_str());
}
