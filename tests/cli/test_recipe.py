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
from mdxtest import SOURCE, ToolTest, tool  # noqa: E402

RECIPE = os.path.join(SOURCE, "share", "mdx", "recipes", "fashion-mnist.sh")
SLURM = os.path.join(SOURCE, "share", "mdx", "slurm")


def dump(obj, *path):
    with open(os.path.join(*path), "w") as f:
        json.dump(obj, f)


def sh(*args, env=None, **kw):
    return subprocess.run(list(map(str, args)), capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kw)


class Recipe(ToolTest):
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
        dump({"top1": 0.84, "train": {"rows": 60000}, "test": {"rows": 10000}}, d, "probe", "pixels.json")
        dump({"top1": 0.85, "train": {"rows": 10000}, "test": {"rows": 1666}}, d, "probe", "pixels-subsets.json")
        dump({"fid": 1.5}, d, "fid", "data.json")
        dump({"table": "floor.h5", "count": 120, "class_accuracy": 0.88, "classifier_test_top1": 0.9},
             d, "fid", "data.class.json")
        r = sh("/usr/bin/python3", os.path.join(SOURCE, "share", "mdx", "recipes", "report.py"), d)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("| umd | main | 3 | 0.5000 | 0.1667 | 200 | 12 | 60000 / 10000 | 81.23 |", r.stdout)
        self.assertIn("| dit | smaller scale | 2 | 0.8000 | 0.4000 | 150 | 12 | 10000 / 1666 | 81.23 |", r.stdout)
        self.assertIn("| 3.25 | 75.0 |", r.stdout)
        self.assertIn("| dit | smaller scale | 2 |", r.stdout)  # fewer pre-training steps than umd
        self.assertIn("| 3.25 | 50.0 |", r.stdout)
        self.assertIn("90.00 % on the test images", r.stdout)
        self.assertIn("| raw pixels | | | | | | | 60000 / 10000 | 84.00 |", r.stdout)
        self.assertIn("| raw pixels | | | | | | | 10000 / 1666 | 85.00 |", r.stdout)
        self.assertIn("| training images | | | | | | | | | | | | 1.50 | 88.0 |", r.stdout)
        with open(os.path.join(d, "results.json")) as f:
            res = json.load(f)
        self.assertEqual([o["objective"] for o in res["objectives"]], ["umd", "dit"])
        self.assertEqual(res["objectives"][1]["fid"], 3.25)
        self.assertEqual(res["objectives"][1]["samples_per_s"], 10.0)  # 120 samples in 12 s
        self.assertEqual(res["objectives"][0]["class_accuracy"], 0.75)
        self.assertEqual(res["training_images_recognized"], 0.88)
        self.assertEqual(res["raw_pixel_probes"], [{"tables": "60000 / 10000", "top1": 0.84},
                                                   {"tables": "10000 / 1666", "top1": 0.85}])
        for png in ("loss-curves.png", "compute.png"):
            self.assertTrue(os.path.getsize(os.path.join(d, png)) > 1000)


if __name__ == "__main__":
    unittest.main()
