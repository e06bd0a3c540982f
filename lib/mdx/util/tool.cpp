#include "mdx/util/tool.h"

#include <H5Epublic.h>
#include <H5public.h>
#include <dlfcn.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <torch/torch.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <limits>
#include <sstream>

#include "mdx/util/error.h"
#include "mdx/util/log.h"
#include "mdx/util/signal.h"

namespace mdx {

void CommonOptions::add_to(CLI::App& app) {
  app.add_option("--seed", seed, "random seed; same seed, input and device give the same output")
      ->capture_default_str();
  app.add_option("--device", device, "auto | cpu | cuda | cuda:N")->capture_default_str();
  app.add_option("--threads", threads, "CPU threads of LibTorch and OpenBLAS (0: their defaults)")->capture_default_str()
      ->check(CLI::Range(0, 4096));
  app.add_flag("-q,--quiet", quiet, "no log or progress lines on stderr (warnings and errors are still printed)");
  if (const char* env = std::getenv("MDX_PRECISION"); env && *env) precision = env;
  app.add_option("--precision", precision,
                 "auto | fp32 | bf16: bf16 autocast of the model (auto: on CUDA and CPUs with AVX512-BF16 or AMX; "
                 "default $MDX_PRECISION, else auto)")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "fp32", "bf16"}));
}

bool cpu_has_bf16() {
  static const bool has = [] {
    std::ifstream in("/proc/cpuinfo");
    for (std::string line; std::getline(in, line);)
      if (line.rfind("flags", 0) == 0)
        return line.find(" avx512_bf16") != std::string::npos || line.find(" amx_bf16") != std::string::npos;
    return false;
  }();
  return has;
}

std::string resolve_precision(const std::string& precision, const std::string& device) {
  const bool cuda = device.rfind("cuda", 0) == 0;
  if (precision == "fp32") return "fp32";
  if (precision == "bf16") {
    if (!cuda && !cpu_has_bf16()) warn("--precision bf16: this CPU has no AVX512-BF16 or AMX-BF16; bf16 runs emulated, slower than fp32");
    return "bf16";
  }
  return cuda || cpu_has_bf16() ? "bf16" : "fp32";
}

std::pair<int64_t, int64_t> Shard::range(int64_t n) const {
  return {n * index / count, n * (index + 1) / count};
}

Shard parse_shard(const std::string& text) {
  Shard s;
  auto slash = text.find('/');
  try {
    if (slash == std::string::npos) throw std::invalid_argument("");
    size_t a = 0, b = 0;
    s.index = std::stoll(text.substr(0, slash), &a);
    s.count = std::stoll(text.substr(slash + 1), &b);
    if (a != slash || b != text.size() - slash - 1) throw std::invalid_argument("");
  } catch (const std::exception&) {
    throw UsageError("--shard expects I/N (part I of N, 0-based), got '" + text + "'");
  }
  if (s.count < 1 || s.index < 0 || s.index >= s.count)
    throw UsageError("--shard " + text + ": need 0 <= I < N");
  return s;
}

void set_cpu_threads(int threads) {
  torch::set_num_threads(threads);
  // Debian's LibTorch calls a pthread OpenBLAS with its own pool of busy-waiting threads, one per
  // core; left alone it oversubscribes the cores that LibTorch's OpenMP pool also uses.
  using SetThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) f(threads);
}

namespace {
// glibc hands every freed block above 128 KiB back to the kernel (munmap, or a trim of the heap
// top) and the next training step faults the same pages in again, zero-filled: on the 2-core CI
// machine that was a third of a small model's step, mostly in the kernel. LibTorch's CPU
// allocator has no cache of its own, so the process keeps its freed memory instead: blocks up to
// 1 GiB come from the heap, and the heap is never trimmed. Peak memory is unchanged (the same
// tensors are alive at the peak); only the return of memory between steps is given up.
void keep_freed_memory() {
#if defined(__GLIBC__)
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
#endif
}

void check_device_name(const std::string& device) {
  bool ok = device == "auto" || device == "cpu" || device == "cuda";
  if (!ok && device.rfind("cuda:", 0) == 0 && device.size() > 5)
    ok = device.find_first_not_of("0123456789", 5) == std::string::npos;
  if (!ok) throw UsageError("--device must be auto, cpu, cuda or cuda:N, got '" + device + "'");
}
}  // namespace

std::string resolve_device(const std::string& device) {
  check_device_name(device);
  if (device == "auto") return torch::cuda::is_available() ? "cuda" : "cpu";
  if (device == "cpu") return device;
  if (!torch::cuda::is_available()) throw Error("--device " + device + ": this LibTorch build sees no CUDA device");
  return device;
}

namespace {
// The options as a TOML config that replays the run through --config: every option with its
// value; empty ones (whose default is empty) are left out, since `key=""` would not read back.
std::string effective_options(const CLI::App& app) {
  std::istringstream in(app.config_to_str(true, false));
  std::string out;
  for (std::string line; std::getline(in, line);)
    if (line.size() < 3 || line.compare(line.size() - 3, 3, "=\"\"") != 0) out += line + "\n";
  return out;
}
// CLI11 saturates an integer beyond int64/uint64 (2^64 and 2^65 both become the largest seed) and
// wraps a negative unsigned one: such values are refused instead, naming the option.
void check_integer_ranges(const CLI::App& app) {
  for (const CLI::Option* opt : app.get_options()) {
    const std::string type = opt->get_type_name();
    const bool is_signed = type.rfind("INT", 0) == 0, is_unsigned = type.rfind("UINT", 0) == 0;
    if (!is_signed && !is_unsigned) continue;
    for (const std::string& value : opt->results()) {
      const char* s = value.c_str();
      while (std::isspace(static_cast<unsigned char>(*s))) ++s;
      if (is_unsigned && *s == '-')
        throw CLI::ValidationError(opt->get_name(), "must not be negative, got " + value);
      char* end = nullptr;
      errno = 0;
      if (is_unsigned) (void)std::strtoull(s, &end, 0);
      else (void)std::strtoll(s, &end, 0);
      if (errno == ERANGE) throw CLI::ValidationError(opt->get_name(), value + " is out of range");
    }
  }
}

// An empty value (`--tokenizer "$UNSET"`) is refused rather than read as the option's absence.
void check_empty_values(const CLI::App& app) {
  for (const CLI::Option* opt : app.get_options())
    for (const std::string& value : opt->results())
      if (value.empty() && opt->get_expected_min() > 0)
        throw CLI::ValidationError(opt->get_name(), "is empty; leave the option out instead");
}

// Standard output carries data (reports, --help): a full disk or a closed pipe is an error, not a
// report silently lost with exit 0.
bool stdout_failed() {
  std::cout.flush();
  return !std::cout || std::fflush(stdout) != 0 || std::ferror(stdout);
}

}  // namespace

Tool::Tool(std::string name, std::string usage) : name_(std::move(name)), app_(usage, name_) {
  app_.set_help_flag("-h,--help", "print this help and exit");
  app_.set_version_flag("--version", name_ + " " + version() + " (" + git_commit() + "), LibTorch " +
                                         libtorch_version(),
                        "print the version (with the git commit) and exit");
  app_.set_config("--config", "", "read options from a TOML file (keys are the long option names)");
  app_.allow_config_extras(false);  // a misspelt key in a config file is an error, not ignored
  app_.get_formatter()->column_width(34);
  common_.add_to(app_);
}

int Tool::run(int argc, char** argv, const std::function<void(Provenance&)>& body) {
  set_program_name(name_);
  // No HDF5 shutdown at exit: every output is closed (and its failure reported) before it is
  // renamed, and a file whose final flush failed (a full disk) stays open inside the library,
  // whose atexit shutdown would flush it again and crash (H5F__close_cb, exit 139).
  H5dont_atexit();
  keep_freed_memory();
  install_signal_handlers();  // before anything is written, so no signal can leave a partial file
  try {
    app_.parse(argc, argv);
    check_integer_ranges(app_);
    check_empty_values(app_);
  } catch (const CLI::CallForHelp&) {
    std::cout << app_.help();
    return stdout_failed() ? report("cannot write standard output", 1) : 0;
  } catch (const CLI::CallForVersion&) {
    std::cout << app_.version() << "\n";
    return stdout_failed() ? report("cannot write standard output", 1) : 0;
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    const CLI::Option* config = app_.get_config_ptr();
    if (dynamic_cast<const CLI::ConfigError*>(&e) && config && !config->results().empty())
      what = "--config '" + config->results()[0] + "': " + what;
    return report(what, 2);
  }
  set_quiet(common_.quiet);
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // HDF5 errors become our own one-line messages
  try {
    if (common_.threads > 0) set_cpu_threads(common_.threads);
    // LibTorch seeds its default generator non-deterministically; weight initialization draws
    // from it, so it takes --seed too (explicit generators serve everything else).
    torch::manual_seed(common_.seed);
    Provenance prov;
    prov.tool = name_;
    for (int i = 0; i < argc; ++i) prov.command += (i ? " " : "") + shell_quote(argv[i]);
    prov.options = effective_options(app_);
    prov.seed = common_.seed;
    if (cpu_only_) check_device_name(common_.device);
    prov.device = cpu_only_ ? "cpu" : resolve_device(common_.device);
    // The data stages run no model: their arithmetic is float32 whatever --precision says.
    prov.precision = cpu_only_ ? "fp32" : resolve_precision(common_.precision, prov.device);
    prov.created = utc_now_iso8601();
    body(prov);
    return stdout_failed() ? report(std::string("cannot write standard output: ") + std::strerror(errno), 1) : 0;
  } catch (const UsageError& e) {
    return report(e.what(), 2);
  } catch (const Suspended& e) {
    std::fprintf(stderr, "%s: %s\n", name_.c_str(), one_line(e.what()).c_str());
    return 75;
  } catch (const Interrupted& e) {
    std::fprintf(stderr, "%s: %s; no output written\n", name_.c_str(), one_line(e.what()).c_str());
    return 128 + e.signal();
  } catch (const c10::Error& e) {
    // LibTorch messages carry a C++ backtrace after the first line: keep the first line only.
    std::string what = e.what_without_backtrace();
    return report(what.substr(0, what.find('\n')), 1);
  } catch (const std::bad_alloc&) {
    return report("out of memory", 1);
  } catch (const std::exception& e) {
    return report(e.what(), 1);
  }
}

int Tool::report(const std::string& what, int status) const {
  std::fprintf(stderr, "%s: error: %s\n", name_.c_str(), one_line(what).c_str());
  if (status == 2) std::fprintf(stderr, "Try '%s --help' for more information.\n", name_.c_str());
  return status;
}

}  // namespace mdx
