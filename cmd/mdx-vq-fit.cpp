// mdx-vq-fit: image table(s) -> a VQ-VAE tokenizer (kind vq, discrete codes), on mdx-train's frame.
#include <iostream>

#include "mdx/tokenize/fit.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-vq-fit",
                 "Fit a VQ-VAE tokenizer: a convolutional (or patch-wise) encoder, a codebook of --codes vectors\n"
                 "initialized by k-means and updated by EMA, a straight-through estimator, the commitment loss,\n"
                 "and restarts of dead codes. Logs codebook usage and perplexity; writes a checkpoint that every\n"
                 "--tokenizer accepts (codes for MAGE); SIGINT/SIGTERM write it and exit 75, --resume continues.\n\n"
                 "Example:\n"
                 "  mdx-vq-fit train.h5 --codes 512 --latent 16 --stride 4 --epochs 10 --eval test.h5 -o vq.h5\n");
  mdx::VqFitOptions opt;
  opt.add_to(tool.app());
  return tool.run(argc, argv, [&](mdx::Provenance& prov) {
    mdx::fit_precision(tool.common().precision, prov);
    if (auto benchmark = mdx::vq_fit(opt, prov)) std::cout << benchmark->to_json() << std::endl;
  });
}
