"""mdx-corrupt: what each objective does to images, checked with numpy from the written HDF5 data;
the PNG grid and its text chunks; determinism; bad inputs."""
import math
import os
import re
import sys
import unittest

import h5py
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import ToolTest  # noqa: E402


def linear_alpha_bar(T=1000):
    return np.cumprod(1 - np.linspace(1e-4, 0.02, T, dtype=np.float64))


def cosine_alpha_bar(T=1000):
    f = lambda t: np.cos((t / T + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    betas = np.minimum(1 - f(np.arange(1, T + 1)) / f(np.arange(T)), 0.999)
    return np.cumprod(1 - betas)


def tokens(x, p=4):
    """[R,H,W,C] -> [R, L, p*p*C] (MAE order)."""
    r, h, w, c = x.shape
    return x.reshape(r, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5).reshape(r, -1, p * p * c)


class Corrupt(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(2000)
        with h5py.File(cls.table, "r") as f:
            cls.images = f["images"][:]
            cls.labels = f["labels"][:]

    def x0(self, first=0, count=8):
        return self.images[first:first + count].astype(np.float64) / 127.5 - 1

    def corrupt_h5(self, *args):
        out = self.path("c.h5")
        self.ok("mdx-corrupt", self.table, "-o", out, *args)
        return h5py.File(out, "r")

    def test_dit_noise_follows_the_linear_schedule(self):
        f = self.corrupt_h5("--objective", "dit", "--count", 16, "--t", "0,300,999")
        np.testing.assert_array_equal(f["t"][:], [-1, 0, 300, 999])
        x0 = self.x0(count=16)
        c = f["corrupted"][:]
        self.assertEqual(c.shape, (16, 4, 28, 28, 1))
        np.testing.assert_allclose(c[:, 0], x0, atol=1e-6)  # the clean column
        self.assertFalse(f["masked"][:].any())
        ab = linear_alpha_bar()
        for k, t in ((1, 0), (2, 300), (3, 999)):
            eps = (c[:, k] - math.sqrt(ab[t]) * x0) / math.sqrt(1 - ab[t])
            self.assertAlmostEqual(eps.mean(), 0, delta=0.05)
            self.assertAlmostEqual(eps.std(), 1, delta=0.05)
        # `images` + `labels` form an image table of the R*K cells.
        self.assertEqual(f["images"].shape, (64, 28, 28, 1))
        np.testing.assert_array_equal(f["labels"][:], np.repeat(self.labels[:16], 4))
        np.testing.assert_array_equal(f["index"][:], np.arange(16))

    def test_umd_representation_then_noisy_steps(self):
        f = self.corrupt_h5("--objective", "umd", "--t", "0,500", "--first", 100)
        np.testing.assert_array_equal(f["t"][:], [-1, -1, 0, 500])
        np.testing.assert_allclose(f["mask_ratio"][:], [0, 0.75, 0.375, 0.375])
        m = f["masked"][:]
        self.assertEqual(m.shape, (8, 4, 49))
        np.testing.assert_array_equal(m.sum(2), np.array([[0, 37, 19, 19]] * 8))
        np.testing.assert_array_equal(f["dropped"][:], m)
        x0 = self.x0(first=100)
        c = f["corrupted"][:]
        # The representation step is clean: visible tokens equal x0.
        vis = ~m[:, 1].astype(bool)
        np.testing.assert_allclose(tokens(c[:, 1])[vis], tokens(x0)[vis], atol=1e-6)
        ab = cosine_alpha_bar()[500]
        eps = (c[:, 3] - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
        self.assertAlmostEqual(eps.std(), 1, delta=0.06)

    def test_mae_ratios_and_mage_policy(self):
        f = self.corrupt_h5("--objective", "mae", "--mask-ratio", "0.5,0.9", "--no-original")
        np.testing.assert_array_equal(f["masked"][:].sum(2), np.array([[25, 45]] * 8))
        x0 = self.x0()
        np.testing.assert_allclose(f["corrupted"][:, 0], x0, atol=1e-6)  # masked tokens keep their values
        f = self.corrupt_h5("--objective", "mae", "--mask-policy", "mage", "--draws", 3, "--no-original")
        ratios = f["mask_ratio"][:]
        self.assertTrue(((ratios >= 0.5) & (ratios <= 1)).all())
        masked, dropped = f["masked"][:], f["dropped"][:]
        for k, r in enumerate(ratios):
            self.assertTrue((masked[:, k].sum(1) == math.ceil(49 * r)).all())
            self.assertTrue((dropped[:, k].sum(1) == 25).all())
        self.assertFalse((dropped & ~masked).any())
        f = self.corrupt_h5("--objective", "mae", "--mask-policy", "lmd-piecewise", "--progress", "0,0.25,1",
                            "--no-original")
        np.testing.assert_allclose(f["mask_ratio"][:], [0.15, 0.40, 0.75])

    def test_augmentation_equals_a_reference_crop_and_flip(self):
        """--augment draws torchvision's RandomResizedCrop box and a flip per row; the clean column is
        that box resampled as torch.nn.functional.interpolate(bilinear, align_corners=False) does."""
        import torch
        for objective, area in (("mae", (0.2, 1)), ("umd", (0.8, 1))):
            with self.subTest(objective=objective):
                f = self.corrupt_h5("--objective", objective, "--augment", "auto", "--count", 64, "--t", "0")
                self.assertEqual(f.attrs["augment"], f"crop({area[0]:g}-{area[1]:g})+flip")
                boxes, K = f["augment_boxes"][:], f["corrupted"].shape[1]
                self.assertEqual(boxes.shape, (64, 5))
                self.assertTrue(0 < boxes[:, 4].sum() < 64)  # some rows flipped, some not
                shown = f["images"][::K, :, :, 0].astype(int)  # the clean column of each row
                for r, (top, left, h, w, flip) in enumerate(boxes):
                    self.assertTrue(0 <= top <= 28 - h and 0 <= left <= 28 - w)
                    share = h * w / 784
                    fallback = (h, w) == (28, 28)
                    if not fallback:  # torchvision's rounding of sqrt(area * ratio) bends the range a little
                        self.assertTrue(area[0] - 0.05 <= share <= area[1], (r, h, w))
                        self.assertTrue(0.75 * 0.85 <= w / h <= 4 / 3 / 0.85, (r, h, w))
                    crop = torch.from_numpy(self.images[r, top:top + h, left:left + w, 0].astype(np.float32))
                    ref = torch.nn.functional.interpolate(crop[None, None], size=(28, 28), mode="bilinear",
                                                          align_corners=False)[0, 0].numpy()
                    if flip:
                        ref = ref[:, ::-1]
                    # Rounded to the nearest uint8: within 0.5 of torch's value, but for float32's
                    # last bits at the many exact .5 cases of simple scales.
                    self.assertLessEqual(np.abs(shown[r] - ref).max(), 0.5 + 1e-3, r)
                # The same seed draws the same boxes; another seed others; --augment none none.
                again = self.corrupt_h5("--objective", objective, "--augment", "auto", "--count", 64, "--t", "0")
                np.testing.assert_array_equal(again["augment_boxes"][:], boxes)
                other = self.corrupt_h5("--objective", objective, "--augment", "auto", "--count", 64, "--t", "0",
                                        "--seed", 1)
                self.assertFalse(np.array_equal(other["augment_boxes"][:], boxes))
        f = self.corrupt_h5("--objective", "dit", "--t", "0")
        self.assertNotIn("augment_boxes", f)
        self.assertEqual(f.attrs["augment"], "none")
        f = self.corrupt_h5("--objective", "dit", "--augment", "auto", "--count", 32, "--t", "0")
        boxes = f["augment_boxes"][:]
        np.testing.assert_array_equal(boxes[:, :4], [[0, 0, 28, 28]] * 32)  # DiT: a flip only
        K = f["corrupted"].shape[1]
        for r, flip in enumerate(boxes[:, 4]):
            np.testing.assert_array_equal(f["images"][r * K, :, :, 0], self.images[r, :, ::-1, 0] if flip
                                          else self.images[r, :, :, 0])

    def test_ldae_noise_stays_in_the_pca_subspace(self):
        pca = self.path("pca.h5")
        self.ok("mdx-pca-fit", self.table, "--patch", 4, "--dim", 5, "-o", pca)
        f = self.corrupt_h5("--objective", "ldae", "--tokenizer", pca, "--t", "0,700")
        with h5py.File(pca, "r") as p:
            mean, comps = p["mean"][:], p["components"][:]
        c = f["corrupted"][:]
        for k in (1, 2):
            resid = (tokens(c[:, k]) - mean) @ comps[5:].T  # outside the first 5 components
            self.assertLess(np.abs(resid).max(), 1e-4)
        # At t = 0 (gamma = 1, sigma = 0) the input is x0 projected on the subspace.
        z = (tokens(self.x0()) - mean) @ comps[:5].T
        np.testing.assert_allclose(tokens(c[:, 1]), z @ comps[:5] + mean, atol=1e-5)

    def test_png_grid_metadata_and_determinism(self):
        a, b, c = self.path("a.png"), self.path("b.png"), self.path("c.png")
        bare = ("--no-labels",)
        self.ok("mdx-corrupt", self.table, "--objective", "umd", "--count", 3, "--seed", 5, *bare, "-o", a)
        self.ok("mdx-corrupt", self.table, "--objective", "umd", "--count", 3, "--seed", 5, *bare, "-o", b)
        self.ok("mdx-corrupt", self.table, "--objective", "umd", "--count", 3, "--seed", 6, *bare, "-o", c)
        ia, ib, ic = Image.open(a), Image.open(b), Image.open(c)
        for key in ("mdx_tool", "mdx_command", "mdx_seed", "mdx_columns", "mdx_objective", "mdx_schedule",
                    "history"):
            self.assertIn(key, ia.text)
        self.assertEqual(ia.text["mdx_objective"], "umd")
        self.assertEqual(ia.text["mdx_schedule"], "cosine")
        self.assertEqual(ia.text["mdx_seed"], "5")
        self.assertEqual(len(ia.text["history"].splitlines()), 2)
        # 3 rows, 7 columns (clean, representation, 5 noisy steps) of 28*3 px cells with 2 px gaps.
        self.assertEqual(ia.size, (7 * 84 + 8 * 2, 3 * 84 + 4 * 2))
        self.assertEqual(np.asarray(ia).tobytes(), np.asarray(ib).tobytes())
        self.assertNotEqual(np.asarray(ia).tobytes(), np.asarray(ic).tobytes())
        # Masked patches are blue; the clean column shows the image itself.
        px = np.asarray(ia)
        cell = px[2:86, 2 + 86:2 + 86 + 84]
        blue = (cell == [40, 100, 220]).all(-1).mean()
        self.assertAlmostEqual(blue, 37 / 49, delta=0.01)
        clean = px[2:86:3, 2:86:3, 0]
        np.testing.assert_array_equal(clean, self.images[0, :, :, 0])
        self.assertEqual(ia.text["mdx_cells"], "3 x 7 cells of 84 x 84 px, first at (2, 2), pitch (86, 86)")
        # Labelled (the default): bands above and left of the same cells, with ink in them; the
        # cells lie where mdx_cells says, bit for bit those of the bare grid.
        lab = self.path("labelled.png")
        self.ok("mdx-corrupt", self.table, "--objective", "umd", "--count", 3, "--seed", 5, "-o", lab)
        il = Image.open(lab)
        m = re.fullmatch(r"3 x 7 cells of 84 x 84 px, first at \((\d+), (\d+)\), pitch \(86, 86\)",
                         il.text["mdx_cells"])
        self.assertIsNotNone(m, il.text["mdx_cells"])
        x, y = int(m.group(1)), int(m.group(2))
        self.assertGreater(x, 2)
        self.assertGreater(y, 2)
        pl = np.asarray(il)
        self.assertEqual(pl.shape, (y + 3 * 86, x + 7 * 86, 3))
        np.testing.assert_array_equal(pl[y - 2:, x - 2:], px)
        for k in range(7):  # every column's label
            self.assertTrue((pl[:y - 2, x + 86 * k:x + 86 * k + 84] < 128).any(), k)
        for r in range(3):  # every row's label
            self.assertTrue((pl[y + 86 * r:y + 86 * r + 84, :x - 2] < 128).any(), r)

    def test_image_file_input(self):
        for i in range(2):
            Image.fromarray(self.images[i, :, :, 0]).save(self.path(f"{i}.png"))
        out = self.path("f.h5")
        self.ok("mdx-corrupt", self.path("0.png"), self.path("1.png"), "--objective", "mae", "-o", out)
        with h5py.File(out, "r") as f:
            np.testing.assert_allclose(f["corrupted"][:, 0], self.x0(count=2), atol=1e-6)

    def test_bad_inputs(self):
        out = self.path("x.png")
        self.fails("mdx-corrupt", self.table, "--objective", "ldae", "-o", out, code=2, contains=("tokenizer",))
        # A schedule of 2e9 steps would allocate 48 GB before anything is checked.
        self.fails("mdx-corrupt", self.table, "--timesteps", 2000000000, "-o", out, code=2,
                   contains=("--timesteps must be at most 100000",))
        self.fails("mdx-corrupt", self.table, "-o", self.path("x.jpg"), code=2)
        self.fails("mdx-corrupt", self.table, "--t", 1000, "-o", out, code=2)
        self.fails("mdx-corrupt", self.table, "--objective", "dit", "--mask-policy", "mage", "-o", out, code=2)
        self.fails("mdx-corrupt", self.table, "--patch", 5, "-o", out, contains=("patch size 5",))
        self.fails("mdx-corrupt", self.table, "--first", 5000, "-o", out, contains=("past the end",))
        with open(self.path("bad.png"), "wb") as f:
            f.write(b"\x89PNG\r\n\x1a\nshort")
        self.fails("mdx-corrupt", self.path("bad.png"), "-o", out, contains=("bad.png",))
        self.assertNoOutput(out)


if __name__ == "__main__":
    unittest.main()
