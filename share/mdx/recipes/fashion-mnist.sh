#!/bin/sh
# The Fashion-MNIST recipe: a stage-gated pipeline over the mdx tools. Re-enter at any stage:
#
#   share/mdx/recipes/fashion-mnist.sh [--stage N] [--stop-stage N] [--dir DIR] [--demo] [--cmd LAUNCHER]
#
#   stage 1  tokenize     IDX files -> train.h5, test.h5 (images, labels, class names)
#   stage 2  pca-fit      train.h5 -> pca.h5 (l-DAE's patch-wise PCA, 4x4 patches)
#   stage 3  corrupt      corruption strips of every objective and mask policy -> strips/*.png
#
# Training, embedding, probing, generation and FID stages join as their tools land.
# --cmd runs every command through a launcher (e.g. --cmd "srun --ntasks=1"); MDX_BIN names the
# directory of the mdx binaries (default: found on PATH).
set -eu

stage=1
stop_stage=100
dir=exp/fashion-mnist
demo=0
cmd=""
data=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
names="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --demo) demo=1; shift ;;
    --cmd) cmd=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fashion-mnist.sh: error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

bin=${MDX_BIN:+$MDX_BIN/}
mkdir -p "$dir"
step() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
run() {
  echo "fashion-mnist.sh: $*" >&2
  $cmd "$@"
}

if step 1; then
  for split in train t10k; do
    out=$dir/$( [ $split = t10k ] && echo test || echo train ).h5
    run "${bin}mdx-tokenize" "$data/$split-images-idx3-ubyte.gz" --labels "$data/$split-labels-idx1-ubyte.gz" \
      --label-names "$names" -o "$out"
  done
fi

if step 2; then
  # 4x4 patches of 1 channel: D = 16; d = 8 keeps most of the variance (logged).
  run "${bin}mdx-pca-fit" "$dir/train.h5" --patch 4 --dim 8 -o "$dir/pca.h5"
fi

if step 3; then
  mkdir -p "$dir/strips"
  count=8
  [ "$demo" = 1 ] && count=6
  run "${bin}mdx-corrupt" "$dir/train.h5" --objective umd --count $count -o "$dir/strips/umd.png"
  run "${bin}mdx-corrupt" "$dir/train.h5" --objective mae --mask-ratio 0.25,0.5,0.75,0.9 --count $count \
    -o "$dir/strips/mae.png"
  run "${bin}mdx-corrupt" "$dir/train.h5" --objective mae --mask-policy mage --count $count -o "$dir/strips/mage.png"
  for policy in lmd-cosine lmd-piecewise lmd-linear; do
    run "${bin}mdx-corrupt" "$dir/train.h5" --objective mae --mask-policy $policy --count $count \
      -o "$dir/strips/$policy.png"
  done
  run "${bin}mdx-corrupt" "$dir/train.h5" --objective ldae --tokenizer "$dir/pca.h5" --count $count \
    -o "$dir/strips/ldae.png"
  run "${bin}mdx-corrupt" "$dir/train.h5" --objective dit --count $count -o "$dir/strips/dit.png"
fi

echo "fashion-mnist.sh: done (stages $stage..$stop_stage) in $dir:" >&2
ls -l "$dir" "$dir/strips" 2>/dev/null | sed 's/^/  /' >&2
