// The few pieces of JSON the tools' reports need (mdx-probe, mdx-fid): written with fmt, no library.
#pragma once
#include <string>

namespace mdx {

std::string json_string(const std::string& s);  // quoted, with '"', '\' and control characters escaped
std::string json_number(double v);              // shortest round-trip form; null when not finite

}  // namespace mdx
