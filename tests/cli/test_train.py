"""mdx-train on Fashion-MNIST: every objective lowers its loss; checkpoints hold what SPEC says;
an interrupted and resumed run ends bit-identical to an uninterrupted one; bad inputs."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import unittest

import h5py
import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import FMNIST, ToolTest, metrics, read_bytes, tool  # noqa: E402

# A model small enough for 2 CPU cores: 64 wide, 2 + 1 blocks, 7x7 tokens of 4x4 pixels.
SMALL = ["--dim", "64", "--depth", "2", "--decoder-depth", "1", "--heads", "4", "--batch", "32", "--threads", "1"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Train(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(2000)
        cls.pca = cls.pca_table(cls.table, 8)

    def train(self, out, *args):
        return self.ok("mdx-train", self.table, "-o", out, *SMALL, *args)

    def test_each_objective_lowers_its_loss(self):
        for objective, extra in (("umd", []), ("mae", []), ("ldae", ["--tokenizer", self.pca]),
                                 ("dit", ["--class-cond"])):
            with self.subTest(objective=objective):
                out = self.path(f"{objective}.ckpt.h5")
                self.train(out, "--objective", objective, "--steps", 60, "--log-every", 1, "--lr", "2e-3",
                           "--ema", "0.9", *extra)
                m = metrics(self.path(f"{objective}.ckpt.metrics.jsonl"))
                self.assertEqual(m[-1]["step"], 60)
                first, last = m[0]["loss"], np.mean([r["loss"] for r in m[-3:]])
                self.assertLess(last, 0.8 * first, f"{objective}: loss {first} -> {last}")
                with h5py.File(out, "r") as f:
                    self.assertEqual(f.attrs["step"], 60)
                    self.assertEqual(f["config"].attrs["objective"], objective)
                    self.assertEqual(f["config"].attrs["height"], "28")
                    self.assertIn("encoder.0.qkv.weight", f["model"])
                    self.assertIn("encoder.0.qkv.weight", f["ema"])
                    self.assertIn("encoder.0.qkv.weight", f["optimizer/exp_avg"])
                    self.assertGreater(f["rng"].shape[0], 0)
                    self.assertEqual(f.attrs["mdx_tool"], "mdx-train")
                    self.assertEqual(len(f.attrs["history"].splitlines()), 2)
                    if objective == "dit":
                        self.assertEqual(f["config"].attrs["num_classes"], "10")
                        self.assertEqual(f["model/label_table.weight"].shape, (11, 64))
                png = Image.open(self.path(f"{objective}.ckpt.preview.png"))
                self.assertEqual(png.text["mdx_step"], "60")
                self.assertEqual(png.text["mdx_columns"], "clean; corrupted input (masked patches coloured); "
                                 "x0 prediction; prediction pasted into the masked patches")

    def test_resume_equals_uninterrupted(self):
        out = self.check_resume([])
        # A resume with other options would change the run halfway: refused, the checkpoint kept.
        before = open(out, "rb").read()
        self.fails("mdx-train", self.table, "-o", out, *SMALL, "--objective", "mae", "--steps", 80, "--seed", 7,
                   "--resume", contains=("--resume", "objective umd, not mae", "seed 0, not 7"))
        self.assertEqual(open(out, "rb").read(), before)

    def test_resume_equals_uninterrupted_when_streaming(self):
        # A 1.5 MiB budget streams the 1.5 MiB table in shuffled windows read ahead by a thread.
        self.check_resume(["--memory-budget", 0.0014])

    def check_resume(self, extra):
        straight = self.path("a.ckpt.h5")
        args = ["--objective", "umd", "--steps", 40, "--log-every", 1, "--save-every", 1000, "--ema", 0.9, *extra]
        r = self.train(straight, *args)
        self.assertEqual("streaming" in r.stderr, bool(extra), r.stderr)
        out = self.path("b.ckpt.h5")
        log = self.path("b.ckpt.metrics.jsonl")
        err = self.interrupt("mdx-train", [self.table, "-o", out, *SMALL, *args], log, 3)
        self.assertIn("continue with --resume", err)
        with h5py.File(out, "r") as f:
            stopped = f.attrs["step"]
        self.assertGreater(stopped, 2)
        self.assertLess(stopped, 40)
        self.train(out, *args, "--resume")
        with h5py.File(straight, "r") as a, h5py.File(out, "r") as b:
            self.assertEqual(b.attrs["step"], 40)
            for group in ("model", "ema", "optimizer/exp_avg"):
                for name in a[group]:
                    np.testing.assert_array_equal(a[group][name][:], b[group][name][:], f"{group}/{name}")
        # The metrics log continues where the checkpoint stopped: every step once.
        steps = [r["step"] for r in metrics(log)]
        self.assertEqual(steps, list(range(1, 41)))
        return out

    def test_kept_checkpoints_are_whole_checkpoints_of_their_step(self):
        args = ["--objective", "umd", "--steps", 6, "--save-every", 1000, "--ema", 0.9]
        out = self.path("k.ckpt.h5")
        self.train(out, *args, "--keep-every", 2)
        # Steps 2 and 4 kept beside -o; the last step is -o itself.
        kept = sorted(f for f in os.listdir(self.path()) if f.startswith("k.ckpt.step"))
        self.assertEqual(kept, ["k.ckpt.step2.h5", "k.ckpt.step4.h5"])
        with h5py.File(self.path("k.ckpt.step4.h5"), "r") as f:
            self.assertEqual(f.attrs["step"], 4)
        # Resumed to step 6, the kept step-4 checkpoint gives the uninterrupted run to the bit.
        resumed = self.path("r.ckpt.h5")
        shutil.copy(self.path("k.ckpt.step4.h5"), resumed)
        self.train(resumed, *args, "--resume")
        with h5py.File(out, "r") as a, h5py.File(resumed, "r") as b:
            for group in ("model", "ema", "optimizer/exp_avg"):
                for name in a[group]:
                    np.testing.assert_array_equal(a[group][name][:], b[group][name][:], f"{group}/{name}")
        # A kept name that is one of the inputs is refused, the input untouched.
        victim = self.path("v.ckpt.step2.h5")
        shutil.copy(self.table, victim)
        before = read_bytes(victim)
        self.fails("mdx-train", victim, "-o", self.path("v.ckpt.h5"), *SMALL, *args, "--keep-every", 2,
                   contains=("v.ckpt.step2.h5",))
        self.assertEqual(read_bytes(victim), before)
        self.assertNoOutput(self.path("v.ckpt.h5"))
        self.fails("mdx-train", self.table, "-o", self.path("n.ckpt.h5"), *SMALL, *args, "--keep-every", -1,
                   code=2, contains=("--keep-every must be >= 0",))

    def test_a_signal_while_the_table_loads_suspends(self):
        """SIGTERM as soon as the handlers are in place, while a large table loads: exit 75 (what a
        requeue tests for), never 143; a fresh run writes nothing, a resumed one keeps its checkpoint."""
        big = self.path("big.h5")
        self.ok("mdx-tokenize", "-q", f"{FMNIST}/train-images-idx3-ubyte.gz", "-o", big)

        def interrupted(out, *extra):
            p = subprocess.Popen([tool("mdx-train"), *[big] * 4, "-o", out, *SMALL, "--steps", "5", *extra],
                                 stderr=subprocess.PIPE, text=True)
            deadline = time.time() + 60
            while time.time() < deadline:  # SIGTERM caught: the tool's handlers are installed
                with open(f"/proc/{p.pid}/status") as f:
                    caught = int(next(l for l in f if l.startswith("SigCgt:")).split()[1], 16)
                if caught & (1 << (signal.SIGTERM - 1)):
                    break
                time.sleep(0.001)
            p.send_signal(signal.SIGTERM)
            _, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 75, err)
            return err

        out = self.path("fresh.h5")
        err = interrupted(out)
        if "while loading" in err:
            self.assertFalse(os.path.exists(out), err)
        ckpt = self.path("r.h5")
        self.train(ckpt, "--steps", 2)
        with h5py.File(ckpt, "r") as f:
            weights = f["model/patch_embed.weight"][()]
        err = interrupted(ckpt, "--resume")
        if "while loading" in err:
            with h5py.File(ckpt, "r") as f:
                self.assertEqual(f.attrs["step"], 2)
                np.testing.assert_array_equal(f["model/patch_embed.weight"][()], weights)

    def test_init_for_class_conditional_fine_tune(self):
        base = self.path("base.ckpt.h5")
        self.train(base, "--steps", 5)
        out = self.path("gen.ckpt.h5")
        # The architecture comes from --init, not from the model flags.
        r = self.ok("mdx-train", self.table, "-o", out, "--depth", 9, "--batch", 32, "--init", base, "--init-ema",
                    "--class-cond", "--rep-share", 0.05, "--noisy-mask-ratio", 0, "--steps", 5)
        self.assertIn("1 new (label_table.weight", r.stderr)  # UMD: one label table, shared by both sides
        with h5py.File(out, "r") as f:
            self.assertEqual(f["config"].attrs["depth"], "2")
            self.assertEqual(f["config"].attrs["num_classes"], "10")
            self.assertIn("base.ckpt.h5", f.attrs["mdx_inputs"])

    def launch(self, out, rank, port, *args):
        env = dict(os.environ, WORLD_SIZE="2", RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        return subprocess.Popen([tool("mdx-train"), self.table, "-o", out, *SMALL, *map(str, args)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def test_two_processes_equal_one(self):
        args = ["--objective", "umd", "--steps", 6, "--warmup", 0, "--log-every", 1]
        one = self.path("one.ckpt.h5")
        self.train(one, *args)
        two = self.path("two.ckpt.h5")
        port = free_port()
        ranks = [self.launch(two, r, port, *args) for r in (1, 0)]
        for p in ranks:
            _, err = p.communicate(timeout=300)
            self.assertEqual(p.returncode, 0, err)
        with h5py.File(one, "r") as a, h5py.File(two, "r") as b:
            self.assertEqual(b.attrs["step"], 6)
            for name in a["model"]:
                np.testing.assert_allclose(a["model"][name][:], b["model"][name][:], rtol=0, atol=1e-5,
                                           err_msg=name)
        # Same losses (whole-batch values) in both logs.
        la, lb = metrics(self.path("one.ckpt.metrics.jsonl")), metrics(self.path("two.ckpt.metrics.jsonl"))
        np.testing.assert_allclose([r["loss"] for r in la], [r["loss"] for r in lb], rtol=1e-4)

    def test_ranks_with_other_options_all_fail(self):
        """Mismatched ranks fail together with one line, before exchanging a tensor (not gloo's abort)."""
        for name, extra in (("decoder width", ["--steps", 6, "--decoder-dim", 32]), ("steps", ["--steps", 7])):
            with self.subTest(differs=name):
                out = self.path(f"mismatch-{name}.h5")
                port = free_port()
                ranks = [self.launch(out, 1, port, *extra), self.launch(out, 0, port, "--steps", 6)]
                for p in ranks:
                    _, err = p.communicate(timeout=300)
                    self.assertEqual(p.returncode, 1, err)
                    lines = [l for l in err.splitlines() if l.startswith("mdx-train: error")]
                    self.assertEqual(len(lines), 1, err)
                    self.assertIn("other options or tables than rank 0", lines[0])
                self.assertFalse(os.path.exists(out))

    def test_a_dead_rank_stops_the_others(self):
        out = self.path("dead.ckpt.h5")
        port = free_port()
        args = ["--steps", 100000, "--log-every", 1, "--dist-timeout", 20]
        survivor, victim = self.launch(out, 0, port, *args), self.launch(out, 1, port, *args)
        log = self.path("dead.ckpt.metrics.jsonl")
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(log) and len(metrics(log)) >= 2):
            time.sleep(0.05)
        victim.kill()
        victim.communicate()
        t0 = time.time()
        _, err = survivor.communicate(timeout=60)
        self.assertLess(time.time() - t0, 30)
        self.assertEqual(survivor.returncode, 1, err)
        self.assertIn("another rank died", err)

    def test_benchmark_prints_json_and_writes_nothing(self):
        out = self.path("bench.ckpt.h5")
        r = self.ok("mdx-train", self.table, "-o", out, *SMALL, "--benchmark", 2, "--objective", "dit")
        row = json.loads(r.stdout)
        for key in ("commit", "images_per_s", "encoder_tokens_per_s", "tflops", "mfu", "peak_memory_mib", "step_ms"):
            self.assertIn(key, row)
        self.assertEqual(row["batch"], 32)
        self.assertGreater(row["tflops"], 0)
        # A step's FLOPs and the rate agree (the rate is printed to 4 decimals).
        self.assertAlmostEqual(row["step_gflop"] * row["steps"] / row["seconds"] / 1000, row["tflops"], delta=6e-5)
        self.assertFalse(os.path.exists(out))

    def test_bad_inputs(self):
        out = self.path("x.ckpt.h5")
        self.fails("mdx-train", self.table, "-o", out, "--objective", "ldae", "--steps", 1, code=2,
                   contains=("tokenizer",))
        self.fails("mdx-train", self.table, "-o", out, code=2, contains=("--epochs or --steps",))
        unlabelled = self.path("u.h5")
        with h5py.File(self.table, "r") as src, h5py.File(unlabelled, "w") as dst:
            dst["images"] = src["images"][:64]
        self.fails("mdx-train", unlabelled, "-o", out, "--class-cond", "--steps", 1, contains=("labels",))
        self.fails("mdx-train", self.table, "-o", out, "--resume", "--steps", 1, contains=("x.ckpt.h5",))
        self.fails("mdx-train", self.pca, "-o", out, "--steps", 1, contains=("images",))
        self.fails("mdx-train", self.table, "-o", out, "--patch", 5, "--steps", 1, contains=("patch size 5",))
        self.fails("mdx-train", self.table, "-o", out, "--init", self.pca, "--steps", 1, contains=("not an mdx checkpoint",))
        huge = self.path("huge.h5")
        with h5py.File(self.table, "r") as src, h5py.File(huge, "w") as dst:
            dst["images"] = src["images"][:64]
            dst["labels"] = np.full(64, 10**12, np.int64)
        self.fails("mdx-train", huge, "-o", out, "--class-cond", "--steps", 1, contains=("label of 1000000000000",))
        for option in ("--lr", "--clip", "--weight-decay", "--blr"):
            self.fails("mdx-train", self.table, "-o", out, option, "nan", "--steps", 1, code=2, contains=(option,))
        self.assertNoOutput(out)

    def test_a_failed_run_leaves_no_side_file_ahead_of_its_checkpoint(self):
        """A learning rate of 1e30 makes the loss infinite at step 3: before any checkpoint the metrics
        and preview go with the run; after one, the metrics end at its step."""
        out = self.path("nan.ckpt.h5")
        args = ["--steps", 20, "--lr", "1e30", "--log-every", 1, "--preview-every", 1]
        self.fails("mdx-train", self.table, "-o", out, *SMALL, *args, contains=("not finite at step 3",))
        for side in ("nan.ckpt.h5", "nan.ckpt.metrics.jsonl", "nan.ckpt.preview.png"):
            self.assertNoOutput(self.path(side))
        self.fails("mdx-train", self.table, "-o", out, *SMALL, *args, "--save-every", 2,
                   contains=("not finite at step 3",))
        with h5py.File(out, "r") as f:
            self.assertEqual(f.attrs["step"], 2)
        self.assertEqual([m["step"] for m in metrics(self.path("nan.ckpt.metrics.jsonl"))], [1, 2])

    def test_representation_rows_get_the_null_class(self):
        """With every row a representation row (--rep-share 1) no class embedding but the null one
        is ever used: after 1 and after 4 steps they are the same, the null row is not."""
        rows = []
        for steps in (1, 4):
            out = self.path(f"null{steps}.ckpt.h5")
            self.train(out, "--class-cond", "--rep-share", 1, "--class-dropout", 0, "--weight-decay", 0, "--lr", 0.01,
                       "--steps", steps)
            with h5py.File(out, "r") as f:
                rows.append(f["model"]["label_table.weight"][()])
        np.testing.assert_array_equal(rows[0][:10], rows[1][:10])
        self.assertGreater(np.abs(rows[0][10] - rows[1][10]).max(), 0)

    def test_bf16_runs_are_reproducible_and_close_to_fp32(self):
        """--precision bf16: the same seed and threads give the same checkpoint; the weights stay
        within bf16's rounding of the float32 run's; the files say which precision made them."""
        w = {}
        for name, prec in (("a", "bf16"), ("b", "bf16"), ("f", "fp32")):
            out = self.path(f"{name}.ckpt.h5")
            self.train(out, "--steps", 5, "--precision", prec)
            with h5py.File(out, "r") as f:
                self.assertEqual(f.attrs["mdx_precision"], prec)
                w[name] = {k: f["model"][k][()] for k in f["model"]}
        for k in w["a"]:
            np.testing.assert_array_equal(w["a"][k], w["b"][k], k)
        diff = max(np.abs(w["a"][k] - w["f"][k]).max() for k in w["a"])
        self.assertGreater(diff, 0)      # bf16 did compute in bf16
        self.assertLess(diff, 1e-2)      # and trained the same model
        emb = {}
        for prec in ("bf16", "fp32"):
            out = self.path(f"e-{prec}.h5")
            self.ok("mdx-embed", self.path("f.ckpt.h5"), self.table, "-o", out, "--precision", prec, "--pool", "mean")
            emb[prec] = h5py.File(out, "r")["embeddings"][()]
        scale = np.abs(emb["fp32"]).max()
        self.assertLess(np.abs(emb["bf16"] - emb["fp32"]).max(), 0.05 * scale)
        self.assertGreater(np.abs(emb["bf16"] - emb["fp32"]).max(), 0)

    def test_each_objective_keeps_the_ema_of_its_reference(self):
        """UMD keeps an EMA only for its labelled run, stepping 1e-4 B/256 (small-vision); MAE none;
        DiT (and l-DAE, built on it) 0.9999; --ema overrides."""
        for objective, extra, decay in (("umd", [], 0), ("umd", ["--class-cond"], 1 - 1e-4 * 32 / 256),
                                        ("mae", [], 0), ("dit", [], 0.9999), ("mae", ["--ema", 0.5], 0.5)):
            with self.subTest(objective=objective, extra=extra):
                out = self.path("e.ckpt.h5")
                self.train(out, "--objective", objective, "--steps", 1, *extra)
                with h5py.File(out, "r") as f:
                    self.assertAlmostEqual(float(f["config"].attrs["ema"]), decay, places=12)
                    ema = set(f["ema"]) if "ema" in f else set()
                    self.assertEqual(bool(ema), bool(decay))
                    self.assertLessEqual(ema, set(f["model"]))
                    if decay:
                        self.assertIn("encoder.0.qkv.weight", ema)

    def test_a_checkpoint_with_nan_weights_is_refused(self):
        """NaN in the EMA or the optimizer state is refused by --resume and by the evaluation tools,
        not carried on."""
        ckpt = self.path("n.h5")
        self.train(ckpt, "--steps", 2, "--save-every", 1, "--ema", 0.9)
        for group in ("ema", "optimizer/exp_avg_sq"):
            with self.subTest(group=group):
                bad = self.path("bad.h5")
                shutil.copy(ckpt, bad)
                with h5py.File(bad, "r+") as f:
                    name = sorted(f[group])[0]
                    w = f[group][name][()]
                    w.flat[0] = np.nan
                    f[group][name][...] = w
                before = open(bad, "rb").read()
                self.fails("mdx-train", self.table, "-o", bad, *SMALL, "--steps", 4, "--resume",
                           contains=(f"{group.split('/')[-1]}/{name}", "NaN"))
                self.assertEqual(open(bad, "rb").read(), before)
        with h5py.File(bad, "r+") as f:
            name = sorted(f["ema"])[0]
            f["ema"][name][...] = np.full(f["ema"][name].shape, np.inf, np.float32)
        self.fails("mdx-embed", bad, self.table, "-o", self.path("e.h5"), contains=(f"ema/{name}",))
        self.assertNoOutput(self.path("e.h5"))

    def test_a_malformed_checkpoint_configuration(self):
        """A checkpoint whose configuration is corrupt or hostile is one clear line, before any model
        of its choosing is built (a depth of 1e8 would allocate without bound)."""
        ckpt = self.path("c.h5")
        self.train(ckpt, "--steps", 1)
        for key, value, says in (("dim", "abc", "'dim' is 'abc'"), ("depth", "100000000", "'depth' is '100000000'"),
                                 ("num_classes", "1000000000000", "'num_classes'")):
            with self.subTest(key=key):
                bad = self.path(f"bad-{key}.h5")
                shutil.copy(ckpt, bad)
                with h5py.File(bad, "r+") as f:
                    f["config"].attrs[key] = value
                self.fails("mdx-embed", bad, self.table, "-o", self.path("e.h5"), contains=(says,))
                self.assertNoOutput(self.path("e.h5"))


if __name__ == "__main__":
    unittest.main()
