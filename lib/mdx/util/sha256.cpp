#include "mdx/util/sha256.h"

#include <openssl/evp.h>

#include <fstream>
#include <vector>

#include "mdx/util/error.h"

namespace mdx {

struct Sha256::Context {
  EVP_MD_CTX* md = nullptr;
  ~Context() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Context>()) {
  ctx_->md = EVP_MD_CTX_new();
  if (!ctx_->md || EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) != 1)
    throw Error("cannot start a SHA-256 digest (OpenSSL)");
}

Sha256::~Sha256() = default;

void Sha256::update(const void* data, size_t bytes) {
  if (bytes > 0 && EVP_DigestUpdate(ctx_->md, data, bytes) != 1) throw Error("SHA-256 update failed (OpenSSL)");
}

std::string Sha256::hex() {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int n = 0;
  if (EVP_DigestFinal_ex(ctx_->md, out, &n) != 1) throw Error("SHA-256 final failed (OpenSSL)");
  static const char* digits = "0123456789abcdef";
  std::string s;
  for (unsigned int i = 0; i < n; ++i) s += {digits[out[i] >> 4], digits[out[i] & 15]};
  return s;
}

std::string sha256_bytes(const void* data, size_t bytes) {
  Sha256 sha;
  sha.update(data, bytes);
  return sha.hex();
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read '" + path + "'");
  Sha256 sha;
  std::vector<char> buf(1 << 20);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    sha.update(buf.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) throw Error("error reading '" + path + "'");
  return sha.hex();
}

}  // namespace mdx
