#!/usr/bin/python3
"""A second judge of generated images: k-nearest-neighbours on raw pixels (scikit-learn).

The neutral classifier (fashion_mnist_extractor.py) is a network of this project; this one shares
no code and no training with any of it: scikit-learn's k-NN (Euclidean distance on the pixels in
[0, 1]) over the LAST --count images of a training table, so that the first ones (the recipe's
floor of training images) are judged by neighbours other than themselves. It names the class of
every image of the tables given (mdx-sample's outputs, whose labels are the classes asked for) and
prints one JSON line per table: the share recognized as its label ("class_accuracy"), the count,
and the classifier ("kind", "k", "train_count", and its own accuracy on --test when given):

    /usr/bin/python3 share/mdx/pixel_knn.py train.h5 samples/*.h5 --test test.h5
"""
import argparse
import json
import sys

import h5py
import numpy as np
from sklearn.neighbors import KNeighborsClassifier

NAME = "pixel_knn.py"


def load(path, rows=None):
    """images [N, H*W*C] float32 in [0, 1] and labels int64 [N] of an image table (the last
    `rows` rows when given)."""
    try:
        with h5py.File(path, "r") as f:
            if "images" not in f:
                sys.exit(f"{NAME}: error: '{path}' is not an image table (no 'images')")
            if "labels" not in f:
                sys.exit(f"{NAME}: error: '{path}' has no labels: the class of each image must be known")
            images, labels = f["images"], f["labels"]
            n = images.shape[0]
            if labels.shape != (n,):
                sys.exit(f"{NAME}: error: '{path}': {labels.shape} labels for {n} images")
            lo = max(0, n - rows) if rows else 0
            x = images[lo:][()]
            y = labels[lo:][()].astype(np.int64)
    except OSError as e:
        sys.exit(f"{NAME}: error: cannot read '{path}': {e}")
    if x.dtype != np.uint8 or x.ndim != 4:
        sys.exit(f"{NAME}: error: '{path}' holds {x.dtype} images of shape {x.shape}, not uint8 [N, H, W, C]")
    return x.reshape(len(x), -1).astype(np.float32) / 255, y


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", help="training table with labels: its last --count images are the neighbours")
    ap.add_argument("tables", nargs="+", help="image tables with labels to judge (one JSON line each)")
    ap.add_argument("--count", type=int, default=20000, help="training images used (the last ones)")
    ap.add_argument("--k", type=int, default=5, help="neighbours that vote")
    ap.add_argument("--test", help="a test table: the classifier's own accuracy on it goes into every line")
    args = ap.parse_args()
    if args.count < 1 or args.k < 1:
        ap.error("--count and --k must be at least 1")
    x, y = load(args.train, args.count)
    if len(x) < args.k:
        sys.exit(f"{NAME}: error: '{args.train}' has {len(x)} images, fewer than --k {args.k}")
    knn = KNeighborsClassifier(n_neighbors=args.k, algorithm="brute", n_jobs=1).fit(x, y)
    meta = {"kind": "sklearn k-NN on pixels", "k": args.k, "train_count": len(x), "train": args.train}

    def accuracy(path):
        xs, ys = load(path)
        if xs.shape[1] != x.shape[1]:
            sys.exit(f"{NAME}: error: '{path}' holds images of {xs.shape[1]} values, the training table "
                     f"{x.shape[1]}")
        hits = sum(int((knn.predict(xs[i:i + 2000]) == ys[i:i + 2000]).sum()) for i in range(0, len(xs), 2000))
        return hits / max(len(xs), 1), len(xs)

    if args.test:
        meta["classifier_test_top1"], _ = accuracy(args.test)
    for path in args.tables:
        acc, n = accuracy(path)
        print(json.dumps({"table": path, "count": n, "class_accuracy": acc, **meta}), flush=True)


if __name__ == "__main__":
    main()
