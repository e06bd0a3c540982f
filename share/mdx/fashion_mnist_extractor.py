#!/usr/bin/python3
"""Train a small Fashion-MNIST classifier and save its features as a TorchScript extractor for
`mdx-fid --extractor FILE.pt --size 28`.

Inception-v3 features (standard FID) are made for 299x299 photographs; on 28x28 grayscale garments
a common substitute is the penultimate layer of a classifier trained on the dataset itself. This
script trains one (two 3x3 convolutions of 32 and 64 channels with max-pooling, a 128-wide hidden
layer, 10 classes; Adam, lr 1e-3, batch 128), prints its test accuracy, and saves a module that
takes mdx-fid's input (float32 [B, 3, 28, 28] in [-1, 1], the gray channel replicated) and returns
the 128 hidden activations. Distances measured with it are comparable only with each other, not
with published FIDs; the extractor's SHA-256 in mdx-fid's report says which one was used.

    /usr/bin/python3 share/mdx/fashion_mnist_extractor.py train.h5 test.h5 -o fmnist-features.pt
    mdx-fid samples.h5 test.h5 --extractor fmnist-features.pt --size 28

train.h5 and test.h5 are mdx-tokenize tables of the two splits (with labels). The run is seeded
(--seed) and single-threaded.

The saved module also holds the classifier's head (its method `logits`) and its test accuracy,
so that the same network names the class of generated images. With --classify it names the class
of every image of the tables given (mdx-sample's outputs, whose labels are the classes asked for)
and prints one JSON line per table: the share recognized as its label ("class_accuracy"), the
count, and the classifier's own test accuracy beside it; --model reads a saved module instead of
training one:

    /usr/bin/python3 share/mdx/fashion_mnist_extractor.py train.h5 test.h5 --classify samples/*.h5
    /usr/bin/python3 share/mdx/fashion_mnist_extractor.py --model fmnist-features.pt --classify samples/*.h5
"""
import argparse
import hashlib
import json
import os
import sys

import h5py
import numpy as np
import torch


class Classifier(torch.nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(1, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(32, 64, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Flatten(), torch.nn.Linear(64 * 7 * 7, 128), torch.nn.ReLU())
        self.head = torch.nn.Linear(128, classes)

    def forward(self, x):  # x: [B, 1, 28, 28] in [-1, 1]
        return self.head(self.features(x))


class Extractor(torch.nn.Module):
    """mdx-fid's input [B, 3, 28, 28] in [-1, 1] -> the classifier's 128 hidden features; `logits`:
    the same input -> the 10 class scores."""

    def __init__(self, classifier):
        super().__init__()
        self.features = classifier.features
        self.head = classifier.head

    def forward(self, x):
        return self.features(x.mean(dim=1, keepdim=True))

    @torch.jit.export
    def logits(self, x):
        return self.head(self.forward(x))


def load(path):
    try:
        with h5py.File(path, "r") as f:
            if "images" not in f or "labels" not in f:
                sys.exit(f"fashion_mnist_extractor.py: error: '{path}' is not an image table with labels")
            images = f["images"][()]
            labels = f["labels"][()].astype(np.int64)
    except OSError as e:
        sys.exit(f"fashion_mnist_extractor.py: error: cannot read '{path}': {e}")
    if images.shape[1:] != (28, 28, 1):
        sys.exit(f"fashion_mnist_extractor.py: error: '{path}' holds {images.shape[1:]} images, not 28x28x1")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x, torch.from_numpy(labels)


def train(args):
    """The classifier, trained on args.train; returns it and its top-1 on args.test."""
    torch.manual_seed(args.seed)
    x, y = load(args.train)
    xt, yt = load(args.test)
    model = Classifier(int(y.max()) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for epoch in range(args.epochs):
        order = torch.randperm(len(x))
        model.train()
        for i in range(0, len(x), 128):
            idx = order[i:i + 128]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(xt[i:i + 1000]).argmax(1) == yt[i:i + 1000]).sum().item()
                          for i in range(0, len(xt), 1000))
        print(f"fashion_mnist_extractor.py: epoch {epoch + 1}: test top-1 {100 * correct / len(xt):.2f} %",
              file=sys.stderr)
    return model, correct / len(xt)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train", nargs="?", help="training table (with labels); not with --model")
    ap.add_argument("test", nargs="?", help="test table (with labels); not with --model")
    ap.add_argument("-o", "--output", help="the TorchScript extractor to write")
    ap.add_argument("--model", help="a module this script saved: classify with it instead of training one")
    ap.add_argument("--classify", nargs="+", default=[], metavar="TABLE",
                    help="image tables with labels whose images the classifier names (one JSON line each)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.model:
        if args.train or args.test or args.output:
            ap.error("--model reads a trained classifier: give no tables to train on and no -o")
        if not args.classify:
            ap.error("--model needs --classify")
    elif not (args.train and args.test):
        ap.error("give the training and test tables (or --model)")
    elif not args.output and not args.classify:
        ap.error("give -o and/or --classify")
    torch.set_num_threads(1)
    if args.model:
        extra = {"classifier.json": ""}
        try:
            module = torch.jit.load(args.model, _extra_files=extra)
            meta = json.loads(extra["classifier.json"])
        except (RuntimeError, ValueError) as e:
            sys.exit(f"fashion_mnist_extractor.py: error: '{args.model}' is not a classifier this script saved: "
                     f"{str(e).splitlines()[0] if str(e) else type(e).__name__}")
        scores = module.logits
    else:
        model, top1 = train(args)
        module = torch.jit.script(Extractor(model).eval())
        meta = {"classifier_test_top1": top1, "seed": args.seed, "epochs": args.epochs}
        scores = module.logits
    for path in args.classify:
        xs, ys = load(path)
        with torch.no_grad():
            hits = sum((scores(xs[i:i + 1000].expand(-1, 3, -1, -1)).argmax(1) == ys[i:i + 1000]).sum().item()
                       for i in range(0, len(xs), 1000))
        print(json.dumps({"table": path, "count": len(xs), "class_accuracy": hits / max(len(xs), 1), **meta}))
    if not args.output:
        return
    tmp = args.output + ".tmp"
    torch.jit.save(module, tmp, _extra_files={"classifier.json": json.dumps(meta)})
    os.replace(tmp, args.output)
    with open(args.output, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"fashion_mnist_extractor.py: wrote {args.output} (sha256 {digest})", file=sys.stderr)


if __name__ == "__main__":
    # TorchScript writes a module's constants in the order of a Python set, which string hashing
    # randomizes per process: the same weights would give another file (and sha256, the identity
    # every FID report names) on every run. One fixed hash seed makes the file a function of the
    # weights.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "PYTHONHASHSEED": "0"})
    main()
