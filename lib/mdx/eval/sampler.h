// Samplers: how a trained model generates tokens. mdx-sample asks the checkpoint's objective
// which family of samplers drives its models (Objective::generator(): "diffusion", "maskgit") and runs the
// one --sampler names (default: the family's first). Shared by every sampler: classifier-free
// guidance (GuidedModel), per-sample seeding (each row draws from its own generator, so sample i
// is the same whatever the batch or shard), shards and writers (sample.cpp).
//
// Adding a sampler: a class implementing Sampler (its options in a struct that SampleOptions
// holds), and one line in sampler_registry() (sampler.cpp).
#pragma once
#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mdx/model/autoencoder.h"

namespace mdx {

struct TrainedModel;
struct SampleOptions;

// Classifier-free guidance (Ho & Salimans 2022): u + s (c - u), with u the prediction for the
// null class and c for the row's class.
at::Tensor guide(const at::Tensor& cond, const at::Tensor& uncond, double scale);

// The model as a sampler calls it: on `device`, with guidance of scale `scale` (1: none) on the
// head a sampler picks (eps, x0, ...). Returns float32 on the CPU.
class GuidedModel {
 public:
  using Head = std::function<at::Tensor(const ModelOutput&)>;
  GuidedModel(TrainedModel& model, double scale, const at::Device& device);
  bool conditional() const;
  bool guided() const { return guided_; }
  const TrainedModel& model() const { return m_; }
  // tokens [B, L, D] (or int64 codes [B, L]), time_index int64 [B], labels int64 [B] (undefined when
  // unconditional), masked bool [B, L] (undefined: none) given to the model as its mask token.
  at::Tensor operator()(const at::Tensor& tokens, const at::Tensor& time_index, const at::Tensor& labels,
                        const Head& head, const at::Tensor& masked = {}) const;

 private:
  TrainedModel& m_;
  double scale_;
  bool guided_;
  at::Device device_;
};

class Sampler {
 public:
  virtual ~Sampler() = default;
  // Tokens [B, L, D] (int64 codes [B, L] of a discrete space) for B rows of `labels` (undefined:
  // unconditional); row i draws every random number from gens[i].
  virtual at::Tensor generate(const GuidedModel& model, const at::Tensor& labels,
                              std::vector<at::Generator>& gens) const = 0;
  // What the outputs record of it (name/value pairs) and one line for the log.
  virtual std::vector<std::pair<std::string, std::string>> parameters() const = 0;
  virtual std::string describe() const = 0;
};

struct SamplerEntry {
  std::string name;
  std::string family;   // the Objective::generator() whose models it drives
  std::string summary;
  std::function<std::unique_ptr<Sampler>(const SampleOptions&, const TrainedModel&)> make;
};

const std::vector<SamplerEntry>& sampler_registry();
std::string sampler_names(const char* separator = " | ");
// The sampler `name` ("auto": the first of the model's family) for `model`; throws Error when it
// cannot drive that model.
std::unique_ptr<Sampler> make_sampler(const std::string& name, const SampleOptions& opt, const TrainedModel& model);

}  // namespace mdx
