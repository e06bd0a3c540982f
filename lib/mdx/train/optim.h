// AdamW (Loshchilov & Hutter), as torch.optim.AdamW without amsgrad, with two parameter groups
// (weight decay on weights, none on biases, norms, tokens and positions), and the learning-rate
// schedule of MAE: linear warm-up, then half a cosine to zero. Written out here, rather than
// through torch::optim, so that its state is plain named tensors in the checkpoint.
#pragma once
#include <torch/torch.h>

#include <map>
#include <string>
#include <vector>

namespace mdx {

struct AdamWOptions {
  double lr = 1.5e-4, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.05;
};

class AdamW {
 public:
  AdamW(const std::vector<std::pair<std::string, at::Tensor>>& named_parameters, AdamWOptions options);
  void set_lr(double lr) { options_.lr = lr; }
  double lr() const { return options_.lr; }
  void step();       // with the gradients in .grad()
  void zero_grad();

  struct Slot {
    std::string name;
    at::Tensor param, exp_avg, exp_avg_sq;
    int64_t step = 0;
    bool decay = true;
  };
  std::vector<Slot>& slots() { return slots_; }

 private:
  AdamWOptions options_;
  std::vector<Slot> slots_;
};

// No weight decay on 1-D parameters (biases, norms, mask tokens) and on the CLS tokens (MAE).
bool decays(const std::string& name, const at::Tensor& param);

// Warm-up to `base_lr` over `warmup` steps, then cosine decay to 0 at `total`.
double warmup_cosine_lr(double base_lr, int64_t step, int64_t warmup, int64_t total);

// Total gradient norm (2-norm over all parameters), scaling the gradients to `max_norm` when above.
double clip_grad_norm(const std::vector<at::Tensor>& params, double max_norm);

}  // namespace mdx
