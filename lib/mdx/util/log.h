// Log lines on stderr, each prefixed with the program name: logs of many stages share a Slurm file.
#pragma once
#include <fmt/format.h>
#include <string>

namespace mdx {

void set_program_name(const std::string& name);
const std::string& program_name();
void set_quiet(bool quiet);
bool quiet();

// `text` made one printable line: control characters and bytes that are not UTF-8 become C
// escapes (\n, \t, \xNN), so that a file name holding a newline cannot split an error line.
std::string one_line(const std::string& text);

void log_line(const std::string& text);      // "mdx-x: text", unless quiet
void warn_line(const std::string& text);     // "mdx-x: warning: text", always

template <typename... Args>
void log(fmt::format_string<Args...> f, Args&&... args) {
  if (!quiet()) log_line(fmt::format(f, std::forward<Args>(args)...));
}
template <typename... Args>
void warn(fmt::format_string<Args...> f, Args&&... args) {
  warn_line(fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace mdx
