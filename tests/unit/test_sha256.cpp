// SHA-256 against the FIPS 180-4 (NIST CSVS) test vectors, of bytes in memory and of files, and of
// a file larger than the read buffer against the digest Python's hashlib gives.
#include <doctest/doctest.h>

#include <cstdio>
#include <fstream>
#include <string>

#include <unistd.h>

#include "mdx/util/error.h"
#include "mdx/util/sha256.h"

using namespace mdx;

namespace {

// Per process: ctest runs each test case as a process of its own, two at a time.
std::string temp_path(const char* name) {
  return "/tmp/mdx-unit-sha256-" + std::to_string(::getpid()) + "-" + name;
}

std::string hash_of_file(const std::string& bytes) {
  const std::string p = temp_path("file");
  std::ofstream(p, std::ios::binary) << bytes;
  std::string h = sha256_file(p);
  std::remove(p.c_str());
  return h;
}

std::string hash_of_bytes(const std::string& bytes) { return sha256_bytes(bytes.data(), bytes.size()); }

}  // namespace

TEST_CASE("sha256: bytes in memory match FIPS 180-4 test vectors") {
  CHECK(hash_of_bytes("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_bytes(nullptr, 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hash_of_bytes("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(hash_of_bytes("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("sha256: files match FIPS 180-4 test vectors") {
  CHECK(hash_of_file("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(hash_of_file("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // 56 bytes: the length no longer fits the first block.
  CHECK(hash_of_file("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  CHECK(hash_of_file(std::string(1000000, 'a')) == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  CHECK_THROWS_AS(sha256_file(temp_path("missing")), Error);
}

TEST_CASE("sha256: a file of several read buffers matches Python's hashlib") {
  // Bytes 0..255 repeated 12295 times (3147520 bytes, three 1 MiB reads and a partial one); the
  // digest is hashlib.sha256(bytes(range(256)) * 12295).hexdigest().
  std::string bytes;
  for (int r = 0; r < 12295; ++r)
    for (int c = 0; c < 256; ++c) bytes += static_cast<char>(c);
  const std::string expected = "55177e9c9ff3b61cb186f643f4ec57e0681981029c2fc846aa30ae8674de79d4";
  CHECK(hash_of_file(bytes) == expected);
  CHECK(hash_of_bytes(bytes) == expected);
}
