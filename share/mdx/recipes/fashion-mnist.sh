#!/bin/sh
# The Fashion-MNIST recipe: a stage-gated pipeline over the mdx tools. Re-enter at any stage:
#
#   share/mdx/recipes/fashion-mnist.sh [--stage N] [--stop-stage N] [--dir DIR] [--demo] [--cmd LAUNCHER]
#
#   stage 1  tokenize     IDX files -> train.h5, test.h5 (images, labels, class names)
#   stage 2  pca-fit      train.h5 -> pca.h5 (l-DAE's patch-wise PCA, 4x4 patches)
#   stage 3  corrupt      corruption strips of every objective and mask policy -> strips/*.png
#   stage 4  pre-train    umd, mae, ldae, dit at equal steps -> <objective>.ckpt.h5 (+ metrics, preview)
#   stage 5  report       results table (final loss, images/s, training time) -> results.md, results.json
#
# Embedding, probing, generation and FID stages join as their tools land.
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

if [ "$demo" = 1 ]; then
  # 2 CPU cores, minutes: a small model for a few hundred steps.
  model="--dim 128 --depth 4 --decoder-depth 2 --heads 4"
  train_len="--steps 200 --batch 64 --lr 1e-3 --ema 0.99 --preview-every 50"
else
  model="--model s"
  train_len="--epochs 100 --batch 256"
fi

if step 4; then
  for objective in umd mae ldae dit; do
    extra=""
    [ $objective = ldae ] && extra="--tokenizer $dir/pca.h5"
    start=$(date +%s)
    # shellcheck disable=SC2086
    run "${bin}mdx-train" "$dir/train.h5" --objective $objective $model $train_len $extra --patch 4 \
      -o "$dir/$objective.ckpt.h5"
    echo $(( $(date +%s) - start )) > "$dir/$objective.seconds"
  done
fi

if step 5; then
  # The last metrics line of each run, and its wall time.
  /usr/bin/python3 - "$dir" <<'PY'
import json, os, sys
d = sys.argv[1]
rows = []
for o in ("umd", "mae", "ldae", "dit"):
    m = os.path.join(d, f"{o}.ckpt.metrics.jsonl")
    if not os.path.exists(m):
        continue
    lines = [json.loads(l) for l in open(m)]
    secs = open(os.path.join(d, f"{o}.seconds")).read().strip() if os.path.exists(os.path.join(d, f"{o}.seconds")) else ""
    speed = sum(l["images_per_s"] for l in lines[-5:]) / len(lines[-5:])
    rows.append({"objective": o, "steps": lines[-1]["step"], "first_loss": lines[0]["loss"],
                 "final_loss": lines[-1]["loss"], "images_per_s": round(speed, 1),
                 "train_seconds": int(secs) if secs else None})
json.dump(rows, open(os.path.join(d, "results.json"), "w"), indent=1)
md = ["| objective | steps | first loss | final loss | images/s | training s |", "|---|---:|---:|---:|---:|---:|"]
md += [f"| {r['objective']} | {r['steps']} | {r['first_loss']:.4f} | {r['final_loss']:.4f} | {r['images_per_s']:.0f} | {r['train_seconds']} |" for r in rows]
open(os.path.join(d, "results.md"), "w").write("\n".join(md) + "\n")
print("\n".join(md))
PY
fi

echo "fashion-mnist.sh: done (stages $stage..$stop_stage) in $dir:" >&2
ls -l "$dir" "$dir/strips" 2>/dev/null | sed 's/^/  /' >&2
