"""mdx-sample: tables and grids with the classes asked for, seeded reproducibility independent of
batch and shard, guidance, provenance; bad inputs. (The samplers' mathematics is unit-tested against
exact denoisers in tests/unit/test_sample.cpp.)"""
import os
import re
import sys
import unittest

import h5py
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import ToolTest, run  # noqa: E402

SMALL = ["--dim", "32", "--depth", "1", "--decoder-depth", "1", "--heads", "2", "--batch", "16", "--threads", "1"]
NAMES = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"


class Sample(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = os.path.join(cls.shared, "named.h5")
        r = run("mdx-tokenize", "-q", cls.fmnist_table(200), "--label-names", NAMES, "-o", cls.table)
        assert r.returncode == 0, r.stderr
        cls.ckpt = os.path.join(cls.shared, "gen.ckpt.h5")
        r = run("mdx-train", "-q", cls.table, "-o", cls.ckpt, *SMALL, "--steps", 10, "--lr", "3e-3",
                "--ema", "0.5", "--class-cond", "--objective", "dit")
        assert r.returncode == 0, r.stderr
        cls.uncond = os.path.join(cls.shared, "umd.ckpt.h5")
        r = run("mdx-train", "-q", cls.table, "-o", cls.uncond, *SMALL, "--steps", 2)
        assert r.returncode == 0, r.stderr

    def sample(self, *args, ckpt=None, name="s.h5"):
        out = self.path(name)
        self.ok("mdx-sample", "-q", ckpt or self.ckpt, "-o", out, "--steps", 8, "--threads", 1, *args)
        with h5py.File(out, "r") as f:
            return (f["images"][()], f["labels"][()] if "labels" in f else None,
                    dict(f.attrs), [s.decode() for s in f["label_names"][()]] if "label_names" in f else None)

    def test_classes_labels_and_provenance(self):
        images, labels, attrs, names = self.sample("--classes", "3,7,1", "--per-class", 2, "--cfg", 1.5)
        self.assertEqual(images.shape, (6, 28, 28, 1))
        self.assertEqual(images.dtype, np.uint8)
        np.testing.assert_array_equal(labels, [3, 3, 7, 7, 1, 1])
        self.assertEqual(names, NAMES.split(","))
        for key, value in (("sampler", "ddim"), ("eta", "1"), ("steps", "8"), ("cfg", "1.5"), ("classes", "3,7,1"),
                           ("per_class", "2"), ("weights", "ema"), ("schedule", "linear"), ("predict", "eps")):
            self.assertEqual(attrs[key], value, key)
        self.assertEqual(attrs["mdx_tool"], "mdx-sample")
        self.assertIn("mdx-train", attrs["history"])
        self.assertGreater(images.std(), 1)  # not a blank table

    def test_same_seed_same_samples_whatever_the_batch_or_shard(self):
        whole, labels, _, _ = self.sample("--per-class", 3, "--batch", 7, "--seed", 5)
        again, _, _, _ = self.sample("--per-class", 3, "--batch", 30, "--seed", 5, name="again.h5")
        np.testing.assert_array_equal(whole, again)
        parts = [self.sample("--per-class", 3, "--batch", 4, "--seed", 5, "--shard", f"{i}/4", name=f"p{i}.h5")
                 for i in range(4)]
        np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), whole)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), labels)
        other, _, _, _ = self.sample("--per-class", 3, "--seed", 6, name="other.h5")
        self.assertGreater(np.abs(other.astype(int) - whole).max(), 10)

    def test_samplers_and_guidance_change_the_result(self):
        base, _, _, _ = self.sample("--per-class", 1, "--seed", 1)
        # DDIM with eta = 1 is DDPM's ancestral step with the posterior variance: the same samples.
        ddpm, _, _, _ = self.sample("--per-class", 1, "--seed", 1, "--sampler", "ddpm", name="ddpm.h5")
        self.assertLessEqual(np.abs(ddpm.astype(int) - base).max(), 1)
        for extra in (["--eta", 0], ["--eta", 0.5], ["--cfg", 3], ["--weights", "raw"], ["--predict", "x0"]):
            with self.subTest(extra=extra):
                other, _, attrs, _ = self.sample("--per-class", 1, "--seed", 1, *extra, name="o.h5")
                self.assertGreater(np.abs(other.astype(int) - base).max(), 0, extra)

    def test_grid_has_a_row_per_class_and_the_parameters(self):
        grid = self.path("g.png")
        self.ok("mdx-sample", "-q", self.ckpt, "--grid", grid, "--steps", 4, "--per-class", 3, "--classes", "0,9",
                "--cfg", 2)
        img = Image.open(grid)
        img.load()
        self.assertEqual(img.text["mdx_cfg"], "2")
        self.assertEqual(img.text["mdx_sampler"], "ddim")
        self.assertEqual(img.text["mdx_rows"], "T-shirt/top; Ankle boot")
        self.assertEqual(img.text["mdx_tool"], "mdx-sample")
        # 2 rows of 3 square cells, the class names drawn in a band left of them.
        m = re.fullmatch(r"2 x 3 cells of (\d+) x \1 px, first at \((\d+), 2\), pitch \((\d+), \3\)",
                         img.text["mdx_cells"])
        self.assertIsNotNone(m, img.text["mdx_cells"])
        cell, x, pitch = int(m.group(1)), int(m.group(2)), int(m.group(3))
        self.assertEqual(img.size, (x + 3 * pitch, 2 + 2 * pitch))
        px = np.asarray(img.convert("L"))
        for r in range(2):
            self.assertTrue((px[2 + r * pitch:2 + r * pitch + cell, :x - 2] < 128).any(), r)
        self.assertGreater(x, 6 * len("T-shirt/top") - 1)  # the widest name fits beside the cells
        self.assertTrue(img.text["mdx_cells"].startswith("2 x 3 cells of 84 x 84 px"))

    def test_unconditional_model(self):
        images, labels, attrs, _ = self.sample("--count", 5, ckpt=self.uncond)
        self.assertEqual(images.shape[0], 5)
        self.assertIsNone(labels)
        self.assertEqual(attrs["objective"], "umd")
        # UMD's self-supervised run keeps no EMA: its raw weights sample, and the tool says so.
        self.assertEqual(attrs["weights"], "raw")
        r = run("mdx-sample", self.uncond, "--count", 1, "--steps", 2, "-o", self.path("w.h5"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("has no EMA weights", r.stderr)

    def test_bad_inputs(self):
        out = self.path("bad.h5")
        self.fails("mdx-sample", self.uncond, "--classes", "1", "-o", out, contains=["not class-conditional"])
        self.fails("mdx-sample", self.ckpt, "--classes", "10", "-o", out, contains=["outside [0, 10)"])
        self.fails("mdx-sample", self.table, "-o", out, contains=["not an mdx checkpoint"])
        mae = self.path("mae.ckpt.h5")
        self.ok("mdx-train", "-q", self.table, "-o", mae, *SMALL, "--steps", 1, "--objective", "mae")
        self.fails("mdx-sample", mae, "--count", 2, "-o", out,
                   contains=["not a diffusion model nor a masked generative one", "--objective dit --class-cond"])
        self.fails("mdx-sample", self.ckpt, code=2, contains=["-o and/or --grid"])
        self.fails("mdx-sample", self.ckpt, "--grid", self.path("g.jpg"), code=2, contains=["must end in .png"])
        self.assertNoOutput(self.path("g.jpg"))
        self.fails("mdx-sample", self.ckpt, "-o", out, "--sampler", "euler", code=2)
        self.fails("mdx-sample", self.ckpt, "-o", out, "--steps", 5000, code=2)
        self.fails("mdx-sample", self.ckpt, "-o", self.ckpt, contains=["input"])
        self.assertNoOutput(out)


if __name__ == "__main__":
    unittest.main()
