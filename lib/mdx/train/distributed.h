// Data-parallel training over PyTorch's c10d (Gloo: CPU tensors over TCP), configured from the
// environment that torchrun (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) or Slurm
// (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; MASTER_ADDR/MASTER_PORT set by the job script) sets.
#pragma once
#include <torch/types.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

namespace mdx {

struct DistributedEnv {
  int rank = 0, world = 1, local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool active() const { return world > 1; }
};

// Reads the environment; a single process when none of the variables is set.
DistributedEnv distributed_from_environment();

class Communicator {
 public:
  // Connects all ranks (rank 0 hosts the rendezvous store); every collective fails with an Error
  // after `timeout`, so a dead rank stops the others instead of hanging them.
  Communicator(const DistributedEnv& env, std::chrono::milliseconds timeout);
  ~Communicator();
  int rank() const { return env_.rank; }
  int world() const { return env_.world; }

  // Sums the tensors over the ranks in place (one flattened buffer, one collective).
  void all_reduce_sum(const std::vector<at::Tensor>& tensors);
  // Copies rank 0's tensors to every rank, in place.
  void broadcast(const std::vector<at::Tensor>& tensors);

 private:
  struct Impl;
  DistributedEnv env_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mdx
