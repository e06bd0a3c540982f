#!/usr/bin/env python3
"""Make the TorchScript feature extractor of standard FID for `mdx-fid --extractor`.

Builds pytorch-fid's FID Inception-v3 (the TensorFlow "inception-2015-12-05" weights ported to
PyTorch, with pytorch-fid's patched blocks) as

    InceptionV3([3], resize_input=False, normalize_input=False)

i.e. without its own resize and [0,1] -> [-1,1] scaling: mdx-fid does both (bilinear to 299x299,
align_corners=False, then 2x-1), exactly as pytorch-fid does them inside the module. The wrapper
returns the 2048-d pool3 features as [B, 2048]; it is traced and saved with torch.jit.save.

Run it where pytorch-fid is installed (`pip install pytorch-fid`, which brings torchvision) and
its weights file is at hand; this repository cannot run it (no weights, no pytorch-fid, no network
where it is built):

    python3 inception_to_torchscript.py --weights pt_inception-2015-12-05-6726825d.pth -o inception.pt
    mdx-fid samples.h5 test.h5 --extractor inception.pt

Without --weights, pytorch-fid downloads the file itself (or takes it from the torch hub cache,
~/.cache/torch/hub/checkpoints/). The weights are at
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

Save the module with the same major PyTorch version as the LibTorch that mdx links (1.13 on
Debian 12): a module saved by a newer PyTorch may use operators an older LibTorch cannot load.
"""
import argparse
import os
import hashlib
import sys

import torch


class PoolFeatures(torch.nn.Module):
    """pytorch-fid's InceptionV3 block list -> its last output, flattened to [B, 2048]."""

    def __init__(self, inception):
        super().__init__()
        self.inception = inception

    def forward(self, x):
        return self.inception(x)[0].flatten(1)


def build(weights):
    from pytorch_fid import inception as pf  # imported here so that --help works without it

    if weights:
        # fid_inception_v3() fetches its weights through this module-level name; hand it the file.
        def load_local(url, *args, **kwargs):
            return torch.load(weights, map_location="cpu")

        pf.load_state_dict_from_url = load_local
    block = pf.InceptionV3.BLOCK_INDEX_BY_DIM[2048]
    net = pf.InceptionV3([block], resize_input=False, normalize_input=False, use_fid_inception=True)
    return PoolFeatures(net).eval()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", help="pt_inception-2015-12-05-6726825d.pth (default: pytorch-fid downloads it)")
    p.add_argument("-o", "--output", default="inception.pt", help="TorchScript file to write")
    p.add_argument("--size", type=int, default=299, help="input size to trace at (mdx-fid --size)")
    args = p.parse_args()

    model = build(args.weights)
    example = torch.rand(2, 3, args.size, args.size) * 2 - 1  # what mdx-fid feeds: [-1, 1], NCHW float32
    with torch.no_grad():
        traced = torch.jit.trace(model, example)
        expected = model(example)
        got = traced(example)
    if got.shape != (2, 2048) or not torch.allclose(got, expected, rtol=1e-5, atol=1e-6):
        sys.exit(f"tracing changed the output: shape {tuple(got.shape)}, max difference "
                 f"{(got - expected).abs().max().item():g}")
    torch.jit.save(traced, args.output)

    # The saved file gives the same features in a fresh load.
    reloaded = torch.jit.load(args.output)
    with torch.no_grad():
        assert torch.allclose(reloaded(example), expected, rtol=1e-5, atol=1e-6)
    with open(args.output, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {args.output}: [B,3,{args.size},{args.size}] in [-1,1] -> [B,2048]; sha256 {sha}")


if __name__ == "__main__":
    # One fixed hash seed: TorchScript writes a module's constants in Python-set order, so without
    # it the same weights make another file (and sha256) on every run (see fashion_mnist_extractor.py).
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "PYTHONHASHSEED": "0"})
    main()
