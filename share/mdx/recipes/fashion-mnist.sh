#!/bin/sh
# The Fashion-MNIST recipe: a stage-gated pipeline over the mdx tools. Re-enter at any stage:
#
#   share/mdx/recipes/fashion-mnist.sh [--stage N] [--stop-stage N] [--dir DIR] [--demo]
#                                      [--cmd LAUNCHER] [--train-cmd LAUNCHER] [--extractor FILE.pt]
#
#   stage 1  tokenize     IDX files -> train.h5, test.h5 (+ the subsets of the smaller-scale rows'
#                         probe and of the FID at demo scale)
#   stage 2  tokenizers   train.h5 -> pca.h5 (l-DAE's patch-wise PCA, 4x4 patches), vae.h5 (LMD's and
#                         latent UMD's VAE, 7x7x4 latents), vq.h5 (MAGE's VQ-VAE, 7x7 codes of 512),
#                         and classifier.pt (the neutral classifier of stage 9, trained apart)
#   stage 3  corrupt      corruption strips of every objective and mask policy -> strips/*.png
#   stage 4  pre-train    umd, mae, ldae, dit, mage (on vq.h5's codes), lmd (mae in vae.h5's latent,
#                         LMD's cosine mask schedule), latent-umd (umd in vae.h5's latent); same steps
#                         and batch -> <name>.ckpt.h5
#   stage 5  embed        each encoder on its probe tables -> emb/<objective>.{train,test}.h5
#   stage 6  probe        logistic probe of each, and of the raw pixels on the same tables ->
#                         probe/<name>.json (pixels.json: the full sets; pixels-subsets.json)
#   stage 7  fine-tune    generation fine-tune of each (class-conditional) -> gen/<objective>.ckpt.h5
#   stage 8  sample       class-conditional samples + a grid per objective -> samples/<objective>.{h5,png}
#   stage 9  fid          Frechet distance of each sample set to the test set -> fid/<name>.json, and
#                         the share of its samples the classifier names as asked -> fid/<name>.class.json
#   stage 10 report       results.md, results.json, loss-curves.png, compute.png
#
# --demo: about 15 minutes on 2 cores, in two one-thread lanes: UMD (the main row) at a scale where
# its probe and samples are real, in the background; the other rows at a smaller scale beside it.
#
# --cmd runs every command through a launcher; --train-cmd the training commands (default: --cmd).
# The templates in share/mdx/slurm/ are such launchers (they also run under plain bash):
#   --cmd "sbatch --wait share/mdx/slurm/cpu.sbatch" --train-cmd "sbatch --wait share/mdx/slurm/gpu-train.sbatch"
# --extractor names a TorchScript Inception (share/mdx/inception_to_torchscript.py) for standard FID;
# without it the distance is measured in the features of the neutral classifier of stage 2
# (share/mdx/fashion_mnist_extractor.py). MDX_BIN names the directory of the mdx binaries (default: PATH).
set -eu

stage=1
stop_stage=100
dir=exp/fashion-mnist
demo=0
cmd=""
train_cmd=""
train_cmd_set=0
extractor=""
data=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
names="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
objectives="umd mae ldae dit mage lmd latent-umd"
# What each row trains: its objective and token space.
train_args() {
  case $1 in
    ldae) echo "--objective ldae --tokenizer $dir/pca.h5" ;;
    mage) echo "--objective mage --tokenizer $dir/vq.h5" ;;
    lmd) echo "--objective mae --tokenizer $dir/vae.h5 --mask-policy lmd-cosine" ;;
    latent-umd) echo "--objective umd --tokenizer $dir/vae.h5" ;;
    *) echo "--objective $1" ;;
  esac
}

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [ $# -gt 0 ]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --demo) demo=1; shift ;;
    --cmd) cmd=$2; shift 2 ;;
    --train-cmd) train_cmd=$2; train_cmd_set=1; shift 2 ;;
    --extractor) extractor=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fashion-mnist.sh: error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ "$train_cmd_set" = 1 ] || train_cmd=$cmd

bin=${MDX_BIN:+$MDX_BIN/}
share=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$dir"
step() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }
# Each command runs as a child the shell waits for, so that a signal reaches the trap below at once
# (sh runs a trap only after its foreground command ends). SIGINT or SIGTERM stops the whole
# process group: both lanes and what they run (mdx-train checkpoints and exits 75; --resume goes on).
trap 'trap - INT TERM; kill 0' INT TERM
wait_for() {
  "$@" &
  wait $!
}
run() {
  echo "fashion-mnist.sh: $*" >&2
  wait_for $cmd "$@"
}
run_train() {
  echo "fashion-mnist.sh: $*" >&2
  wait_for $train_cmd "$@"
}
# Seconds of a command, appended to a file (the report's training times).
timed() {
  file=$1; shift
  start=$(date +%s)
  "$@"
  echo $(( $(date +%s) - start )) > "$file"
}

if [ "$demo" = 1 ]; then
  # 2 CPU cores, about 15 minutes, in two single-threaded lanes: UMD, the main row, at the scale
  # where its results are real (a 192-wide model on 7x7 patches: 16 tokens, cheap attention; ~5 min
  # pre-train, ~6 min generation fine-tune); beside it the tokenizers, the strips and the other six
  # rows at a smaller scale (the report marks them so).
  lanes=2
  main_model="--dim 192 --depth 4 --decoder-depth 2 --heads 6 --patch 7"
  main_pretrain="--steps 1000 --batch 64 --lr 1e-3 --preview-every 250 --log-every 10"
  main_finetune="--steps 800 --batch 64 --lr 1e-3 --ema 0.995 --preview-every 200 --log-every 10"
  model="--dim 128 --depth 4 --decoder-depth 2 --heads 4 --patch 7"
  # The fine-tune's EMA: a few dozen steps would barely move the objectives' 0.9999.
  pretrain="--steps 100 --batch 64 --lr 1e-3 --preview-every 0 --log-every 5"
  finetune="--steps 40 --batch 64 --lr 1e-3 --ema 0.99 --preview-every 0 --log-every 5"
  # The main row probes on the full sets, the others on the subsets (embedding all 70 000 images
  # costs a minute and a half per row).
  probe_train=10000 probe_test=2000 per_class=20 sample_steps=25 classifier_epochs=2
  # Guidance 3, not the papers' 1.5: models trained for minutes gain most of their class fidelity
  # from it (UMD's demo samples: 50 % recognized at 1.5, 64.5 % at 3).
  cfg=3
  # The tokenizers at demo scale: patch-wise (an MLP per 4x4 patch), a few hundred steps.
  coder="--form patch --patch 4 --width 128 --steps 300 --batch 128 --lr 3e-3"
else
  lanes=1
  model="--model s --patch 4"
  pretrain="--epochs 100 --batch 256"
  finetune="--epochs 20 --batch 256"
  main_model=$model main_pretrain=$pretrain main_finetune=$finetune
  probe_train=0 probe_test=0 per_class=1000 sample_steps=125 classifier_epochs=3 cfg=1.5
  coder="--epochs 3"  # conv, stride 4 (README: 26.3 dB for the VAE, 23.9 dB for the VQ on the test set)
fi
# The probe reads each of the encoder's 4 blocks (DINO's n_last_blocks): 4 x (CLS + mean) features.
embed_args="--pool cls+mean --blocks 4"
# The main row at the main scale, the others at theirs (the same in the full run).
main=umd
others=$(for o in $objectives; do [ "$o" = "$main" ] || printf '%s ' "$o"; done)
scale() {
  if [ "$1" = "$main" ]; then echo "$main_model $2"; else echo "$model $3"; fi
}

if step 1; then
  for split in train t10k; do
    out=$dir/$( [ $split = t10k ] && echo test || echo train ).h5
    run "${bin}mdx-tokenize" "$data/$split-images-idx3-ubyte.gz" --labels "$data/$split-labels-idx1-ubyte.gz" \
      --label-names "$names" -o "$out"
  done
  # The probe and FID work on the first rows of each split at demo scale (all of them otherwise).
  for split in train test; do
    limit=$probe_train
    [ $split = test ] && limit=$probe_test
    if [ "$limit" -gt 0 ]; then
      run "${bin}mdx-tokenize" "$dir/$split.h5" --limit "$limit" -o "$dir/$split-probe.h5"
    else
      ln -sf "$split.h5" "$dir/$split-probe.h5"
    fi
  done
fi

# A row's probe table of a split: the full sets for the main row, the subsets for the others (at
# full scale they are the same).
probe_table() {
  if [ "$1" = "$main" ]; then echo "$dir/$2.h5"; else echo "$dir/$2-probe.h5"; fi
}

# Stages 2, 3 and the raw pixels' probes: what the rows need besides their own pipeline.
prepare() {
  if step 2; then
    # 4x4 patches of 1 channel: D = 16; d = 8 keeps most of the variance (logged).
    run "${bin}mdx-pca-fit" "$dir/train.h5" --patch 4 --dim 8 -o "$dir/pca.h5"
    # 7x7 latent cells of 4 values (a quarter of the pixels' values), and 7x7 codes of 512.
    # shellcheck disable=SC2086
    timed "$dir/vae.seconds" run_train "${bin}mdx-vae-fit" "$dir/train.h5" $coder --latent 4 --eval "$dir/test-probe.h5" \
      -o "$dir/vae.h5" > "$dir/vae.eval.json"
    # shellcheck disable=SC2086
    timed "$dir/vq.seconds" run_train "${bin}mdx-vq-fit" "$dir/train.h5" $coder --codes 512 --eval "$dir/test-probe.h5" \
      -o "$dir/vq.h5" > "$dir/vq.eval.json"
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
    run "${bin}mdx-corrupt" "$dir/train.h5" --objective mage --tokenizer "$dir/vq.h5" --count $count \
      -o "$dir/strips/mage-codes.png"
  fi
  if step 6; then
    mkdir -p "$dir/probe"
    # The raw pixels are the baseline every representation must beat, on its own tables.
    run "${bin}mdx-probe" "$dir/train.h5" "$dir/test.h5" > "$dir/probe/pixels.json"
    if [ "$probe_train" -gt 0 ] || [ "$probe_test" -gt 0 ]; then
      run "${bin}mdx-probe" "$dir/train-probe.h5" "$dir/test-probe.h5" > "$dir/probe/pixels-subsets.json"
    fi
  fi
}

# Stage 2's neutral classifier, trained apart from every model: its features measure the Frechet
# distance of stage 9 and its head names the class of every sample.
classifier() {
  if step 2 && [ -z "$extractor" ]; then
    timed "$dir/classifier.seconds" run /usr/bin/python3 "$share/fashion_mnist_extractor.py" "$dir/train.h5" \
      "$dir/test.h5" --epochs $classifier_epochs -o "$dir/classifier.pt" > "$dir/classifier.json"
  fi
}

has() {
  case $stages in *" $1 "*) step "$1" ;; *) return 1 ;; esac
}
# pipeline STAGES ROW...: the stages named (of 4-8, within --stage..--stop-stage) of each row.
pipeline() {
  stages=" $1 "
  shift
  for objective in "$@"; do
    if has 4; then
      # shellcheck disable=SC2086
      timed "$dir/$objective.seconds" run_train "${bin}mdx-train" "$dir/train.h5" $(train_args $objective) \
        $(scale $objective "$main_pretrain" "$pretrain") -o "$dir/$objective.ckpt.h5"
    fi
    if has 5; then
      mkdir -p "$dir/emb"
      for split in train test; do
        # shellcheck disable=SC2086
        run "${bin}mdx-embed" "$dir/$objective.ckpt.h5" "$(probe_table $objective $split)" $embed_args \
          -o "$dir/emb/$objective.$split.h5"
      done
    fi
    if has 6; then
      mkdir -p "$dir/probe"
      run "${bin}mdx-probe" "$dir/emb/$objective.train.h5" "$dir/emb/$objective.test.h5" > "$dir/probe/$objective.json"
    fi
    if has 7; then
      mkdir -p "$dir/gen"
      # UMD's own generation fine-tune (SPEC: labels on, r = 0.05, no masking, AdamW beta2 0.999 and
      # no weight decay, as DiT's optimizer), in pixels or in the VAE's latent; MAGE stays MAGE, now
      # class-conditional (MaskGIT samples it); the others become class-conditional DiTs from their
      # pre-trained (raw) weights, in their token space (lmd: the VAE's latent), with the same
      # optimizer. Same steps for all rows of one scale: equal compute.
      case $objective in
        umd|latent-umd) extra="--objective umd --rep-share 0.05 --noisy-mask-ratio 0" ;;
        mage) extra="--objective mage" ;;
        *) extra="--objective dit" ;;
      esac
      # shellcheck disable=SC2086
      timed "$dir/gen/$objective.seconds" run_train "${bin}mdx-train" "$dir/train.h5" --init "$dir/$objective.ckpt.h5" \
        --class-cond --beta2 0.999 --weight-decay 0 $extra $(scale $objective "$main_finetune" "$finetune") \
        -o "$dir/gen/$objective.ckpt.h5"
    fi
    if has 8; then
      mkdir -p "$dir/samples"
      steps=$sample_steps
      [ $objective = mage ] && steps=12  # MaskGIT's iterations
      timed "$dir/samples/$objective.seconds" run "${bin}mdx-sample" "$dir/gen/$objective.ckpt.h5" \
        --per-class $per_class --steps $steps --cfg $cfg \
        -o "$dir/samples/$objective.h5" --grid "$dir/samples/$objective.png"
    fi
  done
}

if [ "$lanes" = 2 ]; then
  # One thread per lane. The main lane (in the background, its log in DIR/logs/<main>.log): the
  # classifier, the main row's pre-training, then its embedding and probe as a third process beside its
  # fine-tune and samples. This lane: the token spaces, the strips, the pixel probes, the other rows.
  mkdir -p "$dir/logs"
  export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
  main_lane() {
    classifier
    pipeline 4 "$main"
    pipeline "5 6" "$main" > "$dir/logs/$main-probe.log" 2>&1 &
    probe_job=$!
    pipeline "7 8" "$main"
    wait $probe_job || { echo "fashion-mnist.sh: error: the $main row's probe failed (see $dir/logs/$main-probe.log)" >&2; exit 1; }
  }
  echo "fashion-mnist.sh: the $main row runs in the background; its log: $dir/logs/$main.log" >&2
  main_lane > "$dir/logs/$main.log" 2>&1 &
  main_job=$!
  prepare
  # shellcheck disable=SC2086
  pipeline "4 5 6 7 8" $others
  if ! wait $main_job; then
    echo "fashion-mnist.sh: error: the $main row failed; the end of $dir/logs/$main.log:" >&2
    tail -n 20 "$dir/logs/$main.log" >&2
    exit 1
  fi
else
  prepare
  classifier
  # shellcheck disable=SC2086
  pipeline "4 5 6 7 8" $objectives
fi

if step 9; then
  mkdir -p "$dir/fid"
  # The neutral classifier's features by default (stage 2 trained it apart from every model);
  # --extractor names another TorchScript extractor (an Inception: standard FID at 299x299).
  classifier=$dir/classifier.pt
  if [ -n "$extractor" ]; then
    features="--extractor $extractor"
  else
    features="--extractor $classifier --size 28"
  fi
  # The test set's statistics once; then each sample set against them. The floor: as many
  # training images as there are samples of one objective, through the same extractor (FID is
  # biased by the sample count, so the floor uses the same count).
  # shellcheck disable=SC2086
  run "${bin}mdx-fid" "$dir/test-probe.h5" --save-stats "$dir/fid/test.stats.h5" $features > /dev/null
  run "${bin}mdx-tokenize" "$dir/train.h5" --limit $(( 10 * per_class )) -o "$dir/fid/train-floor.h5"
  # shellcheck disable=SC2086
  run "${bin}mdx-fid" "$dir/fid/train-floor.h5" "$dir/fid/test.stats.h5" $features > "$dir/fid/data.json"
  for objective in $objectives; do
    # shellcheck disable=SC2086
    run "${bin}mdx-fid" "$dir/samples/$objective.h5" "$dir/fid/test.stats.h5" $features > "$dir/fid/$objective.json"
  done
  # The share of each row's samples the classifier names as the class asked for (one JSON line per
  # table, in the order given), and of the floor's training images.
  if [ -f "$classifier" ]; then
    tables="$dir/fid/train-floor.h5"
    for objective in $objectives; do tables="$tables $dir/samples/$objective.h5"; done
    # shellcheck disable=SC2086
    run /usr/bin/python3 "$share/fashion_mnist_extractor.py" --model "$classifier" --classify $tables \
      > "$dir/fid/classified.jsonl"
    n=1
    for name in data $objectives; do
      sed -n "${n}p" "$dir/fid/classified.jsonl" > "$dir/fid/$name.class.json"
      n=$(( n + 1 ))
    done
  fi
fi

if step 10; then
  /usr/bin/python3 "$(dirname "$0")/report.py" "$dir"
fi

echo "fashion-mnist.sh: done (stages $stage..$stop_stage) in $dir" >&2
