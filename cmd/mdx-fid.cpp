// mdx-fid: two image tables (or saved statistics) -> Fréchet distance of their features, as JSON.
#include <iostream>

#include "mdx/eval/fid.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-fid",
                 "Fréchet distance between the Gaussians of two image sets' features, computed as pytorch-fid\n"
                 "computes it. Features come from a TorchScript module (--extractor; pytorch-fid's Inception-v3\n"
                 "gives standard FID) or from an mdx checkpoint's encoder (--encoder). Either input may be\n"
                 "statistics saved with --save-stats. Prints one JSON object on stdout.\n\n"
                 "Example:\n"
                 "  mdx-fid samples.h5 test.h5 --extractor inception.pt\n"
                 "  mdx-fid test.h5 --extractor inception.pt --save-stats test.stats.h5\n"
                 "  mdx-fid samples.h5 test.stats.h5 --extractor inception.pt\n"
                 "  mdx-fid samples.h5 test.h5 --encoder umd.ckpt.h5      # not comparable to published FIDs\n");
  mdx::FidOptions opt;
  opt.add_to(tool.app());
  return tool.run(argc, argv, [&](mdx::Provenance& prov) {
    std::cout << mdx::fid(opt, prov).to_json() << std::endl;  // the report on stdout; logs go to stderr
  });
}
