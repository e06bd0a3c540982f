#include "mdx/train/distributed.h"

#include <fmt/format.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstdlib>

#include "mdx/util/error.h"
#include "mdx/util/log.h"

namespace mdx {

namespace {
const char* env(const char* name) {
  const char* v = std::getenv(name);
  return v && *v ? v : nullptr;
}
int env_int(const char* name, int fallback) {
  const char* v = env(name);
  if (!v) return fallback;
  try {
    return std::stoi(v);
  } catch (const std::exception&) {
    throw Error(fmt::format("environment variable {}='{}' is not an integer", name, v));
  }
}
}  // namespace

DistributedEnv distributed_from_environment() {
  DistributedEnv e;
  if (env("WORLD_SIZE")) {  // torchrun
    e.world = env_int("WORLD_SIZE", 1);
    e.rank = env_int("RANK", 0);
    e.local_rank = env_int("LOCAL_RANK", 0);
  } else if (env("SLURM_NTASKS")) {  // srun
    e.world = env_int("SLURM_NTASKS", 1);
    e.rank = env_int("SLURM_PROCID", 0);
    e.local_rank = env_int("SLURM_LOCALID", 0);
  }
  if (const char* a = env("MASTER_ADDR")) e.master_addr = a;
  e.master_port = env_int("MASTER_PORT", 29500);
  if (e.world < 1 || e.rank < 0 || e.rank >= e.world)
    throw Error(fmt::format("inconsistent distributed environment: RANK {} of WORLD_SIZE {}", e.rank, e.world));
  if (e.world > 1 && e.master_port < 1) throw Error("MASTER_PORT must be a TCP port");
  return e;
}

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

Communicator::Communicator(const DistributedEnv& e, std::chrono::milliseconds timeout)
    : env_(e), impl_(std::make_unique<Impl>()) {
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(e.master_port);
    so.isServer = e.rank == 0;
    so.numWorkers = static_cast<std::size_t>(e.world);
    so.timeout = timeout;
    impl_->store = c10::make_intrusive<c10d::TCPStore>(e.master_addr, so);
    auto options = c10d::ProcessGroupGloo::Options::create(timeout);
    const bool loopback = e.master_addr.rfind("127.", 0) == 0 || e.master_addr == "localhost";
    options->devices.push_back(loopback ? c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1")
                                        : c10d::ProcessGroupGloo::createDefaultDevice());
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, e.rank, e.world, options);
  } catch (const std::exception& ex) {
    std::string what = ex.what();
    throw Error(fmt::format("rank {} of {} cannot join the group at {}:{}: {}", e.rank, e.world, e.master_addr,
                            e.master_port, what.substr(0, what.find('\n'))));
  }
  log("rank {} of {} joined the group at {}:{}", e.rank, e.world, e.master_addr, e.master_port);
}

Communicator::~Communicator() = default;

void Communicator::all_reduce_sum(const std::vector<at::Tensor>& tensors) {
  if (tensors.empty()) return;
  std::vector<at::Tensor> flat{at::cat([&] {
    std::vector<at::Tensor> parts;
    for (const auto& t : tensors) parts.push_back(t.reshape({-1}).to(at::kCPU));
    return parts;
  }())};
  try {
    impl_->group->allreduce(flat)->wait();
  } catch (const std::exception& ex) {
    std::string what = ex.what();
    throw Error(fmt::format("rank {}: all-reduce failed (another rank died or timed out): {}", env_.rank,
                            what.substr(0, what.find('\n'))));
  }
  int64_t offset = 0;
  for (const auto& t : tensors) {
    const int64_t n = t.numel();
    t.copy_(flat[0].slice(0, offset, offset + n).view(t.sizes()));
    offset += n;
  }
}

void Communicator::broadcast(const std::vector<at::Tensor>& tensors) {
  for (const auto& t : tensors) {
    std::vector<at::Tensor> one{t.is_contiguous() && t.device().is_cpu() ? t : t.contiguous().to(at::kCPU)};
    try {
      impl_->group->broadcast(one)->wait();
    } catch (const std::exception& ex) {
      std::string what = ex.what();
      throw Error(fmt::format("rank {}: broadcast failed: {}", env_.rank, what.substr(0, what.find('\n'))));
    }
    if (!one[0].is_same(t)) t.copy_(one[0]);
  }
}

}  // namespace mdx
