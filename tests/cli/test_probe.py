"""mdx-probe against independent references: numpy's ridge and k-NN, scikit-learn's logistic regression."""
import json
import os
import sys
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import FMNIST, ToolTest, run  # noqa: E402


def write_embeddings(path, x, labels=None, names=None):
    with h5py.File(path, "w") as f:
        f["embeddings"] = np.asarray(x, np.float32)
        if labels is not None:
            f["labels"] = np.asarray(labels, np.int64)
        if names is not None:
            f["label_names"] = np.array(names, dtype=h5py.string_dtype())


def blobs(rng, n, centers, scale):
    """Gaussian blobs around `centers` (one per class), labels cycling over the classes."""
    y = np.arange(n) % len(centers)
    return centers[y] + scale * rng.standard_normal((n, centers.shape[1])), y


def standardize(train, test):
    mean, std = train.mean(0), train.std(0)
    std[std == 0] = 1
    return (train - mean) / std, (test - mean) / std


def probe(*args):
    r = run("mdx-probe", *args)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r


class Probe(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        rng = np.random.default_rng(7)
        centers = rng.standard_normal((3, 8)) * np.array([1, 1, 1, 1, 5, 5, 0.2, 0])  # one constant feature
        cls.xtr, cls.ytr = blobs(rng, 300, centers, 1.5)
        cls.xte, cls.yte = blobs(rng, 90, centers, 1.5)
        cls.xtr[:, 7] = cls.xte[:, 7] = 2.0
        cls.train = os.path.join(cls.shared, "train.emb.h5")
        cls.test = os.path.join(cls.shared, "test.emb.h5")
        write_embeddings(cls.train, cls.xtr.astype(np.float32), cls.ytr, ["red", "green", "blue"])
        write_embeddings(cls.test, cls.xte.astype(np.float32), cls.yte)
        cls.xtr, cls.xte = cls.xtr.astype(np.float32).astype(np.float64), cls.xte.astype(np.float32).astype(np.float64)

    def test_ridge_matches_numpy(self):
        out = self.path("ridge.h5")
        rep, _ = probe(self.train, self.test, "--method", "ridge", "--lambda", 30, "-o", out)
        xs, ts = standardize(self.xtr, self.xte)
        Y = np.eye(3)[self.ytr]
        W = np.linalg.solve(xs.T @ xs + 30 * np.eye(8), xs.T @ (Y - Y.mean(0)))
        scores = ts @ W + Y.mean(0)
        pred = scores.argmax(1)
        with h5py.File(out, "r") as f:
            np.testing.assert_allclose(f["coef"][:], W.T, atol=1e-5)
            np.testing.assert_allclose(f["intercept"][:], Y.mean(0), atol=1e-9)
            np.testing.assert_array_equal(f["test_predictions"][:], pred)
            self.assertEqual(f.attrs["method"], "ridge")
            self.assertEqual(f.attrs["lambda"], 30)
            self.assertEqual(f.attrs["mdx_tool"], "mdx-probe")
        self.assertAlmostEqual(rep["top1"], (pred == self.yte).mean(), places=12)
        self.assertEqual(rep["label_names"], ["red", "green", "blue"])
        conf = np.zeros((3, 3), int)
        np.add.at(conf, (self.yte, pred), 1)
        self.assertEqual(rep["confusion"], conf.tolist())
        self.assertEqual(rep["per_class_accuracy"], [conf[c, c] / 30 for c in range(3)])
        self.assertEqual(rep["top5"], 1.0)

    def test_ridge_few_shot_is_seeded(self):
        a, b, c = (self.path(n) for n in ("a.h5", "b.h5", "c.h5"))
        ra, _ = probe(self.train, self.test, "--method", "ridge", "--shots", 4, "--seed", 1, "-o", a)
        probe(self.train, self.test, "--method", "ridge", "--shots", 4, "--seed", 1, "-o", b)
        probe(self.train, self.test, "--method", "ridge", "--shots", 4, "--seed", 2, "-o", c)
        self.assertEqual(ra["train_rows"], 12)
        self.assertEqual(ra["train"]["rows"], 300)
        fa, fb, fc = (h5py.File(p, "r") for p in (a, b, c))
        np.testing.assert_array_equal(fa["coef"][:], fb["coef"][:])
        self.assertFalse(np.array_equal(fa["coef"][:], fc["coef"][:]))
        self.fails("mdx-probe", self.train, self.test, "--method", "ridge", "--shots", 101, contains=("--shots 101",))

    def test_knn_matches_numpy(self):
        out = self.path("knn.h5")
        rep, _ = probe(self.train, self.test, "--method", "knn", "--k", 7, "--batch", 13, "-o", out)
        a = self.xtr / np.linalg.norm(self.xtr, axis=1, keepdims=True)
        q = self.xte / np.linalg.norm(self.xte, axis=1, keepdims=True)
        sim = q @ a.T
        top = np.argsort(-sim, axis=1)[:, :7]
        scores = np.zeros((len(q), 3))
        for i in range(len(q)):
            np.add.at(scores[i], self.ytr[top[i]], np.exp(sim[i, top[i]] / 0.07))
        pred = scores.argmax(1)
        with h5py.File(out, "r") as f:
            np.testing.assert_array_equal(f["test_predictions"][:], pred)
            self.assertNotIn("coef", f)
        self.assertAlmostEqual(rep["top1"], (pred == self.yte).mean(), places=12)
        self.assertEqual(rep["hyperparameters"]["k"], 7)

    def test_logistic_matches_sklearn_at_the_same_C(self):
        from sklearn.linear_model import LogisticRegression
        out = self.path("lr.h5")
        rep, _ = probe(self.train, self.test, "--l2", 0.02, "--tol", 1e-7, "-o", out)
        hp = rep["hyperparameters"]
        self.assertEqual(hp["lambda"], 0.02)
        self.assertAlmostEqual(hp["C"], 1 / (0.02 * 300))
        self.assertTrue(hp["converged"])
        xs, ts = standardize(self.xtr, self.xte)
        clf = LogisticRegression(C=hp["C"], tol=1e-10, max_iter=10000).fit(xs, self.ytr)
        acc = (clf.predict(ts) == self.yte).mean()
        self.assertLessEqual(abs(rep["top1"] - acc), 0.005)
        with h5py.File(out, "r") as f:
            np.testing.assert_allclose(f["coef"][:], clf.coef_, atol=2e-3)
            b = f["intercept"][:]
            np.testing.assert_allclose(b - b.mean(), clf.intercept_ - clf.intercept_.mean(), atol=2e-3)
            # The saved probe reproduces the predictions: standardize, then x W' + b.
            scores = (self.xte - f["mean"][:]) / f["std"][:] @ f["coef"][:].T + f["intercept"][:]
            np.testing.assert_array_equal(scores.argmax(1), f["test_predictions"][:])
            self.assertEqual(f["std"][7], 1.0)  # the constant feature

    def test_logistic_grid_is_seeded_and_reported(self):
        rep, r = probe(self.train, self.test, "--seed", 3, "--threads", 1)
        again, _ = probe(self.train, self.test, "--seed", 3, "--threads", 2)
        self.assertEqual(rep, again)  # the same sums whatever the number of threads
        hp = rep["hyperparameters"]
        self.assertEqual(hp["holdout_rows"], 30)
        self.assertIn(hp["lambda"], [g["lambda"] for g in hp["grid"]])
        best = max(g["holdout_top1"] for g in hp["grid"])
        self.assertEqual([g for g in hp["grid"] if g["lambda"] == hp["lambda"]][0]["holdout_top1"], best)
        self.assertAlmostEqual(hp["C"], 1 / (hp["lambda"] * 300))
        self.assertEqual((rep["classes"], rep["features"], rep["train_rows"], rep["test_rows"]), (3, 8, 300, 90))
        self.assertEqual(rep["train"]["kind"], "embeddings")
        self.assertIn("mdx_commit", rep)
        self.assertIn("held-out top-1", r.stderr)
        self.assertTrue(all(l.startswith("mdx-probe: ") for l in r.stderr.splitlines()))

    def test_fashion_mnist_pixels_agree_with_sklearn(self):
        from sklearn.linear_model import LogisticRegression
        train, test = self.path("train.h5"), self.path("test.h5")
        for images, labels, n, out in (("train", "train", 10000, train), ("t10k", "t10k", 2000, test)):
            self.ok("mdx-tokenize", "-q", f"{FMNIST}/{images}-images-idx3-ubyte.gz", "--labels",
                    f"{FMNIST}/{labels}-labels-idx1-ubyte.gz", "--limit", n, "-o", out)
        rep, _ = probe(train, test, "--l2", "1e-1,1e-2,1e-3")
        self.assertEqual(rep["train"]["kind"], "images")
        self.assertEqual(rep["features"], 784)
        self.assertGreater(rep["top1"], 0.80)
        with h5py.File(train, "r") as f, h5py.File(test, "r") as g:
            xtr, ytr = f["images"][:].reshape(10000, -1).astype(np.float64), f["labels"][:]
            xte, yte = g["images"][:].reshape(2000, -1).astype(np.float64), g["labels"][:]
        xs, ts = standardize(xtr, xte)
        clf = LogisticRegression(C=rep["hyperparameters"]["C"], max_iter=300).fit(xs, ytr)
        acc = (clf.predict(ts) == yte).mean()
        self.assertLessEqual(abs(rep["top1"] - acc), 0.01, f"mdx {rep['top1']} sklearn {acc}")

    def test_bad_inputs(self):
        out = self.path("p.h5")
        write_embeddings(self.path("narrow.h5"), np.zeros((5, 3)), np.zeros(5))
        self.fails("mdx-probe", self.train, self.path("narrow.h5"), "-o", out, contains=("8 features", "has 3"))
        write_embeddings(self.path("nolabels.h5"), np.zeros((5, 8)))
        self.fails("mdx-probe", self.train, self.path("nolabels.h5"), contains=("no dataset 'labels'",))
        bad = np.zeros((5, 8))
        bad[3, 2] = np.nan
        write_embeddings(self.path("nan.h5"), bad, np.zeros(5))
        self.fails("mdx-probe", self.path("nan.h5"), self.test, contains=("row 3", "not finite"))
        with h5py.File(self.path("ckpt.h5"), "w") as f:
            f.create_group("config")
            f.create_group("model")
        self.fails("mdx-probe", self.path("ckpt.h5"), self.test,
                   contains=("is an mdx checkpoint; make embeddings with mdx-embed",))
        self.fails("mdx-probe", self.path("missing.h5"), self.test, contains=("no such file",))
        with open(self.path("text.h5"), "w") as f:
            f.write("not hdf5")
        self.fails("mdx-probe", self.train, self.path("text.h5"), contains=("not an HDF5 file",))
        write_embeddings(self.path("label9.h5"), np.ones((5, 8)), [0, 1, 2, 9, 0])
        self.fails("mdx-probe", self.train, self.path("label9.h5"), contains=("label 9", "3 classes"))
        with h5py.File(self.path("other.h5"), "w") as f:
            f["features"] = np.zeros((5, 8), np.float32)
        self.fails("mdx-probe", self.path("other.h5"), self.test, contains=("neither",))
        self.fails("mdx-probe", self.train, self.test, "--method", "svm", code=2)
        self.fails("mdx-probe", self.train, self.test, "--holdout", 1.5, code=2)
        self.assertNoOutput(out)


if __name__ == "__main__":
    unittest.main()
