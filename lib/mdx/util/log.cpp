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

void log_line(const std::string& text) {
  if (g_quiet) return;
  std::fprintf(stderr, "%s: %s\n", g_program.c_str(), text.c_str());
}

void warn_line(const std::string& text) {
  std::fprintf(stderr, "%s: warning: %s\n", g_program.c_str(), text.c_str());
}

}  // namespace mdx
