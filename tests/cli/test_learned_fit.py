"""mdx-vae-fit and mdx-vq-fit: the patch-wise auto-encoder against a numpy forward pass of its saved
weights (latents, scale, reconstruction error), the fits lowering their losses, resume and two ranks
equal to one run (they run on mdx-train's frame), the tokenizer file read by mdx-train, and bad input."""
import json
import os
import socket
import subprocess
import sys
import unittest

import h5py
import numpy as np
from PIL import Image
from scipy.special import erf

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import ToolTest, metrics, tool  # noqa: E402

SMALL = ["--width", "16", "--batch", "32", "--threads", "1", "--log-every", "1"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def patches(images, p):
    n, h, w, c = images.shape
    x = images.astype(np.float64) / 127.5 - 1
    x = x.reshape(n, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(n, (h // p) * (w // p), p * p * c)


def gelu(x):
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def mlp(weights, prefix, x):
    """Linear, GELU, Linear, GELU, Linear (torch::nn::Sequential indices 0, 2, 4)."""
    for i in (0, 2, 4):
        x = x @ weights[f"{prefix}.{i}.weight"].T + weights[f"{prefix}.{i}.bias"]
        if i < 4:
            x = gelu(x)
    return x


class LearnedFit(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(2000)

    def fit(self, name, out, *args):
        return self.ok(name, self.table, "-o", out, *SMALL, *args)

    def test_patch_autoencoder_matches_numpy(self):
        out = self.path("pae.h5")
        r = self.fit("mdx-vae-fit", out, "--form", "patch", "--patch", 4, "--latent", 4, "--beta", 0, "--steps", 60,
                     "--lr", "3e-3", "--eval", self.table, "--eval-rows", 500)
        report = json.loads(r.stdout.strip().splitlines()[-1])
        m = metrics(self.path("pae.metrics.jsonl"))
        self.assertLess(np.mean([x["loss"] for x in m[-5:]]), 0.6 * m[0]["loss"])
        with h5py.File(out, "r") as f:
            t = f["tokenizer"]
            self.assertEqual(t.attrs["kind"], "vae")
            self.assertEqual(t.attrs["form"], "patch")
            self.assertEqual(t.attrs["stride"], 4)
            self.assertEqual(t.attrs["latent"], 4)
            scale = t.attrs["scale"]
            w = {k: t["weights"][k][:].astype(np.float64) for k in t["weights"]}
            self.assertEqual(f["config"].attrs["fit"], "vae")
            self.assertIn("encoder.0.weight", f["model"])
        images = h5py.File(self.table, "r")["images"][:]
        # The encoder gives (mean, log-variance) per patch; an auto-encoder's latent is the mean.
        mean = mlp(w, "encoder", patches(images[:2048], 4))[..., :4]
        self.assertAlmostEqual(scale, 1 / mean.std(ddof=1), delta=1e-4 * scale)
        # --eval: the reconstruction error of the first 500 rows, decoded from the means.
        x = patches(images[:500], 4)
        back = np.clip(mlp(w, "decoder", mlp(w, "encoder", x)[..., :4]), -1, 1)
        mse = ((back - x) ** 2).mean()
        self.assertEqual(report["rows"], 500)
        self.assertAlmostEqual(report["mse"], mse, delta=1e-4 * mse)
        self.assertAlmostEqual(report["psnr_db"], 10 * np.log10(4 / mse), places=2)

    def test_conv_vae_lowers_its_loss_and_is_a_tokenizer(self):
        out = self.path("vae.h5")
        r = self.fit("mdx-vae-fit", out, "--stride", 4, "--latent", 4, "--steps", 40, "--lr", "3e-3")
        self.assertIn("7x7 cells of 4 values", r.stderr)
        m = metrics(self.path("vae.metrics.jsonl"))
        self.assertEqual(m[-1]["step"], 40)
        self.assertIn("kl", m[-1])
        self.assertLess(np.mean([x["mse"] for x in m[-5:]]), 0.7 * m[0]["mse"])
        with h5py.File(out, "r") as f:
            self.assertGreater(f["tokenizer"].attrs["scale"], 0)
            self.assertEqual(f.attrs["mdx_tool"], "mdx-vae-fit")
        with Image.open(self.path("vae.preview.png")) as png:  # the columns drawn and described
            self.assertEqual(png.text["mdx_columns"], "clean; reconstruction from the posterior mean; "
                             "reconstruction from a posterior draw")
            self.assertIn(" x 3 cells", png.text["mdx_cells"])  # clean + 2 reconstructions
        # mdx-train reads it as a tokenizer: 49 tokens of 4 latent values.
        ck = self.path("lumd.h5")
        r = self.ok("mdx-train", self.table, "--tokenizer", out, "--dim", 32, "--depth", 1, "--decoder-depth", 1,
                    "--heads", 2, "--batch", 16, "--steps", 2, "--threads", 1, "-o", ck)
        self.assertIn("49 tokens of 4 values (vae", r.stderr)
        with h5py.File(ck, "r") as f:
            self.assertEqual(f["tokenizer"].attrs["kind"], "vae")
            self.assertTrue(f["config"].attrs["tokenizer_identity"].startswith("vae:"))

    def test_vq_fit_uses_its_codebook(self):
        out = self.path("vq.h5")
        r = self.fit("mdx-vq-fit", out, "--codes", 32, "--latent", 8, "--steps", 40, "--lr", "3e-3",
                     "--restart-every", 10, "--eval", self.table, "--eval-rows", 1000)
        self.assertIn("k-means", r.stderr)
        report = json.loads(r.stdout.strip().splitlines()[-1])
        m = metrics(self.path("vq.metrics.jsonl"))
        self.assertLess(np.mean([x["mse"] for x in m[-5:]]), 0.7 * m[0]["mse"])
        self.assertGreater(m[-1]["perplexity"], 8)
        self.assertGreaterEqual(report["codebook_usage"], 0.9)
        self.assertGreater(report["perplexity"], 8)
        with h5py.File(out, "r") as f:
            t = f["tokenizer"]
            self.assertEqual(t.attrs["kind"], "vq")
            self.assertEqual(t.attrs["codes"], 32)
            cb = t["quantizer/codebook"][:]
            self.assertEqual(cb.shape, (32, 8))
            np.testing.assert_array_equal(cb, f["model/codebook"][:])
        with Image.open(self.path("vq.preview.png")) as png:
            self.assertEqual(png.text["mdx_columns"], "clean; reconstruction from the codes")
        # Codes are not for the continuous objectives.
        self.fails("mdx-train", self.table, "--tokenizer", out, "--steps", 1, "-o", self.path("x.h5"),
                   contains=("discrete codes", "umd"))
        self.assertNoOutput(self.path("x.h5"))

    def test_training_on_pre_extracted_latents(self):
        vae = self.path("vae.h5")
        self.fit("mdx-vae-fit", vae, "--steps", 3)
        latents = self.path("latents.h5")
        r = self.ok("mdx-tokenize", self.table, "--tokenizer", vae, "-o", latents)
        with h5py.File(latents, "r") as f:
            self.assertEqual(f["latent_mean"].shape, (2000, 49, 4))
            self.assertEqual(f["tokenizer"].attrs["kind"], "vae")
            identity = f.attrs["tokens_identity"]
        model = ["--objective", "umd", "--dim", 32, "--depth", 1, "--decoder-depth", 1, "--heads", 2, "--batch", 16,
                 "--steps", 4, "--threads", 1, "--log-every", 1, "--tokenizer", vae]
        a, b = self.path("from-images.h5"), self.path("from-latents.h5")
        self.ok("mdx-train", self.table, *model, "-o", a)
        r = self.ok("mdx-train", latents, *model, "-o", b)
        self.assertIn("pre-extracted latents", r.stderr)
        self.assertIn("no augmentation", r.stderr)  # umd's crop needs images
        with h5py.File(b, "r") as f:
            self.assertEqual(f["config"].attrs["tokenizer_identity"], identity)
            self.assertEqual(f["config"].attrs["posterior"], "sample")
        # The same posterior draws either way: the losses agree up to the encoder's rounding (the
        # latents were encoded in blocks of 512, the images in batches of 16). Run a's images are
        # augmented by umd's crop, so compare with --augment none.
        c = self.path("from-images-plain.h5")
        self.ok("mdx-train", self.table, *model, "--augment", "none", "-o", c)
        lb = [x["loss"] for x in metrics(self.path("from-latents.metrics.jsonl"))]
        lc = [x["loss"] for x in metrics(self.path("from-images-plain.metrics.jsonl"))]
        np.testing.assert_allclose(lb, lc, rtol=1e-3)
        self.fails("mdx-train", latents, *model, "--augment", "flip", "-o", self.path("x.h5"), code=2,
                   contains=("pre-extracted latents cannot be cropped or flipped",))

    def test_resume_equals_uninterrupted(self):
        for name, extra in (("mdx-vae-fit", []), ("mdx-vq-fit", ["--codes", 16, "--restart-every", 5])):
            with self.subTest(tool=name):
                args = ["--steps", 30, "--save-every", 1000, *extra]
                straight = self.path(f"{name}-a.h5")
                self.fit(name, straight, *args)
                out = self.path(f"{name}-b.h5")
                log = self.path(f"{name}-b.metrics.jsonl")
                self.interrupt(name, [self.table, "-o", out, *SMALL, *args], log, 8)
                with h5py.File(out, "r") as f:
                    self.assertLess(f.attrs["step"], 30)
                self.fit(name, out, *args, "--resume")
                with h5py.File(straight, "r") as a, h5py.File(out, "r") as b:
                    self.assertEqual(b.attrs["step"], 30)
                    for name_ in a["model"]:
                        np.testing.assert_array_equal(a["model"][name_][:], b["model"][name_][:], name_)
                self.assertEqual([x["step"] for x in metrics(log)], list(range(1, 31)))

    def test_two_processes_equal_one(self):
        # (Restarted codes are rank 0's draws from its own rows, so restarts are off here.)
        for name, extra in (("mdx-vae-fit", []), ("mdx-vq-fit", ["--codes", 16, "--restart-every", 0])):
            with self.subTest(tool=name):
                args = [*SMALL, "--steps", 4, "--warmup", 0, *extra]
                one = self.path(f"{name}-one.h5")
                self.ok(name, self.table, "-o", one, *args)
                two = self.path(f"{name}-two.h5")
                port = free_port()
                ranks = []
                for rank in (1, 0):
                    env = dict(os.environ, WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1",
                               MASTER_PORT=str(port))
                    ranks.append(subprocess.Popen([tool(name), self.table, "-o", two, *map(str, args)], env=env,
                                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
                for p in ranks:
                    _, err = p.communicate(timeout=300)
                    self.assertEqual(p.returncode, 0, err)
                with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
                    for n in a["model"]:
                        np.testing.assert_allclose(a["model"][n][:], b["model"][n][:], rtol=0, atol=1e-5,
                                                   err_msg=f"{name} {n}")

    def test_bad_input(self):
        out = self.path("bad.h5")
        self.fails("mdx-vae-fit", self.table, "--stride", 3, "--steps", 1, "-o", out, code=2,
                   contains=("power of 2",))
        self.fails("mdx-vae-fit", self.table, "--stride", 8, "--steps", 1, "-o", out,
                   contains=("does not divide", "28x28"))
        self.fails("mdx-vae-fit", self.table, "--form", "conv", "--patch", 4, "--steps", 1, "-o", out, code=2,
                   contains=("--patch goes with --form patch",))
        self.fails("mdx-vq-fit", self.table, "--codes", 1, "--steps", 1, "-o", out, code=2, contains=("--codes",))
        self.fails("mdx-vae-fit", self.table, "--ema", 0.9, "--steps", 1, "-o", out, code=2, contains=("--ema",))
        self.assertNoOutput(out)
        # A VQ checkpoint continued as a VAE fit: refused, the checkpoint kept.
        vq = self.path("vq.h5")
        self.fit("mdx-vq-fit", vq, "--codes", 16, "--steps", 2)
        before = open(vq, "rb").read()
        self.fails("mdx-vae-fit", self.table, "-o", vq, *SMALL, "--steps", 4, "--resume",
                   contains=("is an mdx-vq-fit checkpoint, not an mdx-vae-fit one",))
        self.assertEqual(open(vq, "rb").read(), before)
        # A tokenizer whose weights were cut short.
        broken = self.path("broken.h5")
        with h5py.File(vq, "r") as src, h5py.File(broken, "w") as dst:
            src.copy("tokenizer", dst)
            src.copy("config", dst)
            del dst["tokenizer/weights/encoder.0.weight"]
        self.fails("mdx-train", self.table, "--tokenizer", broken, "--steps", 1, "-o", out,
                   contains=("encoder.0.weight is missing",))
        self.assertNoOutput(out)


if __name__ == "__main__":
    unittest.main()
