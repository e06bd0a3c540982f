// The objectives by name, and the options that choose one.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cmath>

#include "mdx/corrupt/objectives/objectives.h"
#include "mdx/util/error.h"

namespace mdx {

const std::vector<ObjectiveEntry>& objective_registry() {
  static const std::vector<ObjectiveEntry> entries = {
      umd_objective(),
      mae_objective(),
      ldae_objective(),
      dit_objective(),
      mage_objective(),
  };
  return entries;
}

std::string objective_names(const char* separator) {
  std::string s;
  for (const auto& e : objective_registry()) s += (s.empty() ? "" : separator) + e.name;
  return s;
}

const ObjectiveEntry& find_objective(const std::string& name) {
  for (const auto& e : objective_registry())
    if (e.name == name) return e;
  throw UsageError(fmt::format("unknown objective '{}' ({})", name, objective_names(", ")));
}

std::unique_ptr<Objective> make_objective(const std::string& name, const ObjectiveSettings& settings,
                                          std::unique_ptr<ObjectiveParams> params) {
  const ObjectiveEntry& e = find_objective(name);
  if (!params) params = e.params();
  params->validate();
  std::unique_ptr<Objective> o = e.make(settings, *params);
  o->params_ = std::move(params);
  return o;
}

double config_double(const std::map<std::string, std::string>& config, const std::string& key, double fallback) {
  auto it = config.find(key);
  if (it == config.end()) return fallback;
  char* end = nullptr;
  const double v = std::strtod(it->second.c_str(), &end);
  if (it->second.empty() || *end != '\0' || !std::isfinite(v))
    throw Error(fmt::format("the configuration's '{}' is '{}', not a number", key, it->second));
  return v;
}

bool config_flag(const std::map<std::string, std::string>& config, const std::string& key, bool fallback) {
  auto it = config.find(key);
  if (it == config.end()) return fallback;
  if (it->second != "0" && it->second != "1")
    throw Error(fmt::format("the configuration's '{}' is '{}', not 0 or 1", key, it->second));
  return it->second == "1";
}

std::unique_ptr<Objective> objective_from_config(const std::map<std::string, std::string>& config) {
  auto get = [&](const char* key, const std::string& fallback) {
    auto it = config.find(key);
    return it == config.end() ? fallback : it->second;
  };
  const ObjectiveEntry& e = find_objective(get("objective", "umd"));
  ObjectiveSettings s;
  const std::string schedule = get("schedule", "none");
  s.schedule = schedule == "none" ? e.schedule : parse_schedule(schedule);
  const double steps = config_double(config, "timesteps", 1000);
  if (!(steps >= 1 && steps <= kMaxTimesteps && steps == std::floor(steps)))
    throw Error(fmt::format("the configuration's 'timesteps' is {}, not a count in [1, {}]", steps, kMaxTimesteps));
  s.steps = static_cast<int64_t>(steps);
  s.mask_policy = parse_mask_policy(get("mask_policy", mask_policy_name(e.mask_policy)));
  s.mask_ratio = config_double(config, "mask_ratio", s.mask_ratio);
  std::unique_ptr<ObjectiveParams> params = e.params();
  params->load(config);
  return make_objective(e.name, s, std::move(params));
}

ObjectiveOptions::ObjectiveOptions() {
  for (const auto& e : objective_registry()) params.emplace_back(e.name, e.params());
}

void ObjectiveOptions::add_to(CLI::App& app, bool training) {
  std::string help;
  for (const auto& e : objective_registry()) help += fmt::format("{}{}: {}", help.empty() ? "" : "; ", e.name, e.summary);
  app.add_option("--objective", objective, objective_names() + " (" + help + ")")->capture_default_str();
  std::string defaults;
  for (const auto& e : objective_registry())
    defaults += fmt::format("{}{} {}{}", defaults.empty() ? "" : ", ", e.name, schedule_name(e.schedule),
                            e.latent_schedule ? fmt::format(" ({} in a VAE's latent)", schedule_name(*e.latent_schedule))
                                              : "");
  app.add_option("--schedule", schedule,
                 "noise schedule: linear | cosine | ldae-gamma | ldae-sigma | single (default: " + defaults + ")");
  app.add_option("--timesteps", timesteps, "number of diffusion timesteps T")->capture_default_str();
  app.add_option("--mask-policy", mask_policy,
                 "auto (the objective's: mage for mage, else fixed) | fixed | mage | lmd-cosine | lmd-piecewise | "
                 "lmd-linear")
      ->capture_default_str();
  if (training)
    app.add_option("--mask-ratio", mask_ratio, "mask ratio (MAE; UMD's representation step) under the fixed policy")
        ->capture_default_str();
  app.add_option("--tokenizer", tokenizer,
                 "tokenizer file: the token space (a VAE or VQ from mdx-vae-fit / mdx-vq-fit, a TorchScript module, "
                 "a PCA from mdx-pca-fit; for ldae the PCA latent it noises in; mage needs a VQ)");
  for (auto& [name, p] : params) p->add_to(app, training);
}

ObjectiveSettings ObjectiveOptions::settings(bool learned_latent) const {
  const ObjectiveEntry& e = find_objective(objective);
  ObjectiveSettings s;
  s.schedule = !schedule.empty()                        ? parse_schedule(schedule)
               : learned_latent && e.latent_schedule ? *e.latent_schedule
                                                     : e.schedule;
  if (timesteps < 1) throw UsageError("--timesteps must be at least 1");
  if (timesteps > kMaxTimesteps) throw UsageError(fmt::format("--timesteps must be at most {}", kMaxTimesteps));
  s.steps = timesteps;
  s.mask_policy = mask_policy == "auto" ? e.mask_policy : parse_mask_policy(mask_policy);
  if (!(mask_ratio >= 0 && mask_ratio <= 1)) throw UsageError("--mask-ratio must lie in [0, 1]");
  s.mask_ratio = mask_ratio;
  return s;
}

std::unique_ptr<Objective> ObjectiveOptions::make(bool learned_latent) const {
  const ObjectiveSettings s = settings(learned_latent);
  std::unique_ptr<ObjectiveParams> own;
  for (const auto& [name, p] : params) {
    if (name != objective) continue;
    // The registry's fresh copy, loaded with this one's values through the configuration form.
    std::map<std::string, std::string> c;
    p->save(c);
    own = find_objective(name).params();
    own->load(c);
  }
  std::unique_ptr<Objective> o = make_objective(objective, s, std::move(own));
  if (s.mask_policy != MaskPolicy::Fixed && !o->masks()) {
    std::string masked;
    for (const auto& e : objective_registry())
      if (make_objective(e.name, ObjectiveSettings{})->masks()) masked += (masked.empty() ? "" : ", ") + e.name;
    throw UsageError("--mask-policy applies to the masked objectives (" + masked + ")");
  }
  return o;
}

}  // namespace mdx
