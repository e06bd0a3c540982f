// mdx-tokenize: images, class folders, IDX files or tables -> one HDF5 image table.
#include "mdx/tokenize/tokenize.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-tokenize", "Decode images into the canonical HDF5 image table (images uint8 [N,H,W,C], labels,\n"
                 "label_names), optionally with the PCA latent of every patch.\n\n"
                 "Example:\n"
                 "  mdx-tokenize /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz \\\n"
                 "      --labels /usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz -o train.h5\n"
                 "  mdx-tokenize photos/ --size 64 --channels 3 --shard $SLURM_ARRAY_TASK_ID/8 -o part.h5\n");
  mdx::TokenizeOptions opt;
  opt.add_to(tool.app());
  tool.cpu_only();
  return tool.run(argc, argv, [&](mdx::Provenance& prov) { mdx::tokenize(opt, prov); });
}
