"""Checkpoints carry their tokenizers: after the tokenizer file is moved or deleted, a checkpoint
still embeds (clean and noised in its l-DAE latent), samples and fine-tunes from the file alone;
checkpoints written before tokenizers were carried still load; mdx-train --tokenizer gives the
model the tokenizer's token space (MAE in a PCA latent)."""
import os
import shutil
import sys
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import ToolTest  # noqa: E402

TINY = ["--dim", "32", "--depth", "1", "--decoder-depth", "1", "--heads", "2", "--batch", "16", "--threads", "1",
        "-q"]


class CarriedTokenizer(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(256)
        cls.pca = cls.pca_table(cls.table, 6)

    def embed(self, ckpt, out, *extra):
        # Mean pooling: after a few steps the CLS outputs hardly depend on the input yet (adaLN-Zero).
        self.ok("mdx-embed", "-q", ckpt, self.table, "-o", out, "--threads", 1, "--pool", "mean", *extra)
        with h5py.File(out, "r") as f:
            return f["embeddings"][()]

    def test_ldae_checkpoint_without_its_pca_file(self):
        pca = self.path("moved-pca.h5")
        shutil.copy(self.pca, pca)
        ckpt = self.path("ldae.h5")
        self.ok("mdx-train", self.table, "--objective", "ldae", "--tokenizer", pca, "--steps", 3, "-o", ckpt, *TINY)
        with h5py.File(ckpt, "r") as f, h5py.File(pca, "r") as p:
            # The PCA is copied in whole as the latent the objective noises in; the model's tokens
            # are the pixel patches of its patch size.
            self.assertEqual(f["latent_tokenizer"].attrs["kind"], "pca")
            np.testing.assert_array_equal(f["latent_tokenizer/components"][()], p["components"][()])
            self.assertEqual(f["tokenizer"].attrs["kind"], "pixels")
            self.assertEqual(f["tokenizer"].attrs["patch"], 4)
            self.assertTrue(f["config"].attrs["latent_identity"].startswith("pca:"))
        before_clean = self.embed(ckpt, self.path("a.h5"))
        before_noisy = self.embed(ckpt, self.path("b.h5"), "--t", 500)
        os.remove(pca)
        np.testing.assert_array_equal(self.embed(ckpt, self.path("c.h5")), before_clean)
        np.testing.assert_array_equal(self.embed(ckpt, self.path("d.h5"), "--t", 500), before_noisy)
        self.assertFalse(np.allclose(before_clean, before_noisy))
        # Resuming (a longer run) needs no --tokenizer either: the checkpoint's latent is used.
        self.ok("mdx-train", self.table, "--objective", "ldae", "--steps", 4, "--resume", "-o", ckpt, *TINY)
        # A fine-tune under dit keeps the model's pixel tokens and samples from the file alone.
        gen = self.path("gen.h5")
        self.ok("mdx-train", self.table, "--init", ckpt, "--objective", "dit", "--class-cond", "--steps", 2,
                "-o", gen, *TINY)
        out = self.path("s.h5")
        self.ok("mdx-sample", "-q", gen, "--classes", "0,1", "--per-class", 2, "--steps", 3, "-o", out)
        with h5py.File(out, "r") as f:
            self.assertEqual(f["images"].shape, (4, 28, 28, 1))

    def test_checkpoint_before_tokenizers_were_carried(self):
        """A checkpoint as mdx wrote it before (no tokenizer groups, the PCA named by its path)."""
        ckpt = self.path("ldae.h5")
        self.ok("mdx-train", self.table, "--objective", "ldae", "--tokenizer", self.pca, "--steps", 2, "-o", ckpt, *TINY)
        want_clean = self.embed(ckpt, self.path("a.h5"))
        want_noisy = self.embed(ckpt, self.path("b.h5"), "--t", 300)
        old = self.path("old.h5")
        shutil.copy(ckpt, old)
        with h5py.File(old, "r+") as f:
            del f["tokenizer"], f["latent_tokenizer"]
            for k in ("grid_h", "grid_w", "token_dim", "tokenizer_identity", "latent_identity", "tokenizer_file"):
                del f["config"].attrs[k]
            f["config"].attrs["tokenizer"] = self.pca
        np.testing.assert_array_equal(self.embed(old, self.path("c.h5")), want_clean)
        np.testing.assert_array_equal(self.embed(old, self.path("d.h5"), "--t", 300), want_noisy)
        # Its PCA file gone: clean embeddings still work, noising says what is missing.
        with h5py.File(old, "r+") as f:
            f["config"].attrs["tokenizer"] = self.path("gone.h5")
        np.testing.assert_array_equal(self.embed(old, self.path("e.h5")), want_clean)
        self.fails("mdx-embed", old, self.table, "-o", self.path("f.h5"), "--t", 300, code=2, contains=("--tokenizer",))
        self.assertNoOutput(self.path("f.h5"))
        # ... and --tokenizer supplies it.
        np.testing.assert_array_equal(self.embed(old, self.path("g.h5"), "--t", 300, "--tokenizer", self.pca),
                                      want_noisy)

    def test_mae_in_a_pca_latent(self):
        """--tokenizer gives the model that token space: 49 tokens of 6 PCA values, not pixel patches."""
        ckpt = self.path("mae.h5")
        self.ok("mdx-train", self.table, "--objective", "mae", "--tokenizer", self.pca, "--steps", 2, "-o", ckpt,
                *TINY)
        with h5py.File(ckpt, "r") as f:
            self.assertEqual(f["tokenizer"].attrs["kind"], "pca")
            self.assertEqual(f["config"].attrs["token_dim"], "6")
            self.assertEqual(f["model/patch_embed.weight"].shape, (32, 6))
            self.assertNotIn("latent_tokenizer", f)
        self.embed(ckpt, self.path("e.h5"))
        # The preview decodes the PCA tokens back to 28x28 images.
        self.assertTrue(os.path.exists(self.path("mae.preview.png")))

    def test_bad_tokenizer_files(self):
        ckpt = self.path("x.h5")
        self.fails("mdx-train", self.table, "--objective", "ldae", "--tokenizer", self.table, "--steps", 1, "-o", ckpt,
                   *TINY, contains=("is not a tokenizer",))
        self.fails("mdx-train", self.table, "--objective", "ldae", "--steps", 1, "-o", ckpt, *TINY, code=2,
                   contains=("--tokenizer",))
        rgb = self.path("rgb-pca.h5")
        shutil.copy(self.pca, rgb)
        with h5py.File(rgb, "r+") as f:
            f.attrs["channels"] = 3
            for name in ("mean", "components", "explained_variance"):
                del f[name]
            f["mean"] = np.zeros(48)
            f["components"] = np.eye(48)
            f["explained_variance"] = np.ones(48)
        self.fails("mdx-train", self.table, "--objective", "ldae", "--tokenizer", rgb, "--steps", 1, "-o", ckpt,
                   *TINY, contains=("3 channels",))
        self.assertNoOutput(ckpt)


if __name__ == "__main__":
    unittest.main()
