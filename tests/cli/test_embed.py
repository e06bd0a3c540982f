"""mdx-embed: the encoder's features against an independent PyTorch re-implementation of the encoder
from the checkpoint's weights; labels, shards, pooling, noise, provenance; bad inputs."""
import math
import os
import sys
import unittest

import h5py
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import ToolTest, run  # noqa: E402

SMALL = ["--dim", "32", "--depth", "2", "--decoder-depth", "1", "--heads", "2", "--batch", "16", "--threads", "1"]


def reference_features(ckpt, images, weights="model", blocks=1):
    """The encoder on clean tokens at time index 0 (null class when conditional), written from the
    architecture's description: patch embedding + positions, CLS tokens, adaLN-Zero blocks,
    LayerNorm; returns (mean of the CLS outputs, mean of the patch-token outputs), or with
    blocks > 1 a list of such pairs, one per block of the last `blocks`, each through the final
    LayerNorm (DINO's get_intermediate_layers), the shallowest first."""
    with h5py.File(ckpt, "r") as f:
        cfg = {k: f["config"].attrs[k] for k in f["config"].attrs}
        w = {k: torch.from_numpy(f[weights][k][()]).double() for k in f[weights]}
        # UMD's positions are learned (a parameter: in the EMA too); sin-cos ones are a buffer.
        positions = torch.from_numpy(f[weights if "positions" in f[weights] else "model"]["positions"][()]).double()
    p, heads, C = int(cfg["patch"]), int(cfg["heads"]), int(cfg["cls_tokens"])
    x = torch.from_numpy(images).double() / 127.5 - 1  # [B,H,W,c]
    B, H, W, c = x.shape
    x = x.reshape(B, H // p, p, W // p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(B, (H // p) * (W // p), p * p * c)
    lin = lambda h, name: h @ w[name + ".weight"].T + w[name + ".bias"]  # noqa: E731
    h = lin(x, "patch_embed") + positions
    h = torch.cat([w["cls"].expand(B, -1, -1), h], 1)
    half = 128
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.double) / half)
    t = torch.zeros(B, dtype=torch.double)[:, None] * freqs[None]
    emb = torch.cat([t.cos(), t.sin()], 1)
    cond = lin(F.silu(lin(emb, "time_mlp.0")), "time_mlp.2")
    if int(cfg["num_classes"]) > 0:
        cond = cond + w["label_table.weight"][int(cfg["num_classes"])]
    dim = h.shape[-1]
    depth = int(cfg["depth"])
    norm = lambda v: F.layer_norm(v, (dim,), w["encoder_norm.weight"], w["encoder_norm.bias"], eps=1e-6)  # noqa: E731
    layers = []
    for i in range(depth):
        b = f"encoder.{i}."
        m = lin(F.silu(cond), b + "modulation").chunk(6, 1)
        ln = lambda v: F.layer_norm(v, (dim,), eps=1e-6)  # noqa: E731
        a = ln(h) * (1 + m[1][:, None]) + m[0][:, None]
        q, k, v = lin(a, b + "qkv").reshape(B, -1, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(dim // heads), -1) @ v
        h = h + m[2][:, None] * lin(att.transpose(1, 2).reshape(B, -1, dim), b + "proj")
        a = ln(h) * (1 + m[4][:, None]) + m[3][:, None]
        h = h + m[5][:, None] * lin(F.gelu(lin(a, b + "fc1"), approximate="tanh"), b + "fc2")
        if i >= depth - blocks:
            n = norm(h)
            layers.append((n[:, :C].mean(1).numpy(), n[:, C:].mean(1).numpy()))
    return layers[0] if blocks == 1 else layers


class Embed(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(300)
        cls.ckpt = os.path.join(cls.shared, "umd.ckpt.h5")
        # 30 steps at a high rate with a fast EMA: the adaLN gates move off zero, EMA and raw differ.
        r = run("mdx-train", "-q", cls.table, "-o", cls.ckpt, *SMALL, "--steps", 30, "--lr", "3e-3", "--ema", "0.9",
                "--class-cond")
        assert r.returncode == 0, r.stderr
        with h5py.File(cls.table, "r") as f:
            cls.images, cls.labels = f["images"][()], f["labels"][()]

    def embed(self, *args, table=None):
        out = self.path("e.h5")
        if os.path.exists(out):
            os.remove(out)
        self.ok("mdx-embed", "-q", self.ckpt, table or self.table, "-o", out, *args)
        with h5py.File(out, "r") as f:
            return f["embeddings"][()], (f["labels"][()] if "labels" in f else None), dict(f.attrs)

    def test_features_match_an_independent_encoder(self):
        cls_ref, mean_ref = reference_features(self.ckpt, self.images[:64])
        e, labels, attrs = self.embed("--pool", "cls+mean", "--batch", 17)
        self.assertEqual(e.dtype, np.float32)
        self.assertEqual(e.shape, (300, 64))
        np.testing.assert_allclose(e[:64, :32], cls_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(e[:64, 32:], mean_ref, rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(labels, self.labels)
        self.assertEqual(attrs["pool"], "cls+mean")
        self.assertEqual(attrs["weights"], "raw")  # UMD and MAE probe their raw weights
        self.assertEqual(attrs["mdx_tool"], "mdx-embed")
        self.assertIn("mdx-train", attrs["history"])  # the checkpoint's pipeline is carried on
        self.assertGreater(np.abs(cls_ref).max(), 0.1)  # not a degenerate all-zero case

    def test_last_blocks_match_the_independent_encoder(self):
        per_block = reference_features(self.ckpt, self.images[:32], blocks=2)
        e, _, attrs = self.embed("--pool", "cls+mean", "--blocks", 2)
        self.assertEqual(e.shape, (300, 128))  # 2 blocks x (CLS + mean) x 32
        self.assertEqual(attrs["blocks"], 2)
        for b, (cls_ref, mean_ref) in enumerate(per_block):
            np.testing.assert_allclose(e[:32, 64 * b:64 * b + 32], cls_ref, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(e[:32, 64 * b + 32:64 * b + 64], mean_ref, rtol=1e-4, atol=1e-4)
        self.assertGreater(np.abs(per_block[0][0] - per_block[1][0]).max(), 1e-2)  # two different blocks
        mean_only, _, _ = self.embed("--pool", "mean", "--blocks", 2)
        np.testing.assert_allclose(mean_only, e[:, [*range(32, 64), *range(96, 128)]], rtol=1e-5, atol=1e-6)
        last, _, attrs = self.embed("--pool", "cls+mean")
        self.assertEqual(attrs["blocks"], 1)
        np.testing.assert_allclose(last, e[:, 64:], rtol=1e-5, atol=1e-6)
        self.fails("mdx-embed", self.ckpt, self.table, "-o", self.path("b.h5"), "--blocks", 3,
                   contains=["--blocks must be in 1..2"], code=2)
        self.fails("mdx-embed", self.ckpt, self.table, "-o", self.path("b.h5"), "--blocks", 0, code=2)
        self.assertNoOutput(self.path("b.h5"))

    def test_pools_weights_and_batches_are_consistent(self):
        full, _, _ = self.embed("--pool", "cls+mean")
        cls_only, _, _ = self.embed("--pool", "cls", "--batch", 300)
        mean_only, _, _ = self.embed("--pool", "mean", "--batch", 1)
        np.testing.assert_allclose(cls_only, full[:, :32], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mean_only, full[:, 32:], rtol=1e-5, atol=1e-6)
        ema, _, attrs = self.embed("--weights", "ema")
        self.assertEqual(attrs["weights"], "ema")
        np.testing.assert_allclose(ema[:8], reference_features(self.ckpt, self.images[:8], "ema")[0],
                                   rtol=1e-4, atol=1e-4)
        self.assertGreater(np.abs(ema - cls_only).max(), 1e-3)

    def test_shards_concatenate_to_the_whole(self):
        whole, _, _ = self.embed()
        parts = []
        for i in range(3):
            e, labels, attrs = self.embed("--shard", f"{i}/3")
            self.assertEqual(attrs["shard"], f"{i}/3")
            parts.append((e, labels))
        np.testing.assert_allclose(np.concatenate([p[0] for p in parts]), whole, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), self.labels)

    def test_noise_at_t_is_seeded(self):
        clean, _, _ = self.embed()
        a, _, attrs = self.embed("--t", 500, "--seed", 3)
        b, _, _ = self.embed("--t", 500, "--seed", 3)
        c, _, _ = self.embed("--t", 500, "--seed", 4)
        self.assertEqual(attrs["t"], 500)
        np.testing.assert_array_equal(a, b)
        self.assertGreater(np.abs(a - c).max(), 1e-4)
        self.assertGreater(np.abs(a - clean).max(), 1e-3)

    def test_table_without_labels_gives_embeddings_without_labels(self):
        table = self.fmnist_table(40, labels=False)
        e, labels, _ = self.embed(table=table)
        self.assertEqual(e.shape, (40, 32))
        self.assertIsNone(labels)

    def test_bad_inputs(self):
        out = self.path("bad.h5")
        self.fails("mdx-embed", self.table, self.table, "-o", out, contains=["not an mdx checkpoint"])
        self.fails("mdx-embed", self.ckpt, self.ckpt, "-o", out, contains=["images"])
        small = self.path("small.h5")
        self.ok("mdx-tokenize", "-q", self.table, "--size", 16, "-o", small)
        self.fails("mdx-embed", self.ckpt, small, "-o", out, contains=["16x16x1", "28x28x1"])
        self.fails("mdx-embed", self.ckpt, self.table, "-o", out, "--pool", "max", code=2)
        self.fails("mdx-embed", self.ckpt, self.table, "-o", self.table, contains=["input"])
        self.assertNoOutput(out)
        mae = self.path("mae.ckpt.h5")
        self.ok("mdx-train", "-q", self.table, "-o", mae, *SMALL, "--steps", 1, "--objective", "mae")
        self.fails("mdx-embed", mae, self.table, "-o", out, "--t", 10, code=2, contains=["without noise"])
        self.assertNoOutput(out)


if __name__ == "__main__":
    unittest.main()
