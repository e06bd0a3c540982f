// mdx-corrupt: show what an objective does to images (a PNG grid), or write it to HDF5.
#include "mdx/corrupt/corrupt_tool.h"
#include "mdx/util/tool.h"

int main(int argc, char** argv) {
  mdx::Tool tool("mdx-corrupt",
                 "Apply an objective's corruption (noise at timesteps, masks at ratios) to images: a PNG\n"
                 "grid with a row per image and a column per corruption, masked patches in colour and the\n"
                 "parameters in text chunks; or, with -o X.h5, the corrupted images, masks and timesteps.\n\n"
                 "Example:\n"
                 "  mdx-corrupt train.h5 --objective umd --t 0,250,500,750,999 --count 8 -o umd-strip.png\n"
                 "  mdx-corrupt train.h5 --objective mae --mask-policy lmd-cosine -o lmd.png\n");
  mdx::CorruptOptions opt;
  opt.add_to(tool.app());
  tool.cpu_only();
  return tool.run(argc, argv, [&](mdx::Provenance& prov) { mdx::corrupt(opt, prov); });
}
