#include "mdx/corrupt/objective_options.h"

#include "mdx/util/error.h"

namespace mdx {

void CorruptionOptions::add_to(CLI::App& app) {
  app.add_option("--objective", objective, "umd | mae | ldae | dit")->capture_default_str();
  app.add_option("--schedule", schedule,
                 "noise schedule: linear | cosine | ldae-gamma | ldae-sigma | single "
                 "(default: umd cosine, dit linear, ldae ldae-gamma)");
  app.add_option("--timesteps", timesteps, "number of diffusion timesteps T")->capture_default_str();
  app.add_option("--mask-policy", mask_policy, "fixed | mage | lmd-cosine | lmd-piecewise | lmd-linear")
      ->capture_default_str();
  app.add_option("--noisy-mask-ratio", noisy_mask_ratio, "UMD's noisy-step mask ratio")->capture_default_str();
  app.add_option("--tokenizer", tokenizer, "PCA tokenizer from mdx-pca-fit (ldae; sets the patch size)");
}

ObjectiveConfig CorruptionOptions::resolve() const {
  ObjectiveConfig c = ObjectiveConfig::defaults(parse_objective(objective));
  if (!schedule.empty()) c.schedule = parse_schedule(schedule);
  if (timesteps < 1) throw UsageError("--timesteps must be at least 1");
  c.steps = timesteps;
  c.mask_policy = parse_mask_policy(mask_policy);
  if (!(noisy_mask_ratio >= 0 && noisy_mask_ratio <= 1)) throw UsageError("--noisy-mask-ratio must lie in [0, 1]");
  c.noisy_mask_ratio = noisy_mask_ratio;
  if (c.mask_policy != MaskPolicy::Fixed && !c.masks())
    throw UsageError("--mask-policy applies to the masked objectives (umd, mae)");
  if (c.kind == ObjectiveKind::Ldae && tokenizer.empty())
    throw UsageError("--objective ldae needs --tokenizer (made by mdx-pca-fit)");
  return c;
}

}  // namespace mdx
