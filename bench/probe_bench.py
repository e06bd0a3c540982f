#!/usr/bin/python3
"""Benchmark of mdx-probe's logistic probe on Fashion-MNIST raw pixels (60000 x 784, 10 classes)
against scikit-learn's LogisticRegression(solver="lbfgs") on the same standardized features,
measured in the same run.

mdx-probe is timed as a whole process (reading the tables, the lambda search on a held-out split,
the final fit, the test predictions). scikit-learn is timed for fit + predict only (the data is
already standardized in memory), at the C that mdx chose: once with max_iter large enough to
converge (the same problem solved), once with its default max_iter=100 (what a user gets; it stops
unconverged). Prints a JSON line per measurement and a summary with the ratios. Run by `make bench`.
"""
import argparse
import json
import os
import subprocess
import sys
import time
import warnings

import h5py
import numpy as np

FMNIST = "/usr/share/datasets/fashion-mnist"


def tables(bin_dir, work):
    os.makedirs(work, exist_ok=True)
    out = []
    for split, name in (("train", "train"), ("t10k", "test")):
        path = os.path.join(work, f"fmnist-{name}.h5")
        if not os.path.exists(path):
            subprocess.run([os.path.join(bin_dir, "mdx-tokenize"), "-q", f"{FMNIST}/{split}-images-idx3-ubyte.gz",
                            "--labels", f"{FMNIST}/{split}-labels-idx1-ubyte.gz", "-o", path], check=True)
        out.append(path)
    return out


def load(path):
    with h5py.File(path, "r") as f:
        x = f["images"][:]
        return x.reshape(len(x), -1).astype(np.float64), f["labels"][:]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", default=os.environ.get("MDX_BIN", "build"))
    ap.add_argument("--work", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    ap.add_argument("--threads", type=int, default=0, help="mdx --threads (0: its default)")
    ap.add_argument("--max-iter", type=int, default=5000, help="scikit-learn's iteration cap for the converged run")
    ap.add_argument("--skip-default", action="store_true", help="leave out scikit-learn with max_iter=100")
    args = ap.parse_args()
    train, test = tables(args.bin, args.work)

    cmd = [os.path.join(args.bin, "mdx-probe"), train, test, "--threads", str(args.threads)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    mdx_wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(r.stderr)
    rep = json.loads(r.stdout)
    hp = rep["hyperparameters"]
    rows = [{"what": "mdx-probe (whole process: read, lambda search, fit, predict)", "seconds": mdx_wall,
             "top1": rep["top1"], "lambda": hp["lambda"], "C": hp["C"], "iterations": hp["iterations"],
             "lambdas_tried": len(hp["grid"]), "commit": rep["mdx_commit"]}]
    print(json.dumps(rows[-1]), flush=True)

    from sklearn.linear_model import LogisticRegression
    xtr, ytr = load(train)
    xte, yte = load(test)
    mean, std = xtr.mean(0), xtr.std(0)
    std[std == 0] = 1
    xtr, xte = (xtr - mean) / std, (xte - mean) / std
    runs = [("converged", args.max_iter)] + ([] if args.skip_default else [("default max_iter", 100)])
    for label, max_iter in runs:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            clf = LogisticRegression(C=hp["C"], solver="lbfgs", max_iter=max_iter).fit(xtr, ytr)
            acc = float((clf.predict(xte) == yte).mean())
            wall = time.perf_counter() - t0
        rows.append({"what": f"scikit-learn lbfgs at mdx's C, {label} (max_iter={max_iter}; fit + predict)",
                     "seconds": wall, "top1": acc, "C": hp["C"], "iterations": int(clf.n_iter_[0])})
        print(json.dumps(rows[-1]), flush=True)

    print()
    print(f"Fashion-MNIST raw pixels, 60000 x 784, mdx commit {rep['mdx_commit']}, {os.cpu_count()} CPUs")
    print("| run | seconds | top-1 | iterations | mdx speed-up |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['what']} | {row['seconds']:.1f} | {100 * row['top1']:.2f} % | {row['iterations']} | "
              f"{row['seconds'] / mdx_wall:.1f}x |")
    for row in rows[1:]:
        print(f"top-1 difference mdx - sklearn ({row['what'].split(', ')[1]}): "
              f"{100 * (rep['top1'] - row['top1']):+.2f} points")


if __name__ == "__main__":
    main()
