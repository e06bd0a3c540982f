// Files: HDF5 image tables (several read as one), IDX, provenance, atomic outputs, patches.
#include <doctest/doctest.h>
#include <torch/torch.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdio>
#include <fstream>

#include "mdx/io/hdf5.h"
#include "mdx/io/idx.h"
#include "mdx/io/image_table.h"
#include "mdx/tokenize/patches.h"
#include "mdx/util/error.h"
#include "mdx/util/output.h"
#include "mdx/util/tool.h"

using namespace mdx;

namespace {
struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/mdx-unit-XXXXXX";
    path = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf " + path).c_str()); }
};

void write_table(const std::string& path, int64_t n, uint8_t first, const std::vector<std::string>& history) {
  h5::Handle f = h5::create_file(path);
  ImageTableWriter w(f, 2, 3, 1, true);
  std::vector<uint8_t> px(static_cast<size_t>(n * 6));
  std::vector<int64_t> lb(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    for (int k = 0; k < 6; ++k) px[i * 6 + k] = static_cast<uint8_t>(first + i);
    lb[i] = first + i;
  }
  w.append(px.data(), lb.data(), n / 2);  // two appends: the dataset grows
  w.append(px.data() + n / 2 * 6, lb.data() + n / 2, n - n / 2);
  Provenance p;
  p.tool = "test";
  p.command = "test";
  p.created = "now";
  p.merge_history(history);
  h5::write_provenance(f, p);
  h5::close_output(f, path);
}
}  // namespace

TEST_CASE("image tables: several files read as one, across the file boundary") {
  TempDir d;
  write_table(d.path + "/a.h5", 5, 0, {"first"});
  write_table(d.path + "/b.h5", 4, 100, {"first", "second"});
  ImageTable t({d.path + "/a.h5", d.path + "/b.h5"});
  CHECK(t.size() == 9);
  CHECK(t.height() == 2);
  CHECK(t.width() == 3);
  CHECK(t.has_labels());
  std::vector<uint8_t> px(4 * 6);
  std::vector<int64_t> lb(4);
  t.read(3, 4, px.data(), lb.data());
  CHECK(lb == std::vector<int64_t>{3, 4, 100, 101});
  CHECK(px[0] == 3);
  CHECK(px[2 * 6 + 5] == 100);
  // History: the union of both files' lines, each once, in order.
  REQUIRE(t.history().size() >= 3);
  CHECK(t.history()[0] == "first");
  CHECK(t.history()[1].find("test") != std::string::npos);
  CHECK_THROWS_AS(t.read(8, 2, px.data(), lb.data()), Error);
}

TEST_CASE("image tables: wrong dtype and shape are errors that name the file") {
  TempDir d;
  std::string p = d.path + "/f.h5";
  {
    h5::Handle f = h5::create_file(p);
    float data[4] = {0, 1, 2, 3};
    h5::write(f, "images", H5T_NATIVE_FLOAT, {1, 2, 2, 1}, data);
  }
  try {
    ImageTable t({p});
    FAIL("expected an error");
  } catch (const Error& e) {
    std::string w = e.what();
    CHECK(w.find("f.h5") != std::string::npos);
    CHECK(w.find("float32") != std::string::npos);
    CHECK(w.find("uint8 [N,H,W,C]") != std::string::npos);
  }
  CHECK_THROWS_AS(ImageTable({d.path + "/missing.h5"}), Error);
}

TEST_CASE("IDX: header, data, wrong magic, truncation") {
  TempDir d;
  std::string p = d.path + "/x-idx3-ubyte.gz";
  {
    gzFile g = gzopen(p.c_str(), "wb");
    const unsigned char head[] = {0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3};
    gzwrite(g, head, sizeof head);
    for (unsigned char v = 0; v < 12; ++v) gzwrite(g, &v, 1);
    gzclose(g);
  }
  IdxReader r(p, 3);
  CHECK(r.dims() == std::vector<int64_t>{2, 2, 3});
  std::vector<uint8_t> buf(12);
  r.read(2, buf.data());
  CHECK(buf[11] == 11);
  CHECK_THROWS_WITH_AS(IdxReader(p, 1), doctest::Contains("magic number 0x00000803"), Error);
  std::string t = d.path + "/short-idx3-ubyte";
  {
    std::ofstream o(t, std::ios::binary);
    const unsigned char head[] = {0, 0, 8, 3, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3};
    o.write(reinterpret_cast<const char*>(head), sizeof head);
  }
  IdxReader s(t, 3);
  std::vector<uint8_t> big(36);
  CHECK_THROWS_WITH_AS(s.read(9, big.data()), doctest::Contains("truncated"), Error);
}

TEST_CASE("atomic output: temporary until committed, never an input") {
  TempDir d;
  std::string out = d.path + "/o.h5";
  {
    AtomicOutput o(out);
    std::ofstream(o.temp_path()) << "partial";
  }
  CHECK(access(out.c_str(), F_OK) != 0);
  CHECK(access((d.path + "/.o.h5.tmp" + std::to_string(getpid())).c_str(), F_OK) != 0);
  {
    AtomicOutput o(out);
    std::ofstream(o.temp_path()) << "done";
    o.commit();
  }
  CHECK(access(out.c_str(), F_OK) == 0);
  CHECK_THROWS_WITH_AS(AtomicOutput(out, {out}), doctest::Contains("also an input"), Error);
  CHECK_THROWS_WITH_AS(AtomicOutput(d.path + "/nope/x.h5"), doctest::Contains("does not exist"), Error);
}

TEST_CASE("provenance: history lines accumulate, each once") {
  Provenance p;
  p.tool = "mdx-x";
  p.command = "mdx-x a 'b c'";
  p.created = "2026-01-01T00:00:00Z";
  p.add_input("a", {"l1", "l2"});
  p.add_input("b", {"l2", "l3"});
  CHECK(p.history == std::vector<std::string>{"l1", "l2", "l3"});
  CHECK(p.full_history().rfind("l1\nl2\nl3\n2026-01-01T00:00:00Z mdx-x ", 0) == 0);
  CHECK(shell_quote("a b") == "'a b'");
  CHECK(shell_quote("it's") == "'it'\\''s'");
  CHECK(shell_quote("--t=0,1") == "--t=0,1");
}

TEST_CASE("shards: contiguous parts that cover the whole in order") {
  CHECK_THROWS_AS(parse_shard("3/3"), UsageError);
  CHECK_THROWS_AS(parse_shard("1"), UsageError);
  CHECK_THROWS_AS(parse_shard("a/2"), UsageError);
  int64_t next = 0;
  for (int i = 0; i < 7; ++i) {
    auto [b, e] = parse_shard(std::to_string(i) + "/7").range(100);
    CHECK(b == next);
    next = e;
  }
  CHECK(next == 100);
}

TEST_CASE("patches: MAE's patchify order, and back") {
  auto img = torch::arange(2 * 4 * 6 * 3, torch::kFloat).view({2, 4, 6, 3});
  auto tok = patchify(img, 2);
  CHECK(tok.sizes() == torch::IntArrayRef({2, 6, 12}));
  // Token 1 is the patch at rows 0-1, columns 2-3; its values run over (y, x, channel).
  CHECK(tok[0][1][0].item<float>() == img[0][0][2][0].item<float>());
  CHECK(tok[0][1][3].item<float>() == img[0][0][3][0].item<float>());
  CHECK(tok[0][1][6].item<float>() == img[0][1][2][0].item<float>());
  CHECK(tok[1][3][0].item<float>() == img[1][2][0][0].item<float>());
  CHECK(unpatchify(tok, 2, 4, 6, 3).equal(img));
  CHECK_THROWS_AS(patchify(img, 4), Error);
  auto u8 = torch::tensor({0, 127, 128, 255}, torch::kByte);
  auto x = to_unit_range(u8);
  CHECK(x[0].item<float>() == -1.0f);
  CHECK(x[3].item<float>() == 1.0f);
  CHECK(to_uint8(x).equal(u8));
}
