"""mdx-pca-fit against an independent numpy PCA of the same patches."""
import os
import sys
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import ToolTest  # noqa: E402


def patches(images, p):
    """MAE's patchify of uint8 [N,H,W,C] scaled to [-1, 1]: [N*L, p*p*C]."""
    n, h, w, c = images.shape
    x = images.astype(np.float64) / 127.5 - 1
    x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, p * p * c)


class PcaFit(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(3000, labels=False)

    def test_matches_numpy_on_all_patches(self):
        out = self.path("pca.h5")
        r = self.ok("mdx-pca-fit", self.table, "--patch", 4, "--dim", 6, "--samples", 0, "--chunk", 700, "-o", out)
        self.assertIn("explained variance at d = 6", r.stderr)
        x = patches(h5py.File(self.table, "r")["images"][:], 4)
        mean = x.mean(0)
        cov = np.cov(x, rowvar=False)  # n - 1
        values, vectors = np.linalg.eigh(cov)
        values, vectors = values[::-1], vectors[:, ::-1].T
        with h5py.File(out, "r") as f:
            self.assertEqual(f.attrs["patch"], 4)
            self.assertEqual(f.attrs["channels"], 1)
            self.assertEqual(f.attrs["dim"], 6)
            self.assertEqual(f.attrs["samples"], x.shape[0])
            np.testing.assert_allclose(f["mean"][:], mean, rtol=0, atol=1e-12)
            ev = f["explained_variance"][:]
            np.testing.assert_allclose(ev, values, rtol=1e-6)
            comps = f["components"][:]
            self.assertEqual(comps.shape, (16, 16))
            # Up to sign, for the well-separated leading components.
            for k in range(8):
                self.assertGreater(abs(comps[k] @ vectors[k]), 1 - 1e-6, f"component {k}")
            np.testing.assert_allclose(comps @ comps.T, np.eye(16), atol=1e-10)
            ratio = values[:6].sum() / values.sum()
            self.assertAlmostEqual(f.attrs["explained_variance_ratio"], ratio, places=9)
            self.assertEqual(f.attrs["mdx_tool"], "mdx-pca-fit")
            self.assertEqual(len(f.attrs["history"].splitlines()), 2)  # tokenize, then pca-fit

    def test_dim_by_variance(self):
        out = self.path("pca.h5")
        self.ok("mdx-pca-fit", self.table, "--patch", 2, "--samples", 0, "--variance", 0.95, "-o", out)
        with h5py.File(out, "r") as f:
            ev = f["explained_variance"][:]
            d = int(np.searchsorted(np.cumsum(ev) / ev.sum(), 0.95) + 1)
            self.assertEqual(f.attrs["dim"], d)

    def test_sampling_is_seeded(self):
        a, b, c = self.path("a.h5"), self.path("b.h5"), self.path("c.h5")
        self.ok("mdx-pca-fit", self.table, "--samples", 5000, "--seed", 1, "-o", a)
        self.ok("mdx-pca-fit", self.table, "--samples", 5000, "--seed", 1, "-o", b)
        self.ok("mdx-pca-fit", self.table, "--samples", 5000, "--seed", 2, "-o", c)
        fa, fb, fc = (h5py.File(p, "r") for p in (a, b, c))
        self.assertEqual(fa.attrs["samples"], 5000)
        np.testing.assert_array_equal(fa["components"][:], fb["components"][:])
        self.assertFalse(np.array_equal(fa["mean"][:], fc["mean"][:]))
        # 5000 random patches estimate the full-data variance closely.
        full = patches(h5py.File(self.table, "r")["images"][:], 4).var(0, ddof=1).sum()
        self.assertAlmostEqual(fa["explained_variance"][:].sum() / full, 1.0, delta=0.1)

    def test_bad_inputs(self):
        out = self.path("pca.h5")
        self.fails("mdx-pca-fit", self.table, "--patch", 5, "-o", out, contains=("patch size 5",))
        with open(self.path("not.h5"), "w") as f:
            f.write("text")
        self.fails("mdx-pca-fit", self.path("not.h5"), "-o", out, contains=("not an HDF5 file",))
        with h5py.File(self.path("noimg.h5"), "w") as f:
            f["pixels"] = np.zeros((2, 4, 4, 1), np.uint8)
        self.fails("mdx-pca-fit", self.path("noimg.h5"), "-o", out, contains=("no dataset 'images'",))
        with h5py.File(self.path("float.h5"), "w") as f:
            f["images"] = np.zeros((2, 4, 4, 1), np.float32)
        self.fails("mdx-pca-fit", self.path("float.h5"), "-o", out, contains=("float32", "uint8"))
        self.fails("mdx-pca-fit", self.table, "--variance", 1.5, "-o", out, code=2)
        self.assertNoOutput(out)


if __name__ == "__main__":
    unittest.main()
