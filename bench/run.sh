#!/bin/sh
# make bench: every benchmark prints its ratios against a baseline measured in the same run.
set -e
here=$(cd "$(dirname "$0")" && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
MDX_BIN=${MDX_BIN:-$here/../build}
export MDX_BIN
echo "== mdx-tokenize: JPEG folder -> table, against PIL + numpy + h5py"
"$PYTHON" "$here/tokenize_bench.py" --bin "$MDX_BIN"
echo "== mdx-train: one training step per objective, against the same step in PyTorch (same LibTorch)"
"$PYTHON" "$here/train_step_bench.py" --bin "$MDX_BIN"
echo "== mdx-fid: Frechet distance of two 2048-d stats files, against pytorch-fid's scipy sqrtm formula"
"$PYTHON" "$here/fid_bench.py" --bin "$MDX_BIN"
echo "== mdx-probe: logistic probe of Fashion-MNIST pixels, against scikit-learn's lbfgs at the same C"
"$PYTHON" "$here/probe_bench.py" --bin "$MDX_BIN"
