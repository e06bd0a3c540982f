// mdx-probe: train + test features (embeddings or raw pixels) -> JSON report of a linear probe.
#include <iostream>

#include "mdx/eval/probe.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-probe", "Probe features with a linear classifier: fit on TRAIN, report accuracy on TEST as JSON on\n"
                 "stdout. Each input is an embeddings file (mdx-embed) or an image table, probed on its raw\n"
                 "pixels (the baseline a representation must beat). Methods: multinomial logistic regression\n"
                 "(L-BFGS, L2 chosen on a held-out split), closed-form ridge (few-shot), cosine k-NN.\n\n"
                 "Example:\n"
                 "  mdx-probe train.emb.h5 test.emb.h5 -o probe.h5 > probe.json\n"
                 "  mdx-probe train.emb.h5 test.emb.h5 --method ridge --shots 10 --seed 1\n");
  mdx::ProbeOptions opt;
  opt.add_to(tool.app());
  tool.cpu_only();
  return tool.run(argc, argv, [&](mdx::Provenance& prov) {
    std::cout << mdx::probe(opt, prov).to_json() << std::endl;  // the report on stdout; logs go to stderr
  });
}
