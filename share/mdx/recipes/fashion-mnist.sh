#!/bin/sh
# The Fashion-MNIST recipe: a stage-gated pipeline over the mdx tools. Re-enter at any stage:
#
#   share/mdx/recipes/fashion-mnist.sh [--stage N] [--stop-stage N] [--dir DIR] [--demo | --compare]
#                                      [--budget PRE,FT] [--seeds N] [--rows ROWS]
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
#                         (and scikit-learn's 5-NN on pixels, share/mdx/pixel_knn.py -> fid/<name>.knn.json)
#   stage 10 report       results.md, results.json, loss-curves.png, compute.png
#
# --demo: about 15 minutes on 2 cores, in two one-thread lanes: UMD (the main row) at a scale where
# its probe and samples are real, in the background; the other rows at a smaller scale beside it.
#
# --compare: every row at the main scale (the demo's UMD model) and at equal training compute: UMD's
# PRE pre-training and FT fine-tuning steps of 64 (--budget, default 1000,800: the demo's main row) set
# the model FLOPs of each phase (mdx-train --benchmark's step_gflop), and every other row takes the
# steps that cost the same; a fine-tune of N steps keeps an EMA of decay 1 - 4/N. Probes on the full sets; 10 000 samples per row (five draws of 2 000,
# seeds 0-4: the spread of the sampling seed) against all 10 000 test images, 10 000 training images
# as the floor; the checkpoints kept at half of each phase give each curve a second point (a probe;
# 2 000 samples). --seeds N adds training seeds 1..N-1 of umd and dit (rows umd-seed1, ...): the
# spread of the training seed. --rows limits the rows (default: all). Two one-thread lanes: umd and
# dit (and their seeds) in one, the others in the other after the token spaces; rows without umd or
# dit alternate between the lanes once the token spaces are made.
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
compare=0
budget=1000,800
seeds=1
rows=""
cmd=""
train_cmd=""
train_cmd_set=0
extractor=""
data=${FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
names="T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
objectives="umd mae ldae dit mage lmd latent-umd"
# A row is an objective, or an objective and a training seed (umd-seed1).
base() { echo "${1%-seed*}"; }
seed_args() { case $1 in *-seed*) echo "--seed ${1##*-seed}" ;; esac; }
# What each row trains: its objective and token space (and seed).
train_args() {
  seed_args "$1"
  case $(base "$1") in
    ldae) echo "--objective ldae --tokenizer $dir/pca.h5" ;;
    mage) echo "--objective mage --tokenizer $dir/vq.h5" ;;
    lmd) echo "--objective mae --tokenizer $dir/vae.h5 --mask-policy lmd-cosine" ;;
    latent-umd) echo "--objective umd --tokenizer $dir/vae.h5" ;;
    *) echo "--objective $(base "$1")" ;;
  esac
}

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
while [ $# -gt 0 ]; do
  case $1 in
    --stage) stage=$2; shift 2 ;;
    --stop-stage) stop_stage=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    --demo) demo=1; shift ;;
    --compare) compare=1; shift ;;
    --budget) budget=$2; shift 2 ;;
    --seeds) seeds=$2; shift 2 ;;
    --rows) rows=$2; shift 2 ;;
    --cmd) cmd=$2; shift 2 ;;
    --train-cmd) train_cmd=$2; train_cmd_set=1; shift 2 ;;
    --extractor) extractor=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "fashion-mnist.sh: error: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ "$train_cmd_set" = 1 ] || train_cmd=$cmd
if [ "$demo" = 1 ] && [ "$compare" = 1 ]; then
  echo "fashion-mnist.sh: error: --demo and --compare are two scales: give one" >&2; exit 2
fi
case $budget in
  *[!0-9,]*|*,*,*) budget_ok=0 ;;
  [0-9]*,[0-9]*) budget_ok=1 ;;
  *) budget_ok=0 ;;
esac
if [ "$budget_ok" = 0 ]; then
  echo "fashion-mnist.sh: error: --budget takes PRE,FT steps (e.g. 1000,800), not '$budget'" >&2; exit 2
fi
case $seeds in
  ""|*[!0-9]*|0) echo "fashion-mnist.sh: error: --seeds takes a count >= 1, not '$seeds'" >&2; exit 2 ;;
esac
# The stages pass lists of paths (and name:path pairs) as words: a blank in the directory would
# split them.
case $dir in
  ""|*[[:space:]]*) echo "fashion-mnist.sh: error: --dir '$dir': give a directory whose path has no blanks" >&2; exit 2 ;;
esac

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
# Seconds of a command, into a file (the report's training times).
timed() {
  timed_file=$1; shift
  timed_start=$(date +%s)
  "$@"
  echo $(( $(date +%s) - timed_start )) > "$timed_file"
}
# A command's standard output into a file, whole or not at all: an interrupted or failed command
# leaves no truncated report for a later stage to read.
into() {
  into_file=$1; shift
  if "$@" > "$into_file.tmp"; then
    mv "$into_file.tmp" "$into_file"
  else
    into_status=$?
    rm -f "$into_file.tmp"
    return $into_status
  fi
}

draws=1  # sample draws per row (seeds 0, 1, ...), each --per-class $per_class
half=0   # 1: the checkpoints at half of each phase are evaluated too (--compare's curves)
if [ "$demo" = 1 ] || [ "$compare" = 1 ]; then
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
  if [ "$compare" = 1 ]; then
    # Every row at the main scale; the steps of each phase come from the --budget (equal_steps).
    model=$main_model
    pretrain="--batch 64 --lr 1e-3 --preview-every 0 --log-every 10"
    # The fine-tune's EMA decay comes with its steps (phase_args): 1 - 4/steps.
    finetune="--batch 64 --lr 1e-3 --preview-every 0 --log-every 10"
    main_pretrain=$pretrain main_finetune=$finetune
    probe_train=0 probe_test=0 per_class=200 draws=5 half=1
  fi
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
if [ "$compare" = 1 ]; then
  # The training seeds of umd and dit beyond the first, as rows of their own.
  n=1
  while [ $n -lt "$seeds" ]; do objectives="$objectives umd-seed$n dit-seed$n"; n=$(( n + 1 )); done
  if [ -n "$rows" ]; then
    for r in $(echo "$rows" | tr , ' '); do
      case " $objectives " in *" $r "*) ;; *) echo "fashion-mnist.sh: error: --rows: no row '$r' (rows: $objectives)" >&2; exit 2 ;; esac
    done
    objectives=$(echo "$rows" | tr , ' ')
  fi
fi
others=$(for o in $objectives; do [ "$o" = "$main" ] || printf '%s ' "$o"; done)
scale() {
  if [ "$1" = "$main" ]; then echo "$main_model $2"; else echo "$model $3"; fi
}

# --compare's measure of compute: the model FLOPs of a step (mdx-train --benchmark's step_gflop),
# measured once per row and phase into DIR/flops/<row>.<phase>.json. step_gflop NAME ARGS...
step_gflop() {
  name=$1; shift
  mkdir -p "$dir/flops"
  json=$dir/flops/$name.json
  if [ ! -s "$json" ]; then
    into "$json" run_train "${bin}mdx-train" "$dir/train.h5" "$@" --benchmark 4 -o "$dir/flops/$name.ckpt.h5"
  fi
  /usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["step_gflop"])' "$json"
}
# The steps of a row's phase that cost what UMD's steps of that phase (--budget) cost: equal_steps
# ROW PHASE ARGS... (ARGS: the phase's training arguments, without --steps).
equal_steps() {
  row=$1 phase=$2; shift 2
  # shellcheck disable=SC2046
  ref=$(step_gflop "reference.$phase" $(phase_reference "$phase"))
  own=$(step_gflop "$(base "$row").$phase" "$@")
  case $phase in pretrain) n=${budget%,*} ;; *) n=${budget#*,} ;; esac
  awk -v n="$n" -v ref="$ref" -v own="$own" 'BEGIN { printf "%d\n", n * ref / own + 0.5 }'
}
# UMD's phases in pixels: the reference of equal compute.
phase_reference() {
  case $1 in
    pretrain) echo "--objective umd $model $pretrain" ;;
    finetune) echo "--objective umd --class-cond --rep-share 0.05 --noisy-mask-ratio 0 --beta2 0.999 --weight-decay 0 $model $finetune" ;;
  esac
}
# The arguments of a row's phase: its scale's, and at --compare the steps of equal compute and a
# checkpoint kept at half of them. phase_args ROW PHASE ARGS... (ARGS: what the phase trains).
phase_args() {
  row=$1 phase=$2; shift 2
  if [ "$phase" = pretrain ]; then own=$(scale "$row" "$main_pretrain" "$pretrain"); else own=$(scale "$row" "$main_finetune" "$finetune"); fi
  if [ "$compare" = 1 ]; then
    # shellcheck disable=SC2086
    n=$(equal_steps "$row" "$phase" "$@" $own)
    ema=""
    # The fine-tune's EMA decay from its steps: 1 - 4/steps (0.995 at UMD's 800, the demo's), so that
    # every row's EMA keeps the same share of its first weights at the end, (1 - 4/n)^n ~ e^-4 =
    # 1.8 %, and averages the same last quarter or so of its steps. One decay for all would favour the
    # rows with many steps: at 0.995 a row of 285 steps keeps 24 % of the weights it started from,
    # and a start that is no generator (an l-DAE's, an LMD's encoder) leaves its samples noise.
    [ "$phase" = finetune ] && ema="--ema $(awk -v n="$n" 'BEGIN { d = 1 - 4 / n; printf "%.6g\n", (d > 0 ? d : 0) }')"
    echo "$own --steps $n --keep-every $(( (n + 1) / 2 )) $ema"
  else
    echo "$own"
  fi
}
# The checkpoint kept at half of a phase (--compare): the one <stem>.step<N>.h5 beside it.
half_of() {
  set -- "$1" "${1%.h5}".step*.h5
  if [ ! -f "$2" ]; then
    echo "fashion-mnist.sh: error: no checkpoint kept beside $1 (trained without --compare?)" >&2
    exit 1
  fi
  echo "$2"
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
    timed "$dir/vae.seconds" into "$dir/vae.eval.json" run_train "${bin}mdx-vae-fit" "$dir/train.h5" $coder --latent 4 \
      --eval "$dir/test-probe.h5" -o "$dir/vae.h5"
    # shellcheck disable=SC2086
    timed "$dir/vq.seconds" into "$dir/vq.eval.json" run_train "${bin}mdx-vq-fit" "$dir/train.h5" $coder --codes 512 \
      --eval "$dir/test-probe.h5" -o "$dir/vq.h5"
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
    into "$dir/probe/pixels.json" run "${bin}mdx-probe" "$dir/train.h5" "$dir/test.h5"
    if [ "$probe_train" -gt 0 ] || [ "$probe_test" -gt 0 ]; then
      into "$dir/probe/pixels-subsets.json" run "${bin}mdx-probe" "$dir/train-probe.h5" "$dir/test-probe.h5"
    fi
  fi
}

# Stage 2's neutral classifier, trained apart from every model: its features measure the Frechet
# distance of stage 9 and its head names the class of every sample.
classifier() {
  if step 2 && [ -z "$extractor" ]; then
    # Its test accuracy, seed and epochs travel inside classifier.pt (and in every --classify line).
    timed "$dir/classifier.seconds" run /usr/bin/python3 "$share/fashion_mnist_extractor.py" \
      "$dir/train.h5" "$dir/test.h5" --epochs $classifier_epochs -o "$dir/classifier.pt"
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
      trains=$(train_args "$objective")
      # shellcheck disable=SC2086
      args=$(phase_args "$objective" pretrain $trains)
      # shellcheck disable=SC2086
      timed "$dir/$objective.seconds" run_train "${bin}mdx-train" "$dir/train.h5" $trains $args \
        -o "$dir/$objective.ckpt.h5"
    fi
    # The final checkpoint, and at --compare the one kept at half of the phase (name.half).
    evaluated="$objective:$dir/$objective.ckpt.h5"
    if [ "$half" = 1 ] && has 5; then evaluated="$evaluated $objective.half:$(half_of "$dir/$objective.ckpt.h5")"; fi
    for point in $evaluated; do
      name=${point%%:*} ckpt=${point#*:}
      if has 5; then
        mkdir -p "$dir/emb"
        for split in train test; do
          # shellcheck disable=SC2086
          run "${bin}mdx-embed" "$ckpt" "$(probe_table $objective $split)" $embed_args \
            -o "$dir/emb/$name.$split.h5"
        done
      fi
      if has 6; then
        mkdir -p "$dir/probe"
        into "$dir/probe/$name.json" run "${bin}mdx-probe" "$dir/emb/$name.train.h5" "$dir/emb/$name.test.h5"
        # At --compare the features are read once: 1.5 GB per row, kept no longer.
        if [ "$compare" = 1 ]; then rm -f "$dir/emb/$name.train.h5" "$dir/emb/$name.test.h5"; fi
      fi
    done
    if has 7; then
      mkdir -p "$dir/gen"
      # UMD's own generation fine-tune (SPEC: labels on, r = 0.05, no masking, AdamW beta2 0.999 and
      # no weight decay, as DiT's optimizer), in pixels or in the VAE's latent; MAGE stays MAGE, now
      # class-conditional (MaskGIT samples it); the others become class-conditional DiTs from their
      # pre-trained (raw) weights, in their token space (lmd: the VAE's latent), with the same
      # optimizer. Same steps for all rows of one scale: equal compute.
      case $(base "$objective") in
        umd|latent-umd) extra="--objective umd --rep-share 0.05 --noisy-mask-ratio 0" ;;
        mage) extra="--objective mage" ;;
        *) extra="--objective dit" ;;
      esac
      tune="--init $dir/$objective.ckpt.h5 --class-cond --beta2 0.999 --weight-decay 0 $extra $(seed_args "$objective")"
      # shellcheck disable=SC2086
      args=$(phase_args "$objective" finetune $tune)
      # shellcheck disable=SC2086
      timed "$dir/gen/$objective.seconds" run_train "${bin}mdx-train" "$dir/train.h5" $tune $args \
        -o "$dir/gen/$objective.ckpt.h5"
    fi
    if has 8; then
      mkdir -p "$dir/samples"
      steps=$sample_steps
      [ $objective = mage ] && steps=12  # MaskGIT's iterations
      # One draw into samples/<row>.h5; at --compare draws of the sampling seeds 0, 1, ... (each a
      # set of its own, for the spread), then one table of them all. The grid shows the first.
      draws_start=$(date +%s)
      d=0 parts=""
      while [ $d -lt "$draws" ]; do
        if [ "$draws" = 1 ]; then
          out="$dir/samples/$objective.h5" seed=""
        else
          out="$dir/samples/$objective.draw$d.h5" seed="--seed $d"
        fi
        grid=""
        [ $d = 0 ] && grid="--grid $dir/samples/$objective.png"
        # shellcheck disable=SC2086
        run "${bin}mdx-sample" "$dir/gen/$objective.ckpt.h5" --per-class $per_class --steps $steps --cfg $cfg \
          $seed -o "$out" $grid
        parts="$parts $out"
        d=$(( d + 1 ))
      done
      echo $(( $(date +%s) - draws_start )) > "$dir/samples/$objective.seconds"
      # shellcheck disable=SC2086
      if [ "$draws" -gt 1 ]; then run "${bin}mdx-tokenize" $parts -o "$dir/samples/$objective.h5"; fi
      if [ "$half" = 1 ]; then
        # The fine-tune's checkpoint at half its steps: one draw (seed 0), for the curve.
        run "${bin}mdx-sample" "$(half_of "$dir/gen/$objective.ckpt.h5")" --per-class $per_class --steps $steps \
          --cfg $cfg -o "$dir/samples/$objective.half.h5"
      fi
    fi
  done
}

# The two lanes' rows: the main row alone (--demo), or at --compare UMD and DiT (and their seeds) in
# one lane and the others, after the token spaces they need, in the other, in the order given.
# Without umd or dit among the rows (--rows), the token spaces come first and the rows alternate
# between the lanes.
prepared=0
# One thread per lane.
[ "$lanes" = 2 ] && export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
if [ "$compare" = 1 ]; then
  main_rows="" other_rows=""
  for o in $objectives; do
    case $(base "$o") in umd|dit) main_rows="$main_rows $o" ;; *) other_rows="$other_rows $o" ;; esac
  done
  if [ -z "$main_rows" ]; then
    prepare
    prepared=1
    n=0 rest=""
    for o in $other_rows; do
      if [ $(( n % 2 )) = 0 ]; then main_rows="$main_rows $o"; else rest="$rest $o"; fi
      n=$(( n + 1 ))
    done
    other_rows=$rest
  fi
else
  main_rows=$main other_rows=$others
fi

if [ "$lanes" = 2 ]; then
  # The main lane (in the background, its log DIR/logs/<its first row>.log: umd.log but for --rows
  # without umd or dit): the classifier, the main row's pre-training, then its embedding and probe as
  # a third process beside its fine-tune and samples. This lane: the token spaces, the strips, the
  # pixel probes, the other rows.
  mkdir -p "$dir/logs"
  if [ "$compare" = 1 ] && step 4; then
    # The reference of equal compute, measured once before the lanes share it.
    # shellcheck disable=SC2046
    step_gflop reference.pretrain $(phase_reference pretrain) > /dev/null
    # shellcheck disable=SC2046
    step_gflop reference.finetune $(phase_reference finetune) > /dev/null
  fi
  main_lane() {
    classifier
    for row in $main_rows; do
      if [ "$prepared" = 1 ]; then pipeline "4 5 6 7 8" "$row"; continue; fi
      pipeline 4 "$row"
      pipeline "5 6" "$row" > "$dir/logs/$row-probe.log" 2>&1 &
      probe_job=$!
      pipeline "7 8" "$row"
      wait $probe_job || { echo "fashion-mnist.sh: error: the $row row's probe failed (see $dir/logs/$row-probe.log)" >&2; exit 1; }
    done
  }
  # shellcheck disable=SC2086
  lane_log=$dir/logs/$(set -- $main_rows; echo "$1").log
  echo "fashion-mnist.sh: the rows$main_rows run in the background; their log: $lane_log" >&2
  main_lane > "$lane_log" 2>&1 &
  main_job=$!
  [ "$prepared" = 1 ] || prepare
  # shellcheck disable=SC2086
  pipeline "4 5 6 7 8" $other_rows
  if ! wait $main_job; then
    echo "fashion-mnist.sh: error: the rows$main_rows failed; the end of $lane_log:" >&2
    tail -n 20 "$lane_log" >&2
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
  # What is measured, as name:table pairs: the floor, each row's samples (at --compare also each
  # draw, with a floor of one draw's size, and the samples at half of the fine-tune).
  run "${bin}mdx-tokenize" "$dir/train.h5" --limit $(( 10 * per_class * draws )) -o "$dir/fid/train-floor.h5"
  measured="data:$dir/fid/train-floor.h5"
  if [ "$draws" -gt 1 ] || [ "$half" = 1 ]; then
    run "${bin}mdx-tokenize" "$dir/train.h5" --limit $(( 10 * per_class )) -o "$dir/fid/train-floor.draw.h5"
    measured="$measured data.draw:$dir/fid/train-floor.draw.h5"
  fi
  for objective in $objectives; do
    measured="$measured $objective:$dir/samples/$objective.h5"
    d=0
    while [ "$draws" -gt 1 ] && [ $d -lt "$draws" ]; do
      measured="$measured $objective.draw$d:$dir/samples/$objective.draw$d.h5"
      d=$(( d + 1 ))
    done
    if [ "$half" = 1 ]; then measured="$measured $objective.half:$dir/samples/$objective.half.h5"; fi
  done
  tables=""
  for point in $measured; do
    # shellcheck disable=SC2086
    into "$dir/fid/${point%%:*}.json" run "${bin}mdx-fid" "${point#*:}" "$dir/fid/test.stats.h5" $features
    tables="$tables ${point#*:}"
  done
  # A judge's JSON lines, one per table in the order measured, into fid/<name>.<SUFFIX>.json:
  # per_table JSONL SUFFIX.
  per_table() {
    n=1
    for point in $measured; do
      sed -n "${n}p" "$1" > "$dir/fid/${point%%:*}.$2.json"
      n=$(( n + 1 ))
    done
  }
  # The share of each table's images the classifier names as the class asked for (one JSON line per
  # table, in the order given): the samples', and the floor's training images.
  if [ -f "$classifier" ]; then
    # shellcheck disable=SC2086
    into "$dir/fid/classified.jsonl" run /usr/bin/python3 "$share/fashion_mnist_extractor.py" --model "$classifier" \
      --classify $tables
    per_table "$dir/fid/classified.jsonl" class
  fi
  # A second judge that shares no code or training with the project: scikit-learn's 5-NN on the
  # pixels of the last 20 000 training images (the floor's training images are the first ones),
  # its own accuracy on the probe's test table beside it.
  # shellcheck disable=SC2086
  into "$dir/fid/knn.jsonl" run /usr/bin/python3 "$share/pixel_knn.py" "$dir/train.h5" $tables \
    --test "$dir/test-probe.h5"
  per_table "$dir/fid/knn.jsonl" knn
fi

if step 10; then
  /usr/bin/python3 "$(dirname "$0")/report.py" "$dir"
fi

echo "fashion-mnist.sh: done (stages $stage..$stop_stage) in $dir" >&2
