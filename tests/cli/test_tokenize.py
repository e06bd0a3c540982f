"""mdx-tokenize on real inputs: Fashion-MNIST IDX files, folders of images in every format, tables;
byte-exact against independent decoders (gzip + numpy, PIL); bad inputs; signals."""
import gzip
import os
import signal
import subprocess
import struct
import sys
import unittest
import zlib

import h5py
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import FMNIST, ToolTest, read_bytes, run, tool, write_bytes  # noqa: E402


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


class FashionMnist(ToolTest):
    def test_idx_byte_identical_with_provenance(self):
        for split, n in (("t10k", 10000), ("train", 60000)):
            out = self.path(f"{split}.h5")
            self.ok("mdx-tokenize", f"{FMNIST}/{split}-images-idx3-ubyte.gz",
                    "--labels", f"{FMNIST}/{split}-labels-idx1-ubyte.gz", "-o", out)
            images = read_idx(f"{FMNIST}/{split}-images-idx3-ubyte.gz")
            labels = read_idx(f"{FMNIST}/{split}-labels-idx1-ubyte.gz")
            with h5py.File(out, "r") as f:
                self.assertEqual(f["images"].dtype, np.uint8)
                self.assertEqual(f["images"].shape, (n, 28, 28, 1))
                self.assertEqual(f["labels"].dtype, np.int64)
                np.testing.assert_array_equal(f["images"][:, :, :, 0], images)
                np.testing.assert_array_equal(f["labels"][:], labels)
                self.assertEqual(f["images"].chunks[1:], (28, 28, 1))
                for key in ("mdx_tool", "mdx_version", "mdx_command", "mdx_options", "mdx_seed",
                            "mdx_libtorch", "mdx_device", "mdx_created", "mdx_inputs", "history"):
                    self.assertIn(key, f.attrs)
                self.assertEqual(f.attrs["mdx_tool"], "mdx-tokenize")
                self.assertIn("train-images" if split == "train" else "t10k-images", f.attrs["mdx_inputs"])
                self.assertIn("--labels", f.attrs["mdx_command"])
                self.assertEqual(len(f.attrs["history"].splitlines()), 1)

    def test_label_names(self):
        out = self.path("named.h5")
        names = "T-shirt/top,Trouser,Pullover,Dress,Coat,Sandal,Shirt,Sneaker,Bag,Ankle boot"
        self.ok("mdx-tokenize", f"{FMNIST}/t10k-images-idx3-ubyte.gz", "--labels",
                f"{FMNIST}/t10k-labels-idx1-ubyte.gz", "--label-names", names, "--limit", 20, "-o", out)
        with h5py.File(out, "r") as f:
            got = [n.decode() if isinstance(n, bytes) else n for n in f["label_names"][:]]
            self.assertEqual(got, names.split(","))
        self.fails("mdx-tokenize", f"{FMNIST}/t10k-images-idx3-ubyte.gz", "--label-names", "a,b", "-o",
                   self.path("x.h5"), code=2, contains=("no labels",))
        self.assertNoOutput(self.path("x.h5"))

    def test_limit_shards_and_tables(self):
        src = f"{FMNIST}/t10k-images-idx3-ubyte.gz"
        lab = f"{FMNIST}/t10k-labels-idx1-ubyte.gz"
        parts = []
        for i in range(3):
            parts.append(self.path(f"part{i}.h5"))
            self.ok("mdx-tokenize", src, "--labels", lab, "--limit", 1000, "--shard", f"{i}/3", "-o", parts[-1])
        images = read_idx(src)[:1000]
        got = np.concatenate([h5py.File(p, "r")["images"][:, :, :, 0] for p in parts])
        np.testing.assert_array_equal(got, images)
        # Shards given together act as one table; history carries both steps.
        merged = self.path("merged.h5")
        self.ok("mdx-tokenize", *parts, "--channels", 3, "-o", merged)
        with h5py.File(merged, "r") as f:
            self.assertEqual(f["images"].shape, (1000, 28, 28, 3))
            for c in range(3):
                np.testing.assert_array_equal(f["images"][:, :, :, c], images)
            np.testing.assert_array_equal(f["labels"][:], read_idx(lab)[:1000])
            hist = f.attrs["history"].splitlines()
            self.assertEqual(len(hist), 4)  # three shard lines, then this step
            self.assertIn("--shard 0/3", hist[0])

    def test_resize(self):
        out = self.path("r.h5")
        self.ok("mdx-tokenize", f"{FMNIST}/t10k-images-idx3-ubyte.gz", "--limit", 10, "--size", "14x14", "-o", out)
        with h5py.File(out, "r") as f:
            self.assertEqual(f["images"].shape, (10, 14, 14, 1))
            # Area interpolation by exactly 2: each pixel is the rounded mean of a 2x2 block.
            src = read_idx(f"{FMNIST}/t10k-images-idx3-ubyte.gz")[:10].astype(np.float64)
            ref = src.reshape(10, 14, 2, 14, 2).mean(axis=(2, 4))
            self.assertLessEqual(np.abs(f["images"][:, :, :, 0] - ref).max(), 0.5 + 1e-9)


class Folders(ToolTest):
    def make_folder(self):
        rng = np.random.default_rng(0)
        self.expected = {}
        for cls, fmt in (("coat", "png"), ("bag", "bmp"), ("shirt", "tiff")):
            os.makedirs(self.path("data", cls))
            for i in range(3):
                a = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
                p = self.path("data", cls, f"{i}.{fmt}")
                Image.fromarray(a).save(p)
                self.expected[p] = a
        return self.path("data")

    def test_class_folders(self):
        data = self.make_folder()
        out = self.path("t.h5")
        self.ok("mdx-tokenize", data, "-o", out, "--jobs", 2, "--block", 4)
        with h5py.File(out, "r") as f:
            names = [n.decode() if isinstance(n, bytes) else n for n in f["label_names"][:]]
            self.assertEqual(names, ["bag", "coat", "shirt"])
            np.testing.assert_array_equal(f["labels"][:], [0, 0, 0, 1, 1, 1, 2, 2, 2])
            order = [self.path("data", c, f"{i}.{e}") for c, e in (("bag", "bmp"), ("coat", "png"), ("shirt", "tiff"))
                     for i in range(3)]
            for k, p in enumerate(order):
                np.testing.assert_array_equal(f["images"][k], self.expected[p])

    def test_formats_and_channels(self):
        rng = np.random.default_rng(1)
        gray = rng.integers(0, 256, (8, 8), dtype=np.uint8)
        rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(gray).save(self.path("g.png"))
        Image.fromarray(np.dstack([rgb, np.full((8, 8), 7, np.uint8)])).save(self.path("rgba.png"))
        Image.fromarray((gray.astype(np.uint16) * 257)).save(self.path("g16.png"))
        Image.fromarray(rgb).save(self.path("c.webp"), lossless=True)
        Image.fromarray(rgb).save(self.path("c.jpg"), quality=95)
        out = self.path("o.h5")
        self.ok("mdx-tokenize", self.path("g.png"), self.path("g16.png"), "-o", out)
        with h5py.File(out, "r") as f:
            self.assertEqual(f["images"].shape, (2, 8, 8, 1))
            np.testing.assert_array_equal(f["images"][0, :, :, 0], gray)
            np.testing.assert_array_equal(f["images"][1, :, :, 0], gray)  # 16-bit scaled back
            self.assertNotIn("labels", f)
        self.ok("mdx-tokenize", self.path("rgba.png"), self.path("c.webp"), self.path("g.png"), "-o", out)
        with h5py.File(out, "r") as f:
            self.assertEqual(f["images"].shape, (3, 8, 8, 3))
            np.testing.assert_array_equal(f["images"][0], rgb)  # alpha dropped
            np.testing.assert_array_equal(f["images"][1], rgb)
            np.testing.assert_array_equal(f["images"][2], np.dstack([gray] * 3))
        self.ok("mdx-tokenize", self.path("c.jpg"), "-o", out)
        with h5py.File(out, "r") as f:
            ref = np.asarray(Image.open(self.path("c.jpg")).convert("RGB")).astype(int)
            self.assertLessEqual(np.abs(f["images"][0].astype(int) - ref).max(), 2)  # libjpeg versions
        self.ok("mdx-tokenize", self.path("c.webp"), "--channels", 1, "-o", out)
        with h5py.File(out, "r") as f:
            luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
            self.assertLessEqual(np.abs(f["images"][0, :, :, 0] - luma).max(), 0.5 + 1e-6)

    def test_png_variants(self):
        """Palette, interlaced, 16-bit RGB, gray+alpha and 1-bit PNGs decode as PIL reads them."""
        rng = np.random.default_rng(2)
        rgb = rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)
        rgb16 = rng.integers(0, 65536, (9, 7, 3), dtype=np.uint16)
        gray = rng.integers(0, 256, (9, 7), dtype=np.uint8)
        pal = Image.fromarray(rgb).quantize(16)
        pal.save(self.path("pal.png"))
        Image.fromarray(rgb).save(self.path("inter.png"), interlace=1)
        Image.fromarray(np.dstack([gray, gray[::-1]])).convert("LA").save(self.path("la.png"))
        Image.fromarray(gray > 127).save(self.path("bit.png"))
        # 16-bit RGB: PIL cannot write it, so the chunks are written here
        raw = b"".join(b"\0" + row.astype(">u2").tobytes() for row in rgb16)
        chunk = lambda t, d: struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
        write_bytes(self.path("rgb16.png"), b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 7, 9, 16, 2, 0, 0, 0))
                    + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
        out = self.path("o.h5")
        self.ok("mdx-tokenize", self.path("pal.png"), self.path("inter.png"), self.path("rgb16.png"), "-o", out)
        with h5py.File(out, "r") as f:
            np.testing.assert_array_equal(f["images"][0], np.asarray(pal.convert("RGB")))
            np.testing.assert_array_equal(f["images"][1], rgb)
            np.testing.assert_array_equal(f["images"][2], np.floor(rgb16 / 257 + 0.5).astype(np.uint8))
        self.ok("mdx-tokenize", self.path("la.png"), self.path("bit.png"), "-o", out)
        with h5py.File(out, "r") as f:
            self.assertEqual(f["images"].shape, (2, 9, 7, 1))
            np.testing.assert_array_equal(f["images"][0, :, :, 0], gray)  # alpha dropped
            np.testing.assert_array_equal(f["images"][1, :, :, 0], np.where(gray > 127, 255, 0))

    def test_size_mismatch_needs_resize(self):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(self.path("a.png"))
        Image.fromarray(np.zeros((9, 8), np.uint8)).save(self.path("b.png"))
        out = self.path("o.h5")
        self.fails("mdx-tokenize", self.path("a.png"), self.path("b.png"), "-o", out, contains=("b.png", "--size"))
        self.assertNoOutput(out)
        for fit in ("crop", "stretch", "pad"):
            self.ok("mdx-tokenize", self.path("a.png"), self.path("b.png"), "--size", 6, "--fit", fit, "-o", out)
            self.assertEqual(h5py.File(out, "r")["images"].shape, (2, 6, 6, 1))


class BadInputs(ToolTest):
    def setUp(self):
        super().setUp()
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(self.path("good.png"))
        data = read_bytes(self.path("good.png"))
        write_bytes(self.path("trunc.png"), data[: len(data) // 2])
        write_bytes(self.path("empty.png"), b"")
        write_bytes(self.path("text.jpg"), b"this is not a JPEG\n")
        # Complete files (IEND present) whose compressed rows or chunk checksum are damaged: libpng
        # rejects them, and its message must come as the tool's one error line.
        idat = data.index(b"IDAT")
        flipped = bytearray(data)
        flipped[idat + 6] ^= 0xFF  # inside the zlib stream: its CRC no longer matches either
        write_bytes(self.path("crc.png"), bytes(flipped))
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(self.path("good.jpg"))
        data = read_bytes(self.path("good.jpg"))
        write_bytes(self.path("trunc.jpg"), data[: len(data) * 2 // 3])
        self.out = self.path("out.h5")

    def test_each_bad_image_names_the_file(self):
        for bad in ("trunc.png", "empty.png", "text.jpg", "trunc.jpg", "crc.png"):
            with self.subTest(bad=bad):
                self.fails("mdx-tokenize", self.path("good.png"), self.path(bad), "-o", self.out, contains=(bad,))
                self.assertNoOutput(self.out)

    def test_a_dangling_link_in_a_class_folder_is_not_skipped_silently(self):
        os.makedirs(self.path("data", "coat"))
        os.link(self.path("good.png"), self.path("data", "coat", "a.png"))
        os.symlink(self.path("gone.png"), self.path("data", "coat", "b.png"))
        self.fails("mdx-tokenize", self.path("data"), "-o", self.out, contains=("b.png", "no such file"))
        self.assertNoOutput(self.out)
        r = run("mdx-tokenize", self.path("data"), "--skip-bad", "-o", self.out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("1 undecodable file(s) skipped", r.stderr)
        self.assertEqual(h5py.File(self.out, "r")["images"].shape[0], 1)

    def test_skip_bad_counts(self):
        r = run("mdx-tokenize", self.path("good.png"), self.path("trunc.png"), self.path("text.jpg"),
                "--skip-bad", "-o", self.out)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("2 undecodable file(s) skipped", r.stderr)
        with h5py.File(self.out, "r") as f:
            self.assertEqual(f["images"].shape[0], 1)
            self.assertEqual(f.attrs["skipped"], 2)
            self.assertEqual(len(f["skipped_files"]), 2)

    def test_truncated_hdf5(self):
        good = self.path("t.h5")
        self.ok("mdx-tokenize", self.path("good.png"), "-o", good)
        data = read_bytes(good)
        write_bytes(self.path("cut.h5"), data[: len(data) // 2])
        self.fails("mdx-tokenize", self.path("cut.h5"), "-o", self.out, contains=("cut.h5",))
        self.assertNoOutput(self.out)

    def test_idx_wrong_magic_and_missing_labels(self):
        raw = gzip.open(f"{FMNIST}/t10k-images-idx3-ubyte.gz").read()[:4096]
        with gzip.open(self.path("bad-idx3-ubyte.gz"), "wb") as f:
            f.write(b"\x00\x00\x09\x03" + raw[4:])
        self.fails("mdx-tokenize", self.path("bad-idx3-ubyte.gz"), "-o", self.out, contains=("magic number",))
        self.fails("mdx-tokenize", f"{FMNIST}/t10k-images-idx3-ubyte.gz", "--labels", self.path("nope.gz"),
                   "-o", self.out, contains=("nope.gz",))
        with gzip.open(self.path("short-idx3-ubyte.gz"), "wb") as f:
            f.write(raw)
        self.fails("mdx-tokenize", self.path("short-idx3-ubyte.gz"), "-o", self.out, contains=("truncated",))
        self.assertNoOutput(self.out)

    def test_unwritable_output_and_input_as_output(self):
        os.makedirs(self.path("ro"))
        os.chmod(self.path("ro"), 0o555)
        if os.access(self.path("ro"), os.W_OK):  # root ignores permissions: use a missing directory
            target = self.path("missing", "out.h5")
        else:
            target = self.path("ro", "out.h5")
        self.fails("mdx-tokenize", self.path("good.png"), "-o", target)
        self.assertFalse(os.path.exists(target))
        t = self.path("t.h5")
        self.ok("mdx-tokenize", self.path("good.png"), "-o", t)
        before = read_bytes(t)
        self.fails("mdx-tokenize", t, "-o", t, contains=("input",))
        self.assertEqual(read_bytes(t), before)

    def test_tables_with_other_channels_or_labels_are_refused(self):
        for c in (2, 4):
            with self.subTest(channels=c):
                t = self.path(f"c{c}.h5")
                with h5py.File(t, "w") as f:
                    f["images"] = np.zeros((3, 4, 4, c), np.uint8)
                self.fails("mdx-tokenize", t, "-o", self.out, contains=(f"c{c}.h5", f"{c} channels"))
        for label in (-1, 2**20):
            with self.subTest(label=label):
                t = self.path("lab.h5")
                with h5py.File(t, "w") as f:
                    f["images"] = np.zeros((3, 4, 4, 1), np.uint8)
                    f["labels"] = np.array([0, label, 1], np.int64)
                self.fails("mdx-tokenize", t, "-o", self.out, contains=("lab.h5", f"row 1 has a label of {label}"))
        self.assertNoOutput(self.out)

    def test_integers_beyond_their_type_are_refused(self):
        """CLI11 saturates 2^64 and 2^65 to the same seed and wraps -1: both are usage errors."""
        for value, says in (("99999999999999999999", "out of range"), ("18446744073709551616", "out of range"),
                            ("-1", "must not be negative")):
            with self.subTest(value=value):
                self.fails("mdx-tokenize", self.path("good.png"), "-o", self.out, "--seed", value, code=2,
                           contains=("--seed", says))
        self.fails("mdx-tokenize", self.path("good.png"), "-o", self.out, "--block", "99999999999999999999",
                   code=2, contains=("--block", "out of range"))

    def test_usage_errors_exit_2(self):
        self.fails("mdx-tokenize", self.path("good.png"), code=2)  # no -o
        self.fails("mdx-tokenize", self.path("good.png"), "-o", self.out, "--size", "0x3", code=2)
        self.fails("mdx-tokenize", self.path("good.png"), "-o", self.out, "--shard", "2/2", code=2)
        self.fails("mdx-tokenize", self.path("good.png"), "-o", self.out, "--no-such-option", code=2)
        for names, says in ((",,,", "name 1 of ',,,' is empty"), ("a,,b", "name 2 of 'a,,b' is empty")):
            self.fails("mdx-tokenize", f"{FMNIST}/t10k-images-idx3-ubyte.gz", "--labels",
                       f"{FMNIST}/t10k-labels-idx1-ubyte.gz", "--limit", 4, "--label-names", names, "-o", self.out,
                       code=2, contains=("--label-names", says))
        r = run("mdx-tokenize", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--labels", r.stdout)
        self.assertEqual(r.stderr, "")

    def test_a_signal_leaves_nothing(self):
        """SIGTERM (scancel) and SIGHUP (the ssh session closed) alike: exit 128 + N, no file."""
        for sig in (signal.SIGTERM, signal.SIGHUP):
            with self.subTest(signal=sig.name):
                out = self.path("big.h5")
                p = subprocess.Popen([tool("mdx-tokenize"), f"{FMNIST}/train-images-idx3-ubyte.gz", "--block", "8",
                                      "-o", out], stderr=subprocess.PIPE, text=True)
                p.stderr.readline()  # the first log line comes once the work has started
                p.send_signal(sig)
                _, err = p.communicate(timeout=60)
                self.assertEqual(p.returncode, 128 + sig, err)
                self.assertIn(f"interrupted by {sig.name}", err)
                self.assertNoOutput(out)


if __name__ == "__main__":
    unittest.main()
