"""mdx-fid against independent references: pytorch-fid's formula (scipy.linalg.sqrtm) on saved
statistics; a small TorchScript extractor evaluated directly in PyTorch (same LibTorch build) with
the same preprocessing; Fashion-MNIST train vs test vs noise; an mdx encoder; bad inputs."""
import hashlib
import json
import os
import subprocess
import sys
import unittest

import h5py
import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import FMNIST, SOURCE, ToolTest, run  # noqa: E402

SIZE = 40  # the toy extractor's input size: small, so that the test stays quick
SHA = "0" * 64


def frechet_scipy(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """pytorch-fid's calculate_frechet_distance: sqrtm of the product, eps fallback, real part."""
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        assert np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3)
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def write_stats(path, mu, sigma, count, sha=SHA, size=299, kind="torchscript"):
    with h5py.File(path, "w") as f:
        f["mu"] = mu
        f["sigma"] = sigma
        f.attrs["count"] = count
        f.attrs["extractor_kind"] = kind
        f.attrs["extractor_sha256"] = sha
        f.attrs["extractor_size"] = size
        f.attrs["extractor_features"] = len(mu)


class Toy(torch.nn.Module):
    """A small conv net ending in global average pooling, returning pytorch-fid's shape: a list
    holding [B, F, 1, 1]."""

    def __init__(self, nan=False):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.c2 = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.nan = nan

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        if self.nan:
            x = x * float("nan")
        return [F.adaptive_avg_pool2d(x, (1, 1))]


def toy_features(module, images, size, batch=100):
    """What mdx-fid feeds the module, written out: RGB, x/255, bilinear resize, 2x-1."""
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).permute(0, 3, 1, 2).contiguous().float() / 255
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            out.append(module(2 * x - 1)[0].flatten(1).double().numpy())
    return np.concatenate(out)


def run_python(script, *args):
    return subprocess.run(["/usr/bin/python3", script, *map(str, args)], capture_output=True, text=True)


def report(r):
    return json.loads(r.stdout)


class Fid(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        d = cls.shared
        torch.manual_seed(0)
        cls.toy = torch.jit.script(Toy().eval())
        cls.extractor = os.path.join(d, "toy.pt")
        torch.jit.save(cls.toy, cls.extractor)
        torch.manual_seed(1)
        cls.other = os.path.join(d, "other.pt")
        torch.jit.save(torch.jit.script(Toy().eval()), cls.other)
        cls.nan_extractor = os.path.join(d, "nan.pt")
        torch.jit.save(torch.jit.script(Toy(nan=True).eval()), cls.nan_extractor)
        cls.test = cls.fmnist_table(1000, labels=False)
        cls.train = os.path.join(d, "train.h5")
        r = run("mdx-tokenize", "-q", f"{FMNIST}/train-images-idx3-ubyte.gz", "--limit", 1000, "-o", cls.train)
        assert r.returncode == 0, r.stderr
        cls.noise = os.path.join(d, "noise.h5")
        with h5py.File(cls.noise, "w") as f:
            f["images"] = np.random.default_rng(0).integers(0, 256, (500, 28, 28, 1), dtype=np.uint8)

    def fid(self, *args):
        return report(self.ok("mdx-fid", "-q", *args))

    def test_stats_files_match_scipy_sqrtm(self):
        rng = np.random.default_rng(0)
        cases = {
            "random": (64, 500, 500),
            "rank-deficient": (64, 40, 30),  # fewer samples than features: singular covariances
            "wide": (200, 150, 1000),
        }
        for name, (dim, n1, n2) in cases.items():
            with self.subTest(name):
                a = rng.standard_normal((n1, dim)) @ rng.standard_normal((dim, dim)) * 0.1
                b = rng.standard_normal((n2, dim)) * 0.8 + 0.2
                s1, s2 = self.path(f"{name}1.h5"), self.path(f"{name}2.h5")
                write_stats(s1, a.mean(0), np.cov(a, rowvar=False), n1)
                write_stats(s2, b.mean(0), np.cov(b, rowvar=False), n2)
                expected = frechet_scipy(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
                got = self.fid(s1, s2)
                self.assertLess(abs(got["fid"] - expected) / expected, 1e-6, (got["fid"], expected))
                self.assertEqual([i["count"] for i in got["inputs"]], [n1, n2])
                self.assertEqual([i["type"] for i in got["inputs"]], ["stats", "stats"])
                self.assertEqual(got["extractor"]["features"], dim)
                self.assertIn("mdx_commit", got)
                # Rank-deficient covariances leave ~sqrt(eps) * trace of rounding (scipy's sqrtm as much).
                self.assertAlmostEqual(self.fid(s1, s1)["fid"], 0.0, delta=1e-7 * np.trace(np.cov(a, rowvar=False)))
        # Nearly singular: a rank-3 covariance plus 1e-9 I against a full one.
        u = rng.standard_normal((32, 3))
        s1 = u @ u.T + 1e-9 * np.eye(32)
        c = rng.standard_normal((32, 32))
        s2 = c @ c.T / 32
        mu1, mu2 = rng.standard_normal(32), rng.standard_normal(32)
        write_stats(self.path("n1.h5"), mu1, s1, 10)
        write_stats(self.path("n2.h5"), mu2, s2, 10)
        expected = frechet_scipy(mu1, s1, mu2, s2)
        got = self.fid(self.path("n1.h5"), self.path("n2.h5"))["fid"]
        self.assertLess(abs(got - expected) / expected, 1e-6, (got, expected))

    def test_toy_extractor_matches_pytorch(self):
        stats = self.path("test.stats.h5")
        r = self.fid(self.test, "--extractor", self.extractor, "--size", SIZE, "--batch", 64, "--save-stats", stats)
        self.assertIsNone(r["fid"])
        self.assertEqual(r["stats"], stats)
        images = h5py.File(self.test, "r")["images"][:]
        feats = toy_features(self.toy, images, SIZE)
        mu, sigma = feats.mean(0), np.cov(feats, rowvar=False)
        with h5py.File(stats, "r") as f:
            np.testing.assert_allclose(f["mu"][:], mu, rtol=1e-5, atol=1e-7)
            np.testing.assert_allclose(f["sigma"][:], sigma, rtol=1e-5, atol=1e-5 * np.abs(sigma).max())
            self.assertEqual(f.attrs["count"], 1000)
            self.assertEqual(f.attrs["extractor_kind"], "torchscript")
            self.assertEqual(f.attrs["extractor_size"], SIZE)
            self.assertEqual(f.attrs["extractor_features"], 32)
            with open(self.extractor, "rb") as m:
                self.assertEqual(f.attrs["extractor_sha256"], hashlib.sha256(m.read()).hexdigest())
            self.assertEqual(f.attrs["mdx_tool"], "mdx-fid")
            self.assertIn("mdx-tokenize", f.attrs["history"])

        # The distance between two tables against the same evaluation in Python + scipy.
        r = self.fid(self.train, self.test, "--extractor", self.extractor, "--size", SIZE)
        train = toy_features(self.toy, h5py.File(self.train, "r")["images"][:], SIZE)
        expected = frechet_scipy(train.mean(0), np.cov(train, rowvar=False), mu, sigma)
        self.assertLess(abs(r["fid"] - expected) / expected, 1e-5, (r["fid"], expected))
        self.assertEqual(r["extractor"]["size"], SIZE)
        self.assertEqual(r["extractor"]["features"], 32)
        self.assertEqual(r["extractor"]["bytes"], os.path.getsize(self.extractor))
        # Saved statistics stand in for their table.
        r2 = self.fid(self.train, stats, "--extractor", self.extractor, "--size", SIZE)
        self.assertAlmostEqual(r2["fid"], r["fid"], delta=1e-9 * r["fid"])
        self.assertEqual(r2["inputs"][1], {"path": stats, "type": "stats", "count": 1000})

    def test_self_small_noise_large(self):
        ext = ["--extractor", self.extractor, "--size", SIZE]
        same = self.fid(self.test, self.test, *ext)["fid"]
        train_test = self.fid(self.train, self.test, *ext)["fid"]
        noise_test = self.fid(self.noise, self.test, *ext)["fid"]
        self.assertLess(abs(same), 1e-9)
        self.assertGreater(train_test, 0)
        self.assertGreater(noise_test, 50 * train_test, (train_test, noise_test))
        # RGB replicas of the grayscale table give the same features: grayscale is replicated to RGB.
        rgb = self.path("rgb.h5")
        with h5py.File(rgb, "w") as f:
            f["images"] = np.repeat(h5py.File(self.test, "r")["images"][:], 3, axis=3)
        self.assertLess(abs(self.fid(rgb, self.test, *ext)["fid"]), 1e-9)

    def test_extractor_identity_is_checked(self):
        ext = ["--extractor", self.extractor, "--size", SIZE]
        a, b = self.path("a.h5"), self.path("b.h5")
        self.fid(self.test, *ext, "--save-stats", a)
        self.fid(self.train, "--extractor", self.other, "--size", SIZE, "--save-stats", b)
        self.fails("mdx-fid", a, b, contains=("cannot be compared", "different files"))
        self.fails("mdx-fid", self.train, a, "--extractor", self.other, "--size", SIZE, contains=("cannot be compared",))
        self.fails("mdx-fid", self.train, a, "--extractor", self.extractor, "--size", 32, contains=("input size",))
        # A stats file of another width.
        write_stats(self.path("w.h5"), np.zeros(5), np.eye(5), 10)
        self.fails("mdx-fid", self.path("w.h5"), a, contains=("features",))
        # Statistics that do not say which extractor made them.
        with h5py.File(self.path("anon.h5"), "w") as f:
            f["mu"], f["sigma"], f.attrs["count"] = np.zeros(32), np.eye(32), 10
        self.fails("mdx-fid", self.path("anon.h5"), a, contains=("extractor_kind",))

    def test_encoder_features(self):
        ckpt = self.path("m.ckpt.h5")
        self.ok("mdx-train", self.test, "-q", "--steps", 2, "--dim", 32, "--depth", 1, "--decoder-depth", 1,
                "--heads", 2, "--batch", 16, "--threads", 1, "-o", ckpt)
        enc = ["--encoder", ckpt]
        r = self.fid(self.test, self.test, *enc)
        self.assertLess(abs(r["fid"]), 1e-9)
        self.assertEqual(r["extractor"]["kind"], "mdx-encoder")
        self.assertEqual(r["extractor"]["step"], 2)
        self.assertEqual(r["extractor"]["pool"], "cls")
        self.assertEqual(r["extractor"]["weights"], "raw")  # as UMD's representation FDs
        self.assertEqual(r["extractor"]["features"], 32)
        self.assertEqual(self.fid(self.test, self.test, *enc, "--pool", "cls+mean")["extractor"]["features"], 64)
        # Two steps leave adaLN-Zero's gates near 0, so the CLS outputs hardly see the image: compare the
        # patch-token means, which do.
        # (Near-singular covariances: the self-distance is 0 up to ~sqrt(eps) * trace.)
        same = self.fid(self.test, self.test, *enc, "--pool", "mean")["fid"]
        noise = self.fid(self.noise, self.test, *enc, "--pool", "mean")["fid"]
        self.assertGreater(noise, 0.1)
        self.assertLess(abs(same), 1e-6 * noise)
        stats = self.path("enc.stats.h5")
        self.fid(self.test, *enc, "--save-stats", stats)
        self.assertLess(abs(self.fid(stats, self.test, *enc)["fid"]), 1e-9)
        self.fails("mdx-fid", stats, self.test, *enc, "--pool", "mean", contains=("pooling cls vs mean",))
        self.fails("mdx-fid", stats, self.test, "--extractor", self.extractor, contains=("kind",))
        # A 3-channel table for a 1-channel encoder.
        rgb = self.path("rgb.h5")
        with h5py.File(rgb, "w") as f:
            f["images"] = np.zeros((4, 28, 28, 3), np.uint8)
        self.fails("mdx-fid", rgb, self.test, *enc, contains=("28x28x3", "28x28x1"))

    def labelled_train(self, n):
        """The first n Fashion-MNIST training images, with their labels."""
        train = self.path("train-labelled.h5")
        self.ok("mdx-tokenize", "-q", f"{FMNIST}/train-images-idx3-ubyte.gz", "--labels",
                f"{FMNIST}/train-labels-idx1-ubyte.gz", "--limit", n, "-o", train)
        return train

    def test_fashion_mnist_extractor_script(self):
        # share/mdx's classifier extractor, trained briefly: mdx-fid loads it and computes the
        # features that the saved module gives in PyTorch.
        script = os.path.join(SOURCE, "share", "mdx", "fashion_mnist_extractor.py")
        train = self.labelled_train(1000)
        test = self.fmnist_table(300)
        pt = self.path("fmnist.pt")
        r = run_python(script, train, test, "--epochs", 1, "-o", pt)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("epoch 1: test top-1", r.stderr)
        # The same training again gives the same file, byte for byte (its sha256 is the extractor's
        # identity in every FID report); TorchScript's archive holds the file's name, so the same name.
        os.makedirs(self.path("again"))
        again = os.path.join(self.path("again"), "fmnist.pt")
        self.assertEqual(run_python(script, train, test, "--epochs", 1, "-o", again).returncode, 0)
        with open(pt, "rb") as a, open(again, "rb") as b:
            self.assertEqual(a.read(), b.read())
        stats = self.path("s.h5")
        report_ = self.fid(test, "--extractor", pt, "--size", 28, "--save-stats", stats)
        self.assertEqual(report_["extractor"]["features"], 128)
        module = torch.jit.load(pt)
        feats = toy_features(lambda x: [module(x)], h5py.File(test, "r")["images"][:], 28)
        with h5py.File(stats, "r") as f:
            np.testing.assert_allclose(f["mu"][:], feats.mean(0), rtol=1e-5, atol=1e-6)
        # The saved module classifies too: on the test table it scores what training reported, and
        # its share agrees with the module's logits computed here.
        r = run_python(script, "--model", pt, "--classify", test)
        self.assertEqual(r.returncode, 0, r.stderr)
        line = json.loads(r.stdout)
        self.assertEqual(line["class_accuracy"], line["classifier_test_top1"])
        with h5py.File(test, "r") as f:
            x = torch.from_numpy(f["images"][:]).permute(0, 3, 1, 2).float().div(127.5).sub(1).expand(-1, 3, -1, -1)
            ours = (module.logits(x).argmax(1).numpy() == f["labels"][:]).mean()
        self.assertAlmostEqual(line["class_accuracy"], ours, places=12)
        self.assertEqual(line["count"], 300)
        r = run_python(script, "--model", self.path("missing.pt"), "--classify", test)
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.pt", r.stderr)
        r = run_python(script, "--model", pt, train, "--classify", test)
        self.assertEqual(r.returncode, 2)
        r = run_python(script, self.test, test, "-o", self.path("x.pt"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("not an image table with labels", r.stderr)
        r = run_python(script, self.path("missing.h5"), test, "-o", self.path("x.pt"))
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("cannot read", r.stderr)
        self.assertNoOutput(self.path("x.pt"))

    def test_pixel_knn_script(self):
        # share/mdx's second judge: scikit-learn's k-NN on the pixels of a training table's last
        # --count images, against a brute-force nearest-neighbour vote in numpy.
        script = os.path.join(SOURCE, "share", "mdx", "pixel_knn.py")
        train = self.labelled_train(700)
        test = self.fmnist_table(200)
        r = run_python(script, train, test, train, "--count", 500, "--k", 3, "--test", test)
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = [json.loads(x) for x in r.stdout.splitlines()]
        self.assertEqual(len(lines), 2)
        with h5py.File(train, "r") as f:
            x = f["images"][200:].reshape(500, -1).astype(np.float64) / 255
            y = f["labels"][200:]
            every = f["images"][:].reshape(700, -1).astype(np.float64) / 255
            every_y = f["labels"][:]
        with h5py.File(test, "r") as f:
            xt = f["images"][:].reshape(200, -1).astype(np.float64) / 255
            yt = f["labels"][:]

        def vote(q):
            d = (q ** 2).sum(1)[:, None] - 2 * q @ x.T + (x ** 2).sum(1)[None, :]
            near = y[np.argsort(d, axis=1, kind="stable")[:, :3]]
            return np.array([np.bincount(n, minlength=10).argmax() for n in near])

        ours = (vote(xt) == yt).mean()
        self.assertAlmostEqual(lines[0]["class_accuracy"], ours, places=12)
        self.assertEqual(lines[0]["classifier_test_top1"], lines[0]["class_accuracy"])
        self.assertEqual((lines[0]["count"], lines[0]["k"], lines[0]["train_count"]), (200, 3, 500))
        # The whole training table: its last 500 images are their own nearest neighbours, its
        # first 200 are not among the neighbours.
        self.assertAlmostEqual(lines[1]["class_accuracy"], (vote(every) == every_y).mean(), places=12)
        self.assertEqual(lines[1]["count"], 700)
        self.assertLess((vote(every[:200]) == every_y[:200]).mean(), (vote(every[200:]) == every_y[200:]).mean())
        # A table without labels, a missing one: one line, exit 1; nothing on stdout for them.
        r = run_python(script, train, self.test)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        self.assertIn("has no labels", r.stderr)
        r = run_python(script, train, self.path("missing.h5"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot read", r.stderr)
        r = run_python(script, train, test, "--k", 0)
        self.assertEqual(r.returncode, 2)

    def test_bad_inputs(self):
        ext = ["--extractor", self.extractor, "--size", SIZE]
        with open(self.path("bad.pt"), "w") as f:
            f.write("not a module")
        self.fails("mdx-fid", self.test, self.test, "--extractor", self.path("bad.pt"),
                   contains=("bad.pt", "not a TorchScript module"))
        self.fails("mdx-fid", self.test, self.test, "--extractor", self.path("missing.pt"), contains=("missing.pt",))
        for rows in (0, 1):
            p = self.path(f"rows{rows}.h5")
            with h5py.File(p, "w") as f:
                f["images"] = np.zeros((rows, 28, 28, 1), np.uint8)
            self.fails("mdx-fid", p, self.test, *ext, contains=(f"rows{rows}.h5", "at least 2"))
        with h5py.File(self.path("two.h5"), "w") as f:
            f["images"] = np.zeros((3, 28, 28, 2), np.uint8)
        self.fails("mdx-fid", self.path("two.h5"), self.test, *ext, contains=("two.h5", "2 channels"))
        with h5py.File(self.path("neither.h5"), "w") as f:
            f["x"] = np.zeros(3)
        self.fails("mdx-fid", self.path("neither.h5"), self.test, *ext, contains=("neither",))
        self.fails("mdx-fid", self.test, self.test, "--extractor", self.nan_extractor, "--size", SIZE,
                   contains=("NaN",))
        out = self.path("s.h5")
        self.fails("mdx-fid", self.test, self.test, *ext, "--size", 0, code=2)
        self.fails("mdx-fid", self.test, self.test, code=2, contains=("--extractor",))
        self.fails("mdx-fid", self.test, self.test, *ext, "--encoder", self.path("m.h5"), code=2)
        self.fails("mdx-fid", self.test, *ext, code=2, contains=("--save-stats",))
        self.fails("mdx-fid", self.test, self.train, *ext, "--save-stats", out, code=2)
        self.fails("mdx-fid", self.test, self.test, self.test, *ext, code=2)
        self.assertNoOutput(out)

    def test_a_raising_extractor_is_one_line_with_its_message(self):
        class Refuses(torch.nn.Module):
            def forward(self, x):
                if x.shape[0] > 0:
                    raise RuntimeError("this extractor refuses every batch")
                return x

        pt = self.path("refuses.pt")
        torch.jit.save(torch.jit.script(Refuses()), pt)
        r = self.fails("mdx-fid", self.test, self.test, "--extractor", pt, "--size", SIZE,
                       contains=("refuses.pt", "this extractor refuses every batch"))
        self.assertNotIn("Traceback", r.stderr)


if __name__ == "__main__":
    unittest.main()
