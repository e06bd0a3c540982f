#!/usr/bin/python3
"""The loss of a bf16 training run against the seed spread of float32 runs, measured in one run:
mdx-train --precision fp32 with --seeds seeds and --precision bf16 with the first, on the same
Fashion-MNIST table and model. Prints a JSON line per run and, per window of --window steps,
whether the bf16 mean loss lies within the float32 seeds' range (widened by --slack of it);
draws the curves (float32 seeds grey, bf16 red) to --figure.

  /usr/bin/python3 bench/bf16_curve.py --bin build --steps 500 --figure bf16-vs-fp32.png
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from PIL import Image, ImageDraw

from machine import cpu_name

FMNIST = "/usr/share/datasets/fashion-mnist"


def train(args, table, out, precision, seed):
    cmd = [os.path.join(args.bin, "mdx-train"), "-q", table, "-o", out, "--objective", args.objective,
           "--dim", "64", "--depth", "2", "--decoder-depth", "1", "--heads", "4", "--batch", str(args.batch),
           "--lr", "1e-3", "--steps", str(args.steps), "--log-every", "5", "--preview-every", "0",
           "--threads", str(args.threads), "--precision", precision, "--seed", str(seed)]
    t0 = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{r.stderr}")
    with open(out[:-3] + ".metrics.jsonl") as f:
        curve = [json.loads(line) for line in f]
    return curve, time.time() - t0


def windows(curve, window):
    out = {}
    for m in curve:
        out.setdefault((m["step"] - 1) // window, []).append(m["loss"])
    return [sum(v) / len(v) for _, v in sorted(out.items())]


def draw(path, fp32, bf16, steps):
    W, H, pad = 640, 360, 50
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    pts = [m["loss"] for c in fp32 + [bf16] for m in c]
    lo, hi = min(pts), max(pts)
    sx = lambda s: pad + (W - 2 * pad) * s / steps  # noqa: E731
    sy = lambda v: H - pad - (H - 2 * pad) * (v - lo) / (hi - lo)  # noqa: E731
    d.rectangle([pad, pad, W - pad, H - pad], outline="black")
    for c in fp32:
        d.line([(sx(m["step"]), sy(m["loss"])) for m in c], fill=(150, 150, 150), width=1)
    d.line([(sx(m["step"]), sy(m["loss"])) for m in bf16], fill=(220, 30, 30), width=2)
    d.text((pad, 12), f"training loss, {len(fp32)} float32 seeds (grey) and bf16 (red)", fill="black")
    d.text((pad - 40, pad - 6), f"{hi:.3f}", fill="black")
    d.text((pad - 40, H - pad - 6), f"{lo:.3f}", fill="black")
    d.text((W - pad - 60, H - pad + 8), f"step {steps}", fill="black")
    img.save(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("MDX_BIN", "build"))
    ap.add_argument("--objective", default="umd")
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--window", type=int, default=50)
    ap.add_argument("--slack", type=float, default=0.02, help="share of the float32 range's midpoint")
    ap.add_argument("--figure", default="")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mdx-bf16-") as tmp:
        table = os.path.join(tmp, "t.h5")
        subprocess.run([os.path.join(args.bin, "mdx-tokenize"), "-q", f"{FMNIST}/train-images-idx3-ubyte.gz",
                        "--labels", f"{FMNIST}/train-labels-idx1-ubyte.gz", "--limit", "10000", "-o", table],
                       check=True)
        fp32 = []
        for seed in range(args.seeds):
            c, secs = train(args, table, os.path.join(tmp, f"f{seed}.h5"), "fp32", seed)
            fp32.append(c)
            print(json.dumps({"precision": "fp32", "seed": seed, "final_loss": c[-1]["loss"],
                              "seconds": round(secs, 1), "cpu": cpu_name()}), flush=True)
        bf16, secs = train(args, table, os.path.join(tmp, "b0.h5"), "bf16", 0)
        print(json.dumps({"precision": "bf16", "seed": 0, "final_loss": bf16[-1]["loss"], "seconds": round(secs, 1),
                          "cpu": cpu_name()}), flush=True)
    f_w = [windows(c, args.window) for c in fp32]
    b_w = windows(bf16, args.window)
    inside = 0
    print("\n| steps | float32 seeds (min-max) | bf16 | within |\n|---|---|---:|---|")
    for i, b in enumerate(b_w):
        vals = [w[i] for w in f_w]
        lo, hi = min(vals), max(vals)
        slack = args.slack * (lo + hi) / 2
        ok = lo - slack <= b <= hi + slack
        inside += ok
        print(f"| {i * args.window + 1}-{(i + 1) * args.window} | {lo:.4f}-{hi:.4f} | {b:.4f} | {'yes' if ok else 'no'} |")
    print(f"\n{inside} of {len(b_w)} windows of bf16 within the float32 seed range (±{100 * args.slack:g} %), "
          f"{args.objective}, batch {args.batch}, {args.threads} thread(s), {cpu_name()}")
    if args.figure:
        draw(args.figure, fp32, bf16, args.steps)


if __name__ == "__main__":
    main()
