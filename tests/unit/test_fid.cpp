// The Fréchet distance on covariances whose square roots are known in closed form, against an
// independent route (the complex eigenvalues of the non-symmetric product S1 S2), and the
// identity machinery (statistics files) that keeps features of different extractors apart.
#include <doctest/doctest.h>
#include <torch/torch.h>

#include <cstdio>
#include <string>

#include <unistd.h>

#include "mdx/eval/fid.h"
#include "mdx/io/hdf5.h"
#include "mdx/util/error.h"

using namespace mdx;

namespace {

at::Tensor vec(std::initializer_list<double> v) { return torch::tensor(std::vector<double>(v), torch::kDouble); }

// A random symmetric positive definite F x F matrix.
at::Tensor random_spd(int64_t F, int64_t rank, uint64_t seed) {
  torch::manual_seed(seed);
  at::Tensor a = torch::randn({F, rank}, torch::kDouble);
  return at::matmul(a, a.t()) / static_cast<double>(rank);
}

// ||d||^2 + tr S1 + tr S2 - 2 sum Re sqrt(eig(S1 S2)): the same quantity by another road.
double frechet_by_general_eigenvalues(const at::Tensor& mu1, const at::Tensor& s1, const at::Tensor& mu2,
                                      const at::Tensor& s2) {
  at::Tensor ev = at::linalg_eigvals(at::matmul(s1, s2));
  double tr = at::real(at::sqrt(ev)).sum().item<double>();
  at::Tensor d = mu1 - mu2;
  return d.dot(d).item<double>() + s1.trace().item<double>() + s2.trace().item<double>() - 2 * tr;
}

// Per process: ctest runs each test case as a process of its own, two at a time.
std::string temp_path(const char* name) {
  return "/tmp/mdx-unit-fid-" + std::to_string(::getpid()) + "-" + name;
}

}  // namespace

TEST_CASE("Frechet distance of diagonal covariances: |mu1-mu2|^2 + sum (sqrt a - sqrt b)^2") {
  at::Tensor a = vec({4.0, 1.0, 9.0, 0.25}), b = vec({1.0, 1.0, 4.0, 2.25});
  at::Tensor mu1 = vec({0.0, 1.0, 2.0, 3.0}), mu2 = vec({1.0, 1.0, 0.0, 3.0});
  // (2-1)^2 + 0 + (3-2)^2 + (0.5-1.5)^2 = 3; |mu1-mu2|^2 = 1 + 4 = 5.
  CHECK(frechet_distance(mu1, at::diag(a), mu2, at::diag(b)) == doctest::Approx(8.0).epsilon(1e-12));
  CHECK(frechet_distance(mu1, at::diag(a), mu1, at::diag(b)) == doctest::Approx(3.0).epsilon(1e-12));
  // Disjoint supports: the product is zero, so nothing is subtracted.
  CHECK(frechet_distance(vec({0, 0}), at::diag(vec({1, 0})), vec({0, 0}), at::diag(vec({0, 1}))) ==
        doctest::Approx(2.0).epsilon(1e-12));
}

TEST_CASE("Frechet distance with a non-diagonal covariance: I against [[2,1],[1,2]] (eigenvalues 3 and 1)") {
  at::Tensor s2 = torch::tensor({2.0, 1.0, 1.0, 2.0}, torch::kDouble).view({2, 2});
  const double expected = 1.0 + 2.0 + 4.0 - 2.0 * (std::sqrt(3.0) + 1.0);  // |(1,0)|^2 + tr I + tr S2 - 2 tr sqrt
  CHECK(frechet_distance(vec({1, 0}), at::eye(2, torch::kDouble), vec({0, 0}), s2) ==
        doctest::Approx(expected).epsilon(1e-12));
  // Symmetric in its two arguments.
  CHECK(frechet_distance(vec({0, 0}), s2, vec({1, 0}), at::eye(2, torch::kDouble)) ==
        doctest::Approx(expected).epsilon(1e-12));
}

TEST_CASE("Frechet distance of a Gaussian with itself is 0; random covariances match the general eigenvalues") {
  const int64_t F = 48;
  at::Tensor s1 = random_spd(F, 200, 1), s2 = random_spd(F, 200, 2) * 1.7;
  torch::manual_seed(3);
  at::Tensor mu1 = torch::randn({F}, torch::kDouble), mu2 = torch::randn({F}, torch::kDouble) * 0.3;
  CHECK(std::abs(frechet_distance(mu1, s1, mu1, s1)) < 1e-9);
  const double d = frechet_distance(mu1, s1, mu2, s2);
  CHECK(d > 1.0);
  CHECK(d == doctest::Approx(frechet_by_general_eigenvalues(mu1, s1, mu2, s2)).epsilon(1e-9));
  // Rank-deficient covariances (fewer samples than features), where S1 has zero eigenvalues.
  at::Tensor r1 = random_spd(F, 10, 4), r2 = random_spd(F, 30, 5);
  CHECK(frechet_distance(mu1, r1, mu2, r2) ==
        doctest::Approx(frechet_by_general_eigenvalues(mu1, r1, mu2, r2)).epsilon(1e-6));
  // float32 inputs are computed in float64 all the same.
  CHECK(frechet_distance(mu1.to(torch::kFloat), s1.to(torch::kFloat), mu2, s2) ==
        doctest::Approx(d).epsilon(1e-5));
}

TEST_CASE("Frechet distance refuses mismatched shapes and non-finite inputs") {
  at::Tensor s = at::eye(3, torch::kDouble);
  CHECK_THROWS_AS(frechet_distance(vec({0, 0, 0}), s, vec({0, 0}), at::eye(2, torch::kDouble)), Error);
  CHECK_THROWS_AS(frechet_distance(vec({0, 0, 0}), at::eye(2, torch::kDouble), vec({0, 0, 0}), s), Error);
  at::Tensor bad = s.clone();
  bad[1][1] = std::nan("");
  CHECK_THROWS_AS(frechet_distance(vec({0, 0, 0}), bad, vec({0, 0, 0}), s), Error);
}

TEST_CASE("fid: statistics files round-trip; identities of different extractors do not match") {
  FeatureStats s;
  s.mu = vec({1.0, -2.0, 0.5});
  s.sigma = random_spd(3, 5, 7);
  s.count = 17;
  s.extractor.kind = "torchscript";
  s.extractor.path = "inception.pt";
  s.extractor.sha256 = std::string(64, 'a');
  s.extractor.bytes = 1234;
  s.extractor.features = 3;
  s.extractor.size = 299;
  s.extractor.preprocessing = "test";
  const std::string p = temp_path("stats.h5");
  {
    h5::Handle f = h5::create_file(p);
    s.save(f);
  }
  FeatureStats r = FeatureStats::load(p);
  std::remove(p.c_str());
  CHECK(r.count == 17);
  CHECK(at::equal(r.mu, s.mu));
  CHECK(at::equal(r.sigma, s.sigma));
  CHECK(r.extractor.mismatch(s.extractor).empty());
  CHECK(r.extractor.size == 299);
  CHECK(r.extractor.path == "inception.pt");

  ExtractorIdentity other = s.extractor;
  other.size = 128;
  CHECK(s.extractor.mismatch(other).find("input size") != std::string::npos);
  other = s.extractor;
  other.sha256 = std::string(64, 'b');
  CHECK(s.extractor.mismatch(other).find("different files") != std::string::npos);
  other = s.extractor;
  other.path = "moved/inception.pt";  // the same file elsewhere is the same extractor
  CHECK(s.extractor.mismatch(other).empty());
  other.kind = "mdx-encoder";
  CHECK(!s.extractor.mismatch(other).empty());
}

TEST_CASE("fid: a statistics file whose sigma is not a covariance is refused") {
  FeatureStats s;
  s.mu = vec({0.0, 0.0});
  s.count = 10;
  s.extractor.kind = "torchscript", s.extractor.path = "x.pt", s.extractor.sha256 = std::string(64, 'a');
  s.extractor.features = 2, s.extractor.size = 8, s.extractor.preprocessing = "test";
  const std::string p = temp_path("bad-sigma.h5");
  for (auto [sigma, says] : {std::pair{torch::tensor({1.0, 2.0, 2.0, 1.0}, torch::kDouble), "negative eigenvalue"},
                             std::pair{torch::tensor({1.0, 0.5, 0.0, 1.0}, torch::kDouble), "not symmetric"}}) {
    s.sigma = sigma.view({2, 2});
    {
      h5::Handle f = h5::create_file(p);
      s.save(f);
    }
    CHECK_THROWS_WITH_AS(FeatureStats::load(p), doctest::Contains(says), Error);
  }
  s.sigma = torch::tensor({2.0, 1.0, 1.0, 2.0}, torch::kDouble).view({2, 2});  // eigenvalues 3 and 1
  {
    h5::Handle f = h5::create_file(p);
    s.save(f);
  }
  CHECK(FeatureStats::load(p).count == 10);
  std::remove(p.c_str());
}

TEST_CASE("fid: the report as JSON: a distance and two inputs, or null, a note and the saved statistics") {
  FidReport r;
  r.fid = 12.5;
  r.inputs = {{"a.h5", "images", 100}, {"b.stats.h5", "stats", 2000}};
  r.extractor.kind = "torchscript", r.extractor.path = "x.pt", r.extractor.sha256 = "ab12";
  r.extractor.bytes = 9, r.extractor.features = 2, r.extractor.size = 28, r.extractor.preprocessing = "none";
  r.device = "cpu", r.mdx_version = "0.1.0", r.mdx_commit = "abc";
  const std::string tail =
      ", \"extractor\": {\"kind\": \"torchscript\", \"path\": \"x.pt\", \"bytes\": 9, \"sha256\": \"ab12\", "
      "\"features\": 2, \"size\": 28, \"preprocessing\": \"none\"}, \"device\": \"cpu\", \"mdx_version\": \"0.1.0\", "
      "\"mdx_commit\": \"abc\"}";
  CHECK(r.to_json() == "{\"fid\": 12.5, \"inputs\": [{\"path\": \"a.h5\", \"type\": \"images\", \"count\": 100}, "
                       "{\"path\": \"b.stats.h5\", \"type\": \"stats\", \"count\": 2000}]" + tail);
  r.fid.reset();
  r.inputs.pop_back();
  r.stats = "a.stats.h5";
  CHECK(r.to_json() == "{\"fid\": null, \"note\": \"one input: statistics saved, no distance computed\", "
                       "\"inputs\": [{\"path\": \"a.h5\", \"type\": \"images\", \"count\": 100}], "
                       "\"stats\": \"a.stats.h5\"" + tail);
}
