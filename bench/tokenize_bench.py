#!/usr/bin/python3
"""Benchmark of mdx-tokenize on a folder of JPEGs against a plain Python conversion (PIL + numpy +
h5py) of the same folder, measured in the same run; peak memory at two folder sizes.

Prints a JSON line per measurement and a summary table with the ratios. Run by `make bench`."""
import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from machine import commit

FMNIST = "/usr/share/datasets/fashion-mnist"

PYTHON_BASELINE = r"""
import os, sys
import h5py, numpy as np
from PIL import Image
root, out = sys.argv[1], sys.argv[2]
classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
files = [(os.path.join(root, c, f), k) for k, c in enumerate(classes) for f in sorted(os.listdir(os.path.join(root, c)))]
import zlib
block = 512
with h5py.File(out, "w") as h:
    n = len(files)
    images = labels = None
    for s in range(0, n, block):
        part = files[s:s + block]
        batch = np.stack([np.asarray(Image.open(p).convert("RGB")) for p, _ in part])
        if images is None:  # the same format as mdx-tokenize: deflate only where it pays
            raw = batch.tobytes()[: 1 << 20]
            gz = dict(compression="gzip", compression_opts=1) if len(zlib.compress(raw, 1)) < 0.8 * len(raw) else {}
            chunk = max(1, (256 << 10) // batch[0].nbytes)
            images = h.create_dataset("images", (n,) + batch.shape[1:], np.uint8, chunks=(chunk,) + batch.shape[1:], **gz)
            labels = h.create_dataset("labels", (n,), np.int64)
        images[s:s + len(part)] = batch
        labels[s:s + len(part)] = [k for _, k in part]
"""


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def make_folder(root, n, size):
    """n JPEGs (RGB, size x size) in one sub-folder per Fashion-MNIST class; kept between runs."""
    stamp = os.path.join(root, ".complete")
    if os.path.exists(stamp):
        return
    from PIL import Image
    shutil.rmtree(root, ignore_errors=True)
    images = read_idx(f"{FMNIST}/train-images-idx3-ubyte.gz")
    labels = read_idx(f"{FMNIST}/train-labels-idx1-ubyte.gz")
    tint = np.array([[1.0, 0.8, 0.6], [0.6, 1.0, 0.8], [0.8, 0.6, 1.0]])
    for i in range(n):
        d = os.path.join(root, f"class{labels[i]}")
        os.makedirs(d, exist_ok=True)
        gray = Image.fromarray(images[i]).resize((size, size), Image.BILINEAR)
        rgb = (np.asarray(gray, np.float64)[..., None] * tint[i % 3]).astype(np.uint8)
        Image.fromarray(rgb).save(os.path.join(d, f"{i:06d}.jpg"), quality=90)
    open(stamp, "w").close()


def measure(cmd):
    """Wall seconds and peak RSS (MiB) of one child process."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    err = p.stderr.read().decode()
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"benchmark command failed: {' '.join(cmd)}\n{err}")
    return wall, usage.ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bin", default=os.environ.get("MDX_BIN", "build"))
    ap.add_argument("--work", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    ap.add_argument("--small", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tok = os.path.join(args.bin, "mdx-tokenize")
    rows = []
    for n in (args.small, args.large):
        folder = os.path.join(args.work, f"jpeg-{n}-{args.size}")
        make_folder(folder, n, args.size)
        out = os.path.join(args.work, "bench-out.h5")
        cmds = {
            "mdx-tokenize": [tok, "-q", folder, "-o", out],
            "mdx-tokenize -j1": [tok, "-q", "-j", "1", folder, "-o", out],
            "python PIL+h5py": [sys.executable, "-c", PYTHON_BASELINE, folder, out],
        }
        for name, cmd in cmds.items():
            best = None
            for _ in range(args.repeat if n == args.small else 1):
                wall, rss = measure(cmd)
                best = (wall, rss) if best is None or wall < best[0] else best
            row = {"bench": "tokenize-jpeg", "what": name, "images": n, "size": args.size, "seconds": round(best[0], 3),
                   "images_per_s": round(n / best[0], 1), "peak_rss_mib": round(best[1], 1), "commit": commit(),
                   "cpus": os.cpu_count()}
            print(json.dumps(row), flush=True)
            rows.append(row)
        os.remove(out)
    print()
    print("| images | tool | images/s | peak RSS MiB | speed vs Python |")
    print("|---:|---|---:|---:|---:|")
    for n in (args.small, args.large):
        base = next(r for r in rows if r["images"] == n and r["what"].startswith("python"))
        for r in (r for r in rows if r["images"] == n):
            print(f"| {n} | {r['what']} | {r['images_per_s']:.0f} | {r['peak_rss_mib']:.0f} | "
                  f"{r['images_per_s'] / base['images_per_s']:.2f}x |")
    mdx = {r["images"]: r["peak_rss_mib"] for r in rows if r["what"] == "mdx-tokenize"}
    print(f"\nmdx-tokenize peak RSS: {mdx[args.small]:.0f} MiB at {args.small} images, "
          f"{mdx[args.large]:.0f} MiB at {args.large} (ratio {mdx[args.large] / mdx[args.small]:.2f})")


if __name__ == "__main__":
    main()
