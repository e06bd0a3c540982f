// mdx-sample: checkpoint -> HDF5 image table (+ PNG grid) of class-conditional samples.
#include "mdx/eval/sample.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-sample",
                 "Generate images with a trained masked-diffusion auto-encoder: DDIM (eta 1, UMD's default) or\n"
                 "DDPM ancestral sampling on a respaced schedule, classifier-free guidance u + s (c - u) with the\n"
                 "null class, EMA weights. Writes an image table (labels = the classes asked for) and/or a PNG\n"
                 "grid with a row per class.\n\n"
                 "Example:\n"
                 "  mdx-sample gen.ckpt.h5 --per-class 1000 --steps 125 --cfg 1.5 -o samples.h5 --grid samples.png\n"
                 "  mdx-sample gen.ckpt.h5 --per-class 5000 --shard $SLURM_ARRAY_TASK_ID/10 -o part-$SLURM_ARRAY_TASK_ID.h5\n");
  mdx::SampleOptions opt;
  opt.add_to(tool.app());
  return tool.run(argc, argv, [&](mdx::Provenance& prov) { mdx::sample(opt, prov); });
}
