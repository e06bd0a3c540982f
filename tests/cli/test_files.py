"""Every file a tool reads (options included) and every file it writes (side files included) is
known to one check made before any work starts: no input is overwritten, no output lost, nothing
left under a final name by a failed run; an empty shard is still a table that merges."""
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import FMNIST, ToolTest, read_bytes, run, tool  # noqa: E402

TINY = ["--dim", "32", "--depth", "1", "--decoder-depth", "1", "--heads", "2", "--batch", "8", "--threads", "1",
        "-q"]


class Files(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(64)
        cls.pca = cls.pca_table(cls.table, 4)
        cls.ckpt = os.path.join(cls.shared, "gen.h5")
        r = run("mdx-train", cls.table, "--objective", "dit", "--class-cond", "--steps", 1, "-o", cls.ckpt, *TINY)
        assert r.returncode == 0, r.stderr

    def copy(self, src, name):
        dst = self.path(name)
        shutil.copy(src, dst)
        return dst

    def refused(self, name, victim, *args, contains=("refusing to overwrite an input",)):
        """The tool exits 1 with one error line, and `victim` is byte-for-byte what it was."""
        before = read_bytes(victim)
        self.fails(name, *args, contains=contains)
        self.assertEqual(read_bytes(victim), before, f"{victim} was changed")

    def test_secondary_inputs_are_never_outputs(self):
        pca = self.copy(self.pca, "p.h5")
        self.refused("mdx-corrupt", pca, self.table, "--objective", "ldae", "--tokenizer", pca, "-o", pca)
        self.refused("mdx-train", pca, self.table, "--objective", "ldae", "--tokenizer", pca, "--steps", 1, "-o", pca,
                     *TINY)
        labels = self.copy(f"{FMNIST}/t10k-labels-idx1-ubyte.gz", "lab.idx.gz")
        self.refused("mdx-tokenize", labels, f"{FMNIST}/t10k-images-idx3-ubyte.gz", "--labels", labels, "--limit", 5,
                     "-o", labels)
        ckpt = self.copy(self.ckpt, "c.h5")
        tok = self.copy(self.pca, "t.h5")
        self.refused("mdx-embed", tok, ckpt, self.table, "--tokenizer", tok, "-o", tok)
        self.refused("mdx-fid", ckpt, self.table, "--encoder", ckpt, "--save-stats", ckpt)

    def test_training_side_files(self):
        # An input named like the run's metrics file or preview, or --init naming -o, is refused
        # before a single step: nothing is written.
        metrics = self.copy(self.table, "m.metrics.jsonl")
        self.refused("mdx-train", metrics, metrics, "--steps", 1, "-o", self.path("m.h5"), *TINY)
        preview = self.copy(self.ckpt, "m.preview.png")
        self.refused("mdx-train", preview, self.table, "--init", preview, "--steps", 1, "-o", self.path("m.h5"), *TINY)
        g = self.copy(self.ckpt, "g.h5")
        self.refused("mdx-train", g, self.table, "--init", g, "--steps", 50, "-o", g, *TINY)
        self.assertFalse(os.path.exists(self.path("g.metrics.jsonl")))
        self.assertFalse(os.path.exists(self.path("m.h5")))

    def test_two_outputs_are_never_one_file(self):
        out = self.path("s.png")
        self.fails("mdx-sample", self.ckpt, "--steps", 2, "--per-class", 1, "-o", out, "--grid", out,
                   contains=("one would be lost",))
        self.assertNoOutput(out)

    def test_an_empty_sample_shard_is_a_table_that_merges(self):
        parts = []
        for i in range(3):
            p = self.path(f"part{i}.h5")
            self.ok("mdx-sample", "-q", self.ckpt, "--classes", 0, "--per-class", 2, "--steps", 2, "--shard", f"{i}/3",
                    "-o", p)
            parts.append(p)
        with h5py.File(parts[0], "r") as f:
            self.assertEqual(f["images"].shape, (0, 28, 28, 1))
        merged = self.path("all.h5")
        self.ok("mdx-tokenize", "-q", *parts, "-o", merged)
        whole = self.path("whole.h5")
        self.ok("mdx-sample", "-q", self.ckpt, "--classes", 0, "--per-class", 2, "--steps", 2, "-o", whole)
        with h5py.File(merged, "r") as a, h5py.File(whole, "r") as b:
            np.testing.assert_array_equal(a["images"][()], b["images"][()])
            np.testing.assert_array_equal(a["labels"][()], b["labels"][()])

    def full_disk(self):
        """A 2 MB tmpfs filled to about 4 KiB free (needs root); unmounted when the test ends."""
        if os.geteuid() != 0:
            self.skipTest("mounting a small tmpfs needs root")
        mnt = tempfile.mkdtemp(prefix="mdx-full-")
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", mnt]).returncode != 0:
            os.rmdir(mnt)
            self.skipTest("cannot mount a tmpfs here")
        self.addCleanup(os.rmdir, mnt)
        self.addCleanup(subprocess.run, ["umount", mnt])
        with open(os.path.join(mnt, "filler"), "wb") as f:
            f.write(b"\0" * (2 * 1024 * 1024 - 4096 - 64 * 1024))
        with open(os.path.join(mnt, "filler2"), "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
                    if os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize <= 4096:
                        break
            except OSError:
                pass
        return mnt

    def test_a_full_disk_at_the_final_flush_is_one_line_not_a_crash(self):
        """HDF5 outputs whose last flush fails: exit 1 with one line (it was 139, a crash at exit)."""
        mnt = self.full_disk()
        cases = [("mdx-pca-fit", self.table, "--patch", 4, "--dim", 4),
                 ("mdx-embed", self.ckpt, self.table),
                 ("mdx-train", self.table, "--steps", 1, *TINY),
                 ("mdx-sample", self.ckpt, "--steps", 2, "--per-class", 1),
                 ("mdx-fid", self.table, "--encoder", self.ckpt, "--save-stats")]
        for name, *args in cases:
            with self.subTest(tool=name):
                out = os.path.join(mnt, "out.h5")
                args = [*args, out] if args[-1] == "--save-stats" else [*args, "-o", out]
                r = run(name, "-q", *args)
                self.assertEqual(r.returncode, 1, r.stderr)
                lines = [l for l in r.stderr.splitlines() if l.strip()]
                self.assertEqual(len(lines), 1, r.stderr)
                self.assertTrue(lines[0].startswith(f"{name}: error: "), r.stderr)
                # (mdx-train's metrics file is written in place: mdx-train(1) BUGS.)
                left = [f for f in os.listdir(mnt) if not f.startswith("filler") and not f.endswith(".metrics.jsonl")]
                self.assertEqual(left, [])
                for f in os.listdir(mnt):
                    if f.endswith(".metrics.jsonl"):
                        os.remove(os.path.join(mnt, f))

    @unittest.skipUnless(os.geteuid() == 0, "mounting a small tmpfs needs root")
    def test_a_failed_grid_leaves_no_table(self):
        mnt = tempfile.mkdtemp(prefix="mdx-full-")
        try:
            if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", mnt]).returncode != 0:
                self.skipTest("cannot mount a tmpfs here")
            try:
                with open(os.path.join(mnt, "filler"), "wb") as f:
                    try:
                        f.write(b"\0" * (1 << 20))
                    except OSError:
                        pass
                out = self.path("s.h5")
                grid = os.path.join(mnt, "s.png")
                self.fails("mdx-sample", self.ckpt, "--steps", 2, "--per-class", 8, "-o", out, "--grid", grid)
                self.assertNoOutput(out)
                self.assertFalse(os.path.exists(grid))
            finally:
                subprocess.run(["umount", mnt])
        finally:
            os.rmdir(mnt)


class SecondHostileRun(ToolTest):
    """Cases a second hostile-input run found: each a crash, a lost output, an unprefixed line or an
    error that named nothing, before the fix."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(64)
        cls.ckpt = os.path.join(cls.shared, "umd.h5")
        r = run("mdx-train", cls.table, "--steps", 2, "--save-every", 1, "-o", cls.ckpt, *TINY)
        assert r.returncode == 0, r.stderr

    def test_a_newline_in_a_name_stays_on_the_error_line(self):
        r = self.fails("mdx-pca-fit", self.path("no\nsuch.h5"), "-o", self.path("o.h5"), contains=("no\\nsuch.h5",))
        self.assertEqual(len(r.stderr.splitlines()), 1)
        r = self.fails("mdx-tokenize", self.table, "-o", self.path("no\ndir", "o.h5"), contains=("no\\ndir",))
        self.assertEqual(len(r.stderr.splitlines()), 1)

    def test_standard_output_that_cannot_be_written_is_an_error(self):
        emb = self.path("e.h5")
        self.ok("mdx-embed", self.ckpt, self.table, "-o", emb)
        with open("/dev/full", "w") as full:
            for args in ((emb, emb), ("--help",)):
                with self.subTest(args=args):
                    r = subprocess.run([tool("mdx-probe"), *args, "-q"], stdout=full, stderr=subprocess.PIPE,
                                       text=True)
                    self.assertEqual(r.returncode, 1, r.stderr)
                    self.assertTrue(r.stderr.startswith("mdx-probe: error: cannot write standard output"), r.stderr)
        # A closed pipe: exit 1 with the error line, not death by SIGPIPE (141).
        p = subprocess.Popen([tool("mdx-probe"), emb, emb, "-q"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.stdout.close()
        _, err = p.communicate(timeout=120)
        self.assertEqual(p.returncode, 1, err)
        self.assertIn("cannot write standard output", err)

    def test_outputs_are_regular_files(self):
        fifo = self.path("fifo.h5")
        os.mkfifo(fifo)
        self.fails("mdx-pca-fit", self.table, "-o", fifo, contains=("a FIFO", "regular files"))
        self.assertTrue(os.path.exists(fifo))
        # A side file that names a directory is refused before any work, and the directory stays.
        os.mkdir(self.path("o.metrics.jsonl"))
        self.fails("mdx-train", self.table, "--steps", 1, "-o", self.path("o.h5"), *TINY,
                   contains=("o.metrics.jsonl", "a directory"))
        self.assertTrue(os.path.isdir(self.path("o.metrics.jsonl")))

    def test_a_name_near_the_length_limit(self):
        out = self.path("b" * 247 + ".h5")  # 250 bytes: its temporary name would pass 255
        self.ok("mdx-tokenize", self.table, "-o", out)
        self.assertEqual(h5py.File(out, "r")["images"].shape[0], 64)

    def test_empty_values_and_unreadable_configurations(self):
        self.fails("mdx-tokenize", f"{FMNIST}/t10k-images-idx3-ubyte.gz", "--labels", "", "--limit", 4,
                   "-o", self.path("o.h5"), code=2, contains=("--labels", "empty"))
        r = self.fails("mdx-pca-fit", self.table, "--config", self.ckpt, "-o", self.path("o.h5"), code=2,
                       contains=(f"--config '{self.ckpt}'", "\\x89HDF"))
        self.assertNotIn("\x89", r.stderr)
        self.fails("mdx-sample", self.ckpt, "--count", 1, "--eta", "inf", "-o", self.path("s.h5"), code=2,
                   contains=("--eta",))

    def test_damaged_checkpoints_are_named_not_used(self):
        for what, damage, says in (
                ("step", lambda f: f.attrs.__setitem__("step", -5), "its step is -5"),
                ("rng", lambda f: (f.__delitem__("rng"), f.create_dataset("rng", data=np.zeros(100, np.uint8))),
                 "'rng' (100 bytes) is damaged"),
                ("slot", lambda f: f["optimizer/exp_avg"].__delitem__("cls"), "optimizer/exp_avg/cls is missing"),
                ("heads", lambda f: f["config"].attrs.__setitem__("heads", "3"), "its configuration is damaged")):
            with self.subTest(what=what):
                bad = self.path(f"{what}.h5")
                shutil.copy(self.ckpt, bad)
                with h5py.File(bad, "r+") as f:
                    damage(f)
                before = read_bytes(bad)
                self.fails("mdx-train", self.table, "--steps", 4, "--resume", "-o", bad, *TINY, contains=(bad, says))
                self.assertEqual(read_bytes(bad), before)
                self.assertFalse(os.path.exists(self.path(f"{what}.metrics.jsonl")))
        self.fails("mdx-embed", self.path("heads.h5"), self.table, "-o", self.path("e.h5"),
                   contains=("heads.h5", "its configuration is damaged"))

    def test_empty_inputs_are_named(self):
        empty = self.path("zero.h5")
        with h5py.File(empty, "w") as f:
            f["images"] = np.zeros((0, 28, 28, 1), np.uint8)
        self.fails("mdx-train", empty, "--steps", 1, "-o", self.path("o.h5"), *TINY, contains=("zero.h5", "no images"))
        self.fails("mdx-pca-fit", empty, "-o", self.path("o.h5"), contains=("zero.h5", "no images"))
        self.fails("mdx-corrupt", empty, "-o", self.path("o.png"), contains=("zero.h5", "no images"))
        self.fails("mdx-tokenize", empty, "-o", self.path("o.h5"), contains=("zero.h5", "held none"))
        os.mkdir(self.path("emptydir"))
        self.fails("mdx-tokenize", self.path("emptydir"), "-o", self.path("o.h5"), contains=("emptydir",))
        # IDX headers whose items are 0x0 or 65535x65535 pixels: damaged, named, nothing allocated.
        for rows, cols in ((0, 0), (65535, 65535)):
            idx = self.path(f"z{rows}-idx3-ubyte")
            with open(idx, "wb") as f:
                f.write(bytes([0, 0, 8, 3]) + (2).to_bytes(4, "big") + rows.to_bytes(4, "big") + cols.to_bytes(4, "big"))
            self.fails("mdx-tokenize", idx, "-o", self.path("o.h5"), contains=(idx, "damaged"))
        flat = self.path("flat.h5")
        with h5py.File(flat, "w") as f:
            f["embeddings"] = np.zeros((8, 0), np.float32)
            f["labels"] = np.arange(8) % 2
        self.fails("mdx-probe", flat, flat, contains=("flat.h5", "0 features"))


if __name__ == "__main__":
    unittest.main()
