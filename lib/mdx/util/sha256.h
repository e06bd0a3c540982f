// SHA-256 (OpenSSL's libcrypto), as lowercase hex: the identity of extractor files, tokenizers and
// other inputs whose contents must match.
#pragma once
#include <cstddef>
#include <memory>
#include <string>

namespace mdx {

// Incremental digest: update() any number of times, then hex() once.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t bytes);
  void update(const std::string& text) { update(text.data(), text.size()); }
  std::string hex();

 private:
  struct Context;
  std::unique_ptr<Context> ctx_;
};

std::string sha256_bytes(const void* data, size_t bytes);
std::string sha256_file(const std::string& path);  // throws Error when unreadable

}  // namespace mdx
