// mdx-train: image table(s) -> checkpoint, under the umd, mae, ldae or dit objective.
#include <iostream>

#include "mdx/train/train.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-train",
                 "Train a masked-diffusion auto-encoder: UMD (default), MAE, l-DAE or DiT, with MAGE's or\n"
                 "LMD's mask-ratio policies. Writes an HDF5 checkpoint (weights, EMA, optimizer, RNG, the\n"
                 "whole configuration), a JSON-lines metrics log and a reconstruction preview beside it.\n"
                 "SIGINT/SIGTERM write a checkpoint and exit 75; --resume continues.\n\n"
                 "Example:\n"
                 "  mdx-train train.h5 --objective umd --model s --patch 4 --epochs 100 -o umd.ckpt.h5\n"
                 "  mdx-train train.h5 --init umd.ckpt.h5 --class-cond --rep-share 0.05 --noisy-mask-ratio 0 \\\n"
                 "      --ema 0.9999 --steps 20000 -o gen.ckpt.h5     # UMD's generation fine-tune\n");
  mdx::TrainOptions opt;
  opt.add_to(tool.app());
  return tool.run(argc, argv, [&](mdx::Provenance& prov) {
    if (auto benchmark = mdx::train(opt, prov)) std::cout << benchmark->to_json() << std::endl;
  });
}
