"""The recipe and the Slurm templates: they parse, the templates run unchanged under bash on one
machine (an array task takes its shard), the recipe's report reads what the stages write."""
import json
import os
import signal
import subprocess
import sys
import time
import unittest

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import BIN, SOURCE, ToolTest, tool  # noqa: E402

RECIPE = os.path.join(SOURCE, "share", "mdx", "recipes", "fashion-mnist.sh")
SLURM = os.path.join(SOURCE, "share", "mdx", "slurm")


def dump(obj, *path):
    with open(os.path.join(*path), "w") as f:
        json.dump(obj, f)


def sh(*args, env=None, **kw):
    return subprocess.run(list(map(str, args)), capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


class Recipe(ToolTest):
    def stand_in_train(self, action):
        """A directory holding a stand-in mdx-train: --benchmark prints a step's FLOPs (10 GFLOP);
        otherwise it runs `action` (shell; $args: its arguments, $out: its -o) and touches $out."""
        fake = os.path.join(self.dir, "bin")
        os.makedirs(fake)
        with open(os.path.join(fake, "mdx-train"), "w") as f:
            f.write("#!/bin/sh\nout=; bench=0; args=\"$*\"\n"
                    "while [ $# -gt 0 ]; do case $1 in -o) out=$2; shift 2 ;; --benchmark) bench=1; shift 2 ;;"
                    " *) shift ;; esac; done\n"
                    "if [ $bench = 1 ]; then echo '{\"step_gflop\": 10.0}'; exit 0; fi\n"
                    + action + "touch \"$out\"\n")
        os.chmod(os.path.join(fake, "mdx-train"), 0o755)
        return fake

    def test_scripts_parse(self):
        self.assertEqual(sh("sh", "-n", RECIPE).returncode, 0)
        for t in ("cpu.sbatch", "gpu-train.sbatch"):
            r = sh("bash", "-n", os.path.join(SLURM, t))
            self.assertEqual(r.returncode, 0, r.stderr)
        r = sh("sh", RECIPE, "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--stage", r.stdout)
        self.assertIn("two one-thread lanes", r.stdout)  # the whole header comment, nothing after it
        self.assertTrue(r.stdout.rstrip().endswith("(default: PATH)."), r.stdout[-200:])
        r = sh("sh", RECIPE, "--bogus")
        self.assertEqual(r.returncode, 2)
        # Bad values: one line naming the option, exit 2, nothing made.
        for args, named in ((("--rows", "bogus", "--compare"), "--rows"), (("--budget", "10"), "--budget"),
                            (("--seeds", "0"), "--seeds"), (("--dir", self.path("a b")), "--dir")):
            r = sh("sh", RECIPE, "--dir", self.path("exp"), *args)
            self.assertEqual(r.returncode, 2, args)
            self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
            self.assertIn(named, r.stderr)
        self.assertFalse(os.path.exists(self.path("a b")))

    def test_a_signal_stops_the_recipe_and_the_command_it_runs(self):
        # A stand-in for mdx-tokenize that says it started and then takes a minute.
        fake = os.path.join(self.dir, "bin")
        os.makedirs(fake)
        started = self.path("started")
        with open(os.path.join(fake, "mdx-tokenize"), "w") as f:
            f.write(f"#!/bin/sh\necho $$ > {started}\nexec sleep 60\n")
        os.chmod(os.path.join(fake, "mdx-tokenize"), 0o755)
        p = subprocess.Popen(["sh", RECIPE, "--demo", "--dir", self.path("exp"), "--stop-stage", "1"],
                             env={**os.environ, "MDX_BIN": fake}, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            def said():
                if not os.path.exists(started):
                    return ""
                with open(started) as f:
                    return f.read().strip()
            while p.poll() is None and not said():
                time.sleep(0.05)
            self.assertIsNone(p.poll(), "the recipe ended before its command started")
            child = int(said())
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)  # not the minute the command would take: the trap runs at once
        finally:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.assertNotEqual(p.returncode, 0)
        for _ in range(100):  # the command went with it (its group was signalled)
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        else:
            self.fail(f"the command {child} outlived the recipe")

    def test_a_failed_stage_leaves_no_report(self):
        # The probe of stage 6 fails on a table that is not HDF5: its JSON report is not left empty
        # (a later stage or the report would read it), nor is a temporary file.
        d = self.path("exp")
        os.makedirs(d)
        for split in ("train", "test"):
            with open(os.path.join(d, f"{split}.h5"), "wb") as f:
                f.write(b"not an HDF5 file")
        r = sh("sh", RECIPE, "--dir", d, "--stage", "6", "--stop-stage", "6", env={"MDX_BIN": BIN})
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("mdx-probe", r.stderr)
        self.assertEqual(os.listdir(os.path.join(d, "probe")), [])

    def test_rows_without_umd_or_dit_share_the_two_lanes(self):
        # --compare --rows of three token-space rows: they alternate between the lanes (the
        # background lane's log holds the first and third, the recipe's own stderr the second), and
        # the lanes run at once. A stand-in mdx-train: --benchmark prints a step's FLOPs, training
        # notes when it starts and ends.
        times = self.path("times")
        fake = self.stand_in_train(f"echo \"start $(basename $out) $(date +%s.%N)\" >> {times}\n"
                                   "sleep 2\n"
                                   f"echo \"end $(basename $out) $(date +%s.%N)\" >> {times}\n")
        d = self.path("exp")
        r = sh("sh", RECIPE, "--compare", "--rows", "latent-umd,lmd,ldae", "--dir", d, "--stage", "4",
               "--stop-stage", "4", env={"MDX_BIN": fake})
        self.assertEqual(r.returncode, 0, r.stderr)
        # The background lane's log is named after its first row (not umd.log: no umd runs).
        self.assertFalse(os.path.exists(os.path.join(d, "logs", "umd.log")))
        with open(os.path.join(d, "logs", "latent-umd.log")) as f:
            background = f.read()
        self.assertIn("latent-umd.ckpt.h5", background)
        self.assertIn("ldae.ckpt.h5", background)
        self.assertNotIn("lmd.ckpt.h5", background)
        self.assertIn("lmd.ckpt.h5", r.stderr)
        self.assertNotIn("ldae.ckpt.h5", r.stderr)
        at = {}
        with open(times) as f:
            for line in f:
                what, name, t = line.split()
                at[(what, name)] = float(t)
        self.assertEqual(len(at), 6)
        self.assertLess(at[("start", "lmd.ckpt.h5")], at[("end", "latent-umd.ckpt.h5")])
        self.assertLess(at[("start", "latent-umd.ckpt.h5")], at[("end", "lmd.ckpt.h5")])

    def test_compare_fine_tune_ema_follows_its_steps(self):
        # At --compare each row's fine-tune EMA decay is 1 - 4/steps: the same e^-4 share of its
        # first weights left at the end for a row of 250 steps as for one of 800 (0.995). A
        # stand-in mdx-train prints a step's FLOPs at --benchmark and records what it trains with.
        calls = self.path("calls")
        fake = self.stand_in_train(f"echo \"$args\" >> {calls}\n")
        for budget, steps, ema in (("100,250", 250, 0.984), ("100,800", 800, 0.995)):
            with self.subTest(budget=budget):
                if os.path.exists(calls):
                    os.remove(calls)
                r = sh("sh", RECIPE, "--compare", "--rows", "lmd", "--budget", budget, "--dir",
                       self.path("exp" + budget), "--stage", "7", "--stop-stage", "7", env={"MDX_BIN": fake})
                self.assertEqual(r.returncode, 0, r.stderr)
                with open(calls) as f:
                    (line,) = f.read().splitlines()
                args = line.split()
                self.assertEqual(args.count("--ema"), 1, line)
                self.assertEqual(float(args[args.index("--ema") + 1]), ema)
                self.assertEqual(int(args[args.index("--steps") + 1]), steps)
                self.assertIn("--class-cond", args)

    def test_cpu_template_runs_an_array_task_on_one_machine(self):
        table = self.fmnist_table(90)
        parts = []
        for task in range(3):
            out = self.path(f"part-{task}.h5")
            r = sh("bash", os.path.join(SLURM, "cpu.sbatch"), tool("mdx-tokenize"), "-q", table,
                   "--shard", "{TASK}/{COUNT}", "-o", self.path("part-{TASK}.h5"),
                   env={"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_COUNT": "3"})
            self.assertEqual(r.returncode, 0, r.stderr)
            with h5py.File(out, "r") as f:
                parts.append(f["images"][()])
        with h5py.File(table, "r") as f:
            np.testing.assert_array_equal(np.concatenate(parts), f["images"][()])
        # Outside an array: task 0 of 1, the whole table.
        r = sh("bash", os.path.join(SLURM, "cpu.sbatch"), tool("mdx-tokenize"), "-q", table,
               "--shard", "{TASK}/{COUNT}", "-o", self.path("whole.h5"))
        self.assertEqual(r.returncode, 0, r.stderr)
        with h5py.File(self.path("whole.h5"), "r") as f:
            self.assertEqual(f["images"].shape[0], 90)
        r = sh("bash", os.path.join(SLURM, "cpu.sbatch"))
        self.assertEqual(r.returncode, 2)

    def test_gpu_template_runs_mdx_train_outside_slurm(self):
        table = self.fmnist_table(90)
        out = self.path("m.ckpt.h5")
        r = sh("bash", os.path.join(SLURM, "gpu-train.sbatch"), tool("mdx-train"), "-q", table, "--steps", 1,
               "--dim", 32, "--depth", 1, "--decoder-depth", 1, "--heads", 2, "--batch", 8, "-o", out,
               env={"SLURM_JOB_ID": ""})
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.exists(out))

    def test_report_reads_the_stages_outputs(self):
        d = self.dir
        os.makedirs(os.path.join(d, "gen"))
        os.makedirs(os.path.join(d, "probe"))
        os.makedirs(os.path.join(d, "fid"))
        os.makedirs(os.path.join(d, "samples"))
        for o, loss, steps in (("umd", 0.5, 3), ("dit", 0.8, 2)):
            with open(os.path.join(d, f"{o}.ckpt.metrics.jsonl"), "w") as f:
                for s in range(1, steps + 1):
                    f.write(json.dumps({"step": s, "loss": loss / s, "images_per_s": 100.0 * s}) + "\n")
            with open(os.path.join(d, "gen", f"{o}.ckpt.metrics.jsonl"), "w") as f:
                f.write(json.dumps({"step": 2, "loss": 0.3, "images_per_s": 50.0}) + "\n")
            dump(12, d, f"{o}.seconds")
            dump(12, d, "samples", f"{o}.seconds")
            rows = 60000 if o == "umd" else 10000  # the main row probes on the full sets
            dump({"top1": 0.8123, "train": {"rows": rows}, "test": {"rows": rows // 6}}, d, "probe", f"{o}.json")
            dump({"fid": 3.25, "inputs": [{"count": 120}, {"count": 2000}]}, d, "fid", f"{o}.json")
            with open(os.path.join(d, "fid", f"{o}.class.json"), "w") as f:  # the classifier's JSON line
                f.write(json.dumps({"table": "x.h5", "count": 120, "class_accuracy": 0.75 if o == "umd" else 0.5,
                                    "classifier_test_top1": 0.9}) + "\n")
        # The second judge's line (pixel_knn.py) for umd only: dit's cell stays empty.
        dump({"table": "x.h5", "count": 120, "class_accuracy": 0.6, "k": 5, "train_count": 20000,
              "classifier_test_top1": 0.83}, d, "fid", "umd.knn.json")
        dump({"table": "floor.h5", "count": 120, "class_accuracy": 0.92, "k": 5, "train_count": 20000,
              "classifier_test_top1": 0.83}, d, "fid", "data.knn.json")
        dump({"top1": 0.84, "train": {"rows": 60000}, "test": {"rows": 10000}}, d, "probe", "pixels.json")
        dump({"top1": 0.85, "train": {"rows": 10000}, "test": {"rows": 1666}}, d, "probe", "pixels-subsets.json")
        dump({"fid": 1.5}, d, "fid", "data.json")
        dump({"table": "floor.h5", "count": 120, "class_accuracy": 0.88, "classifier_test_top1": 0.9},
             d, "fid", "data.class.json")
        r = sh("/usr/bin/python3", os.path.join(SOURCE, "share", "mdx", "recipes", "report.py"), d)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("| umd | main | 3 | 0.5000 | 0.1667 | 200 | 12 | 60000 / 10000 | 81.23 |", r.stdout)
        self.assertIn("| dit | smaller scale | 2 | 0.8000 | 0.4000 | 150 | 12 | 10000 / 1666 | 81.23 |", r.stdout)
        self.assertIn("| 3.25 | 75.0 | 60.0 |", r.stdout)
        self.assertIn("| dit | smaller scale | 2 |", r.stdout)  # fewer pre-training steps than umd
        self.assertIn("| 3.25 | 50.0 |  |", r.stdout)
        self.assertIn("90.00 % on the test images", r.stdout)
        self.assertIn("5-nearest-neighbours on the pixels of the last 20000 training images "
                      "(share/mdx/pixel_knn.py, 83.00 % on the test images)", r.stdout)
        self.assertIn("| raw pixels | | | | | | | 60000 / 10000 | 84.00 |", r.stdout)
        self.assertIn("| raw pixels | | | | | | | 10000 / 1666 | 85.00 |", r.stdout)
        self.assertIn("| training images | | | | | | | | | | | | 1.50 | 88.0 | 92.0 |", r.stdout)
        with open(os.path.join(d, "results.json")) as f:
            res = json.load(f)
        self.assertEqual([o["objective"] for o in res["objectives"]], ["umd", "dit"])
        self.assertEqual(res["objectives"][1]["fid"], 3.25)
        self.assertEqual(res["objectives"][1]["samples_per_s"], 10.0)  # 120 samples in 12 s
        self.assertEqual(res["objectives"][0]["class_accuracy"], 0.75)
        self.assertEqual(res["training_images_recognized"], 0.88)
        self.assertEqual(res["training_images_recognized_knn"], 0.92)
        self.assertEqual((res["objectives"][0]["knn_accuracy"], res["objectives"][1]["knn_accuracy"]), (0.6, None))
        self.assertEqual(res["raw_pixel_probes"], [{"tables": "60000 / 10000", "top1": 0.84},
                                                   {"tables": "10000 / 1666", "top1": 0.85}])
        for png in ("loss-curves.png", "compute.png"):
            self.assertTrue(os.path.getsize(os.path.join(d, png)) > 1000)
        self.assertFalse(os.path.exists(os.path.join(d, "compare.png")))  # not a --compare run

    def test_report_of_a_comparison_at_equal_compute(self):
        d = self.dir
        for sub in ("gen", "probe", "fid", "flops"):
            os.makedirs(os.path.join(d, sub))
        # umd and its seed 1, and dit: pre-training and fine-tune steps, each phase's FLOPs per step.
        runs = (("umd", 10, 8, 0.80, [30.0, 34.0]), ("umd-seed1", 10, 8, 0.84, [36.0, 40.0]),
                ("dit", 7, 8, 0.78, [50.0, 54.0]))
        dump({"step_gflop": 14.0}, d, "flops", "umd.pretrain.json")
        dump({"step_gflop": 20.0}, d, "flops", "umd.finetune.json")
        dump({"step_gflop": 20.0}, d, "flops", "dit.pretrain.json")
        dump({"step_gflop": 20.0}, d, "flops", "dit.finetune.json")
        for name, pre, ft, top1, draws in runs:
            with open(os.path.join(d, f"{name}.ckpt.metrics.jsonl"), "w") as f:
                f.write(json.dumps({"step": pre, "loss": 0.2, "images_per_s": 10.0}) + "\n")
            with open(os.path.join(d, "gen", f"{name}.ckpt.metrics.jsonl"), "w") as f:
                f.write(json.dumps({"step": ft, "loss": 0.1, "images_per_s": 10.0}) + "\n")
            dump(100, d, f"{name}.seconds")
            dump(50, d, "gen", f"{name}.seconds")
            dump({"top1": top1, "train": {"rows": 60000}, "test": {"rows": 10000}}, d, "probe", f"{name}.json")
            dump({"top1": top1 - 0.02}, d, "probe", f"{name}.half.json")
            dump({"fid": sum(draws) / 2 - 5, "inputs": [{"count": 4000}]}, d, "fid", f"{name}.json")
            for i, v in enumerate(draws):
                dump({"fid": v, "inputs": [{"count": 2000}]}, d, "fid", f"{name}.draw{i}.json")
            dump({"fid": 2 * draws[0]}, d, "fid", f"{name}.half.json")
            dump({"class_accuracy": 0.6}, d, "fid", f"{name}.class.json")
            dump({"class_accuracy": 0.4}, d, "fid", f"{name}.half.class.json")
            dump({"class_accuracy": 0.55, "k": 5, "train_count": 20000}, d, "fid", f"{name}.knn.json")
        dump({"top1": 0.8435, "train": {"rows": 60000}, "test": {"rows": 10000}}, d, "probe", "pixels.json")
        dump({"fid": 2.0}, d, "fid", "data.json")
        dump({"fid": 4.0}, d, "fid", "data.draw.json")
        dump({"class_accuracy": 0.91}, d, "fid", "data.class.json")
        dump({"class_accuracy": 0.84, "k": 5, "train_count": 20000}, d, "fid", "data.knn.json")
        r = sh("/usr/bin/python3", os.path.join(SOURCE, "share", "mdx", "recipes", "report.py"), d)
        self.assertEqual(r.returncode, 0, r.stderr)
        # umd: 10 x 14 + 8 x 20 GFLOP = 0.3 TFLOP; dit 7 x 20 + 8 x 20 = 0.3; the draws' mean and range.
        self.assertIn("| umd | 10 | 8 | 0.3 | 150 | 78.00 / 80.00 | 27.00 | 32.00 (30.00-34.00) | 60.00 | 60.0 % | 55.0 % |  |",
                      r.stdout)
        self.assertIn("| dit | 7 | 8 | 0.3 | 150 | 76.00 / 78.00 | 47.00 | 52.00 (50.00-54.00) |", r.stdout)
        self.assertIn("FID, 4000 samples | FID, 2000 samples: mean", r.stdout)
        self.assertIn("| dit | equal compute | 7 |", r.stdout)  # fewer steps, not a smaller scale
        self.assertIn("| training images (floor) | | | | | | 2.00 | 4.00 | | 91.0 % | 84.0 % | |\n", r.stdout)
        # The seeds of umd: probe 80 and 84, FID 27 and 33.
        self.assertIn("| umd | 2 | 82.00 (80.00-84.00) | 30.00 (27.00-33.00) | 60.0 (60.0-60.0) |", r.stdout)
        with open(os.path.join(d, "results.json")) as f:
            rows = json.load(f)["compare"]["rows"]
        self.assertEqual([c["row"] for c in rows], ["umd", "umd-seed1", "dit"])
        self.assertAlmostEqual(rows[0]["pretrain_tflop"], 0.14)
        self.assertAlmostEqual(rows[0]["probe_half_tflop"], 0.07)  # the kept step: 5 of 10
        self.assertAlmostEqual(rows[2]["half_tflop"], 0.14 + 0.08)  # dit: all its pre-training, 4 of 8 steps
        self.assertTrue(os.path.getsize(os.path.join(d, "compare.png")) > 1000)


if __name__ == "__main__":
    unittest.main()
