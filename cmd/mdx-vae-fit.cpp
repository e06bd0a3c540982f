// mdx-vae-fit: image table(s) -> a KL auto-encoder tokenizer (kind vae), on mdx-train's frame.
#include <iostream>

#include "mdx/tokenize/fit.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-vae-fit",
                 "Fit a KL auto-encoder tokenizer (reconstruction + beta KL): a convolutional one (--form conv,\n"
                 "--stride pixels per latent cell) or a patch-wise one (--form patch, l-DAE's patch-wise VAE;\n"
                 "--beta 0: its patch-wise AE). Writes a checkpoint that every --tokenizer accepts, with the\n"
                 "latent scale that makes the training latents unit-variance; SIGINT/SIGTERM write it and\n"
                 "exit 75, --resume continues.\n\n"
                 "Example:\n"
                 "  mdx-vae-fit train.h5 --stride 4 --latent 4 --epochs 10 --eval test.h5 -o vae.h5\n");
  mdx::VaeFitOptions opt;
  opt.add_to(tool.app());
  return tool.run(argc, argv, [&](mdx::Provenance& prov) {
    mdx::fit_precision(tool.common().precision, prov);
    if (auto benchmark = mdx::vae_fit(opt, prov)) std::cout << benchmark->to_json() << std::endl;
  });
}
