#include "mdx/util/log.h"

#include <cstdio>

namespace mdx {
namespace {
std::string g_program = "mdx";
bool g_quiet = false;
}  // namespace

void set_program_name(const std::string& name) { g_program = name; }
const std::string& program_name() { return g_program; }
void set_quiet(bool q) { g_quiet = q; }
bool quiet() { return g_quiet; }

std::string one_line(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  for (size_t i = 0; i < n;) {
    const unsigned char c = s[i];
    if (c == '\n' || c == '\t' || c == '\r') {
      out += c == '\n' ? "\\n" : c == '\t' ? "\\t" : "\\r";
      ++i;
      continue;
    }
    // A UTF-8 sequence passes whole; anything else below 0x20, 0x7f, or a stray byte is escaped.
    size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool valid = len > 0 && i + len <= n && ((c >= 0x20 && c != 0x7f) || c >= 0x80);
    for (size_t k = 1; valid && k < len; ++k) valid = (s[i + k] & 0xc0) == 0x80;
    if (valid) {
      out.append(text, i, len);
      i += len;
    } else {
      out += fmt::format("\\x{:02x}", c);
      ++i;
    }
  }
  return out;
}

void log_line(const std::string& text) {
  if (g_quiet) return;
  std::fprintf(stderr, "%s: %s\n", g_program.c_str(), one_line(text).c_str());
}

void warn_line(const std::string& text) {
  std::fprintf(stderr, "%s: warning: %s\n", g_program.c_str(), one_line(text).c_str());
}

}  // namespace mdx
