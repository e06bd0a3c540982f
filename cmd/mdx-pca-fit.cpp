// mdx-pca-fit: image table(s) -> l-DAE patch-wise PCA tokenizer.
#include "mdx/tokenize/pca_fit.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-pca-fit", "Fit l-DAE's patch-wise PCA tokenizer: mean patch, components sorted by variance, and\n"
                 "explained variance, by eigen-decomposition (float64) of the patch covariance.\n\n"
                 "Example:\n"
                 "  mdx-pca-fit train.h5 --patch 4 --dim 8 -o pca.h5\n");
  mdx::PcaFitOptions opt;
  opt.add_to(tool.app());
  tool.cpu_only();
  return tool.run(argc, argv, [&](mdx::Provenance& prov) { mdx::pca_fit(opt, prov); });
}
