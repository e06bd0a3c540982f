// mdx-embed: checkpoint + image table(s) -> HDF5 embeddings.
#include "mdx/eval/embed.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-embed",
                 "Embed images with the encoder of a checkpoint (any objective): clean, unmasked input at time\n"
                 "index 0 by default, pooled to one vector per image; labels and class names are carried over.\n"
                 "Writes `embeddings` float32 [N,F] (+ `labels`) for mdx-probe.\n\n"
                 "Example:\n"
                 "  mdx-embed umd.ckpt.h5 train.h5 -o train.emb.h5\n"
                 "  mdx-embed ldae.ckpt.h5 test.h5 --t 20 -o test.emb.h5      # l-DAE probes at a small t\n"
                 "  mdx-embed umd.ckpt.h5 big.h5 --shard $SLURM_ARRAY_TASK_ID/8 -o part-$SLURM_ARRAY_TASK_ID.h5\n");
  mdx::EmbedOptions opt;
  opt.add_to(tool.app());
  return tool.run(argc, argv, [&](mdx::Provenance& prov) { mdx::embed(opt, prov); });
}
