// SHA-256 (FIPS 180-4) by OpenSSL's libcrypto, as lowercase hex: the identity of a file (mdx-fid's
// extractor), so that statistics made by one file are never compared with features of another,
// wherever the files were moved.
#pragma once
#include <cstddef>
#include <string>

namespace mdx {

std::string sha256_bytes(const void* data, size_t size);
std::string sha256_file(const std::string& path);  // throws Error when the file cannot be read

}  // namespace mdx
