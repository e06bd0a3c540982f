"""MAGE on VQ codes (training lowers the label-smoothed cross-entropy from ln K, the preview,
resume equal to an uninterrupted run with dropout on, MaskGIT samples per class, embedding), LMD
(MAE in a VAE's latent under LMD's mask schedule) and latent UMD (linear schedule by default, DDIM
decoded through the VAE, unclamped), and the errors of mismatched token spaces and samplers."""
import math
import os
import subprocess
import sys
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import ToolTest, metrics, tool  # noqa: E402

TINY = ["--dim", 32, "--depth", 1, "--decoder-depth", 1, "--heads", 2, "--batch", 32, "--threads", 1,
        "--log-every", 1, "--lr", "4e-3"]
CODES = 32


class MageLmd(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(1000)
        # Patch-wise tokenizers (4x4 cells: a 7x7 grid), fitted briefly: fast, and enough to train on.
        common = ["--form", "patch", "--patch", 4, "--width", 16, "--batch", 64, "--steps", 30, "--threads", 1,
                  "-q"]
        cls.vq = os.path.join(cls.shared, "vq.h5")
        cls.vae = os.path.join(cls.shared, "vae.h5")
        for name, out, extra in (("mdx-vq-fit", cls.vq, ["--codes", CODES, "--latent", 8]),
                                 ("mdx-vae-fit", cls.vae, ["--latent", 4])):
            r = subprocess.run([tool(name), cls.table, "-o", out, *map(str, common + extra)], capture_output=True,
                               text=True)
            assert r.returncode == 0, r.stderr
        cls.mage = os.path.join(cls.shared, "mage.ckpt.h5")
        r = subprocess.run([tool("mdx-train"), cls.table, "--objective", "mage", "--tokenizer", cls.vq,
                            "--class-cond", "--steps", "60", "--preview-every", "30", "-o", cls.mage,
                            *map(str, TINY)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    def test_mage_trains_on_codes(self):
        m = metrics(self.mage.replace(".ckpt.h5", ".ckpt.metrics.jsonl"))
        # At initialization the MLM head's logits are near zero: the cross-entropy starts at ln K.
        self.assertAlmostEqual(m[0]["ce_masked"], math.log(CODES), delta=0.15)
        self.assertLess(np.mean([x["ce_masked"] for x in m[-5:]]), m[0]["ce_masked"] - 0.3)
        with h5py.File(self.mage, "r") as f:
            c = dict(f["config"].attrs)
            self.assertEqual(c["objective"], "mage")
            self.assertEqual(c["mask_policy"], "mage")
            self.assertEqual(c["vocabulary"], str(CODES))
            self.assertEqual(c["dropout"], "0.1")
            self.assertEqual(c["positions"], "learned")
            self.assertEqual(c["label_smoothing"], "0.1")
            self.assertEqual(f["tokenizer"].attrs["kind"], "vq")
            self.assertIn("code_table.weight", f["model"])
            self.assertEqual(f["model"]["code_table.weight"].shape, (CODES + 1, 32))  # the codes and [MASK]
            self.assertEqual(c["ema"], "0")  # MAGE keeps no EMA
            self.assertFalse(set(f["ema"]) if "ema" in f else set())
        preview = [p for p in os.listdir(self.shared) if p.startswith("mage.ckpt.preview")]
        self.assertTrue(preview, os.listdir(self.shared))

    def test_mage_trains_on_pre_extracted_codes(self):
        # mdx-tokenize --tokenizer vq.h5 stores the codes; mdx-train reads them in place of the
        # images (no encoding, no augmentation) and trains as it does on the images' codes.
        codes = self.path("codes.h5")
        self.ok("mdx-tokenize", self.table, "--tokenizer", self.vq, "-o", codes)
        with h5py.File(codes, "r") as f:
            self.assertEqual(f["codes"].shape, (1000, 49))
        run = ["--objective", "mage", "--tokenizer", self.vq, "--class-cond", "--steps", 4, "--preview-every", 0,
               *TINY]
        a, b = self.path("from-images.h5"), self.path("from-codes.h5")
        self.ok("mdx-train", self.table, *run, "--augment", "none", "-o", a)
        r = self.ok("mdx-train", codes, *run, "-o", b)
        self.assertIn("pre-extracted codes", r.stderr)
        self.assertIn("no augmentation", r.stderr)  # MAGE's crop and flip need images
        la = [x["loss"] for x in metrics(self.path("from-images.metrics.jsonl"))]
        lb = [x["loss"] for x in metrics(self.path("from-codes.metrics.jsonl"))]
        self.assertEqual(len(la), 4)
        np.testing.assert_allclose(lb, la, rtol=1e-5)
        self.fails("mdx-train", codes, *run, "--augment", "flip", "-o", self.path("x.h5"), code=2,
                   contains=("pre-extracted latents cannot be cropped or flipped",))
        # Codes that the tokenizer cannot have made: one line, no checkpoint.
        for bad, says in ((CODES + 3, f"hold {CODES + 3} (image 3)"), (-1, "hold -1 (image 3)")):
            broken = self.path(f"codes{bad}.h5")
            with h5py.File(codes, "r") as f, h5py.File(broken, "w") as g:
                for k in f:
                    f.copy(k, g)
                for k, v in f.attrs.items():
                    g.attrs[k] = v
                g["codes"][3, 5] = bad
            with self.subTest(code=bad):
                self.fails("mdx-train", broken, *run, "-o", self.path("x.h5"), contains=(says,))
                self.assertNoOutput(self.path("x.h5"))

    def test_mage_resume_equals_uninterrupted(self):
        args = [self.table, "--objective", "mage", "--tokenizer", self.vq, "--steps", 16, "--save-every", 1000,
                *TINY]
        straight = self.path("a.ckpt.h5")
        self.ok("mdx-train", *args, "-o", straight)
        out = self.path("b.ckpt.h5")
        self.interrupt("mdx-train", [*args, "-o", out], self.path("b.ckpt.metrics.jsonl"), 5)
        self.ok("mdx-train", *args, "-o", out, "--resume")
        with h5py.File(straight, "r") as a, h5py.File(out, "r") as b:
            self.assertEqual(b.attrs["step"], 16)
            for n in a["model"]:
                np.testing.assert_array_equal(a["model"][n][:], b["model"][n][:], n)

    def test_maskgit_samples(self):
        out, grid = self.path("s.h5"), self.path("s.png")
        r = self.ok("mdx-sample", self.mage, "--classes", "0,7", "--per-class", 3, "-o", out, "--grid", grid,
                    "--threads", 1)
        self.assertIn("MaskGIT 12 steps (choice temperature 4.5)", r.stderr)
        with h5py.File(out, "r") as f:
            self.assertEqual(f["images"].shape, (6, 28, 28, 1))
            np.testing.assert_array_equal(f["labels"][:], [0, 0, 0, 7, 7, 7])
            self.assertEqual(f.attrs["sampler"], "maskgit")
            self.assertEqual(f.attrs["steps"], "12")
            self.assertEqual(f.attrs["choice_temperature"], "4.5")
            self.assertEqual(f.attrs["weights"], "raw")  # no EMA: the raw weights, said in the log
            first = f["images"][:]
        self.assertIn("no EMA weights", r.stderr)
        # The same seed gives the same samples, whatever the batch; guidance and steps change them.
        again = self.path("again.h5")
        self.ok("mdx-sample", self.mage, "--classes", "0,7", "--per-class", 3, "-o", again, "--batch", 2,
                "--threads", 1)
        np.testing.assert_array_equal(h5py.File(again, "r")["images"][:], first)
        other = self.path("other.h5")
        self.ok("mdx-sample", self.mage, "--classes", "0,7", "--per-class", 3, "-o", other, "--cfg", 3,
                "--steps", 4, "--choice-temperature", 0, "--threads", 1)
        with h5py.File(other, "r") as f:
            self.assertEqual(f.attrs["steps"], "4")
            self.assertFalse(np.array_equal(f["images"][:], first))

    def test_mage_embeds_and_corrupts(self):
        emb = self.path("e.h5")
        self.ok("mdx-embed", self.mage, self.table, "-o", emb, "--threads", 1)
        with h5py.File(emb, "r") as f:
            self.assertEqual(f["embeddings"].shape, (1000, 32))
            self.assertTrue(np.isfinite(f["embeddings"][:]).all())
        strip = self.path("strip.png")
        self.ok("mdx-corrupt", self.table, "--objective", "mage", "--tokenizer", self.vq, "--count", 2, "-o", strip)
        self.assertTrue(os.path.getsize(strip) > 0)

    def test_lmd_is_mae_in_the_vae_latent(self):
        out = self.path("lmd.ckpt.h5")
        self.ok("mdx-train", self.table, "--objective", "mae", "--tokenizer", self.vae, "--mask-policy",
                "lmd-cosine", "--steps", 30, "-o", out, *TINY)
        m = metrics(self.path("lmd.ckpt.metrics.jsonl"))
        self.assertLess(np.mean([x["loss"] for x in m[-5:]]), m[0]["loss"])
        # LMD's cosine scheduler: 0.15 at the start, rising over the first two thirds.
        with h5py.File(out, "r") as f:
            c = dict(f["config"].attrs)
            self.assertEqual(c["mask_policy"], "lmd-cosine")
            self.assertEqual(c["posterior"], "mean")
            self.assertEqual(c["grid_h"], "7")
            self.assertEqual(c["token_dim"], "4")
            self.assertEqual(f["tokenizer"].attrs["kind"], "vae")
        emb = self.path("lmd.emb.h5")
        self.ok("mdx-embed", out, self.table, "-o", emb, "--threads", 1)

    def test_latent_umd_linear_schedule_and_unclamped_ddim(self):
        out = self.path("lumd.ckpt.h5")
        self.ok("mdx-train", self.table, "--objective", "umd", "--tokenizer", self.vae, "--class-cond", "--steps", 20,
                "-o", out, *TINY)
        with h5py.File(out, "r") as f:
            self.assertEqual(f["config"].attrs["schedule"], "linear")  # LDM's, in a VAE's latent
            self.assertEqual(f["config"].attrs["posterior"], "sample")
        explicit = self.path("lumd-cos.ckpt.h5")
        self.ok("mdx-train", self.table, "--objective", "umd", "--tokenizer", self.vae, "--schedule", "cosine",
                "--steps", 2, "-o", explicit, *TINY)
        with h5py.File(explicit, "r") as f:
            self.assertEqual(f["config"].attrs["schedule"], "cosine")
        samples = self.path("lumd.s.h5")
        self.ok("mdx-sample", out, "--per-class", 1, "--steps", 5, "-o", samples, "--threads", 1)
        with h5py.File(samples, "r") as f:
            self.assertEqual(f["images"].shape, (10, 28, 28, 1))
            self.assertEqual(f.attrs["clip"], "0")  # the latent is not clamped to [-1, 1]
            self.assertEqual(f.attrs["sampler"], "ddim")

    def test_mismatched_spaces_and_samplers(self):
        out = self.path("x.ckpt.h5")
        self.fails("mdx-train", self.table, "--objective", "mage", "--steps", 1, "-o", out, *TINY, code=2,
                   contains=("--objective mage trains on discrete codes",))
        self.fails("mdx-train", self.table, "--objective", "mage", "--tokenizer", self.vae, "--steps", 1, "-o", out,
                   *TINY, contains=("trains on discrete codes", "gives continuous tokens"))
        self.fails("mdx-train", self.table, "--objective", "umd", "--tokenizer", self.vq, "--steps", 1, "-o", out,
                   *TINY, contains=("gives discrete codes",))
        self.assertNoOutput(out)
        self.fails("mdx-sample", self.mage, "--sampler", "ddim", "-o", self.path("s.h5"),
                   contains=("--sampler ddim drives diffusion models", "mage (maskgit)"))
        self.fails("mdx-sample", self.mage, "--steps", 0, "-o", self.path("s.h5"), code=2, contains=("--steps",))
        self.fails("mdx-sample", self.mage, "--choice-temperature", -1, "-o", self.path("s.h5"), code=2,
                   contains=("--choice-temperature",))
        umd = self.path("umd.ckpt.h5")
        self.ok("mdx-train", self.table, "--objective", "umd", "--class-cond", "--steps", 1, "-o", umd, *TINY)
        self.fails("mdx-sample", umd, "--sampler", "maskgit", "-o", self.path("s.h5"),
                   contains=("--sampler maskgit drives maskgit models", "umd (diffusion)"))
        self.fails("mdx-corrupt", self.table, "--objective", "mage", "-o", self.path("c.png"), code=2,
                   contains=("--objective mage trains on discrete codes",))


if __name__ == "__main__":
    unittest.main()
