"""--tokenizer FILE.pt: a TorchScript tokenizer built here with python3-torch (traced encoder and
decoder in a scripted wrapper that declares its geometry, as share/mdx/sd_vae_to_torchscript.py
builds one) gives through mdx the latents and reconstructions it gives in Python; checkpoints carry
the module; modules without encode/decode or with a wrong declared geometry are refused."""
import os
import sys
import unittest

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from mdxtest import ToolTest  # noqa: E402


class Encoder(torch.nn.Module):
    def __init__(self, out):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, out, 4, stride=4)

    def forward(self, x):
        return self.conv(x)


class Decoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.ConvTranspose2d(3, 1, 4, stride=4)

    def forward(self, z):
        return torch.tanh(self.conv(z))


class Vae(torch.nn.Module):
    mdx_kind: str
    stride: int
    latent_channels: int
    image_channels: int
    scaling_factor: float

    def __init__(self, enc, dec, latent=3, scale=0.5):
        super().__init__()
        self.enc, self.dec = enc, dec
        self.mdx_kind, self.stride, self.latent_channels, self.image_channels = "vae", 4, latent, 1
        self.scaling_factor = scale

    @torch.jit.export
    def encode(self, x):
        return self.enc(x)

    @torch.jit.export
    def decode(self, z):
        return self.dec(z)

    def forward(self, x):
        return self.decode(self.encode(x)[:, : self.latent_channels])


class NoDecode(torch.nn.Module):
    mdx_kind: str

    def __init__(self):
        super().__init__()
        self.mdx_kind = "vae"

    @torch.jit.export
    def encode(self, x):
        return x

    def forward(self, x):
        return x


def build(path, latent=3, enc_out=6):
    torch.manual_seed(0)
    x = torch.zeros(1, 1, 28, 28)
    enc = torch.jit.trace(Encoder(enc_out), x)
    dec = torch.jit.trace(Decoder(), torch.zeros(1, 3, 7, 7))
    m = torch.jit.script(Vae(enc, dec, latent))
    torch.jit.save(m, path)
    return m


class TorchScriptTokenizer(ToolTest):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.table = cls.fmnist_table(300)

    def test_latents_and_reconstructions_as_in_python(self):
        pt = self.path("vae.pt")
        m = build(pt)
        out = self.path("latents.h5")
        self.ok("mdx-tokenize", self.table, "--tokenizer", pt, "-o", out)
        images = h5py.File(self.table, "r")["images"][:]
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            moments = m.encode(x)
        mean, logvar = moments[:, :3], moments[:, 3:].clamp(-30, 20)
        tokens = lambda t: t.flatten(2).transpose(1, 2).numpy()  # noqa: E731  [B, k, 7, 7] -> [B, 49, k]
        with h5py.File(out, "r") as f:
            np.testing.assert_allclose(f["latent_mean"][:], tokens(mean) * 0.5, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(f["latent_logvar"][:], tokens(logvar) + 2 * np.log(0.5), rtol=1e-5, atol=1e-5)
            self.assertEqual(f["tokenizer"].attrs["kind"], "torchscript")
            self.assertEqual(f["tokenizer"].attrs["scaling_factor"], 0.5)
            with open(pt, "rb") as module:
                np.testing.assert_array_equal(f["tokenizer/module"][:], np.frombuffer(module.read(), np.uint8))
        # A model trained in its latent carries the module: the checkpoint needs no other file.
        ck = self.path("m.h5")
        r = self.ok("mdx-train", self.table, "--tokenizer", pt, "--objective", "mae", "--dim", 32, "--depth", 1,
                    "--decoder-depth", 1, "--heads", 2, "--batch", 16, "--steps", 2, "--threads", 1, "-o", ck)
        self.assertIn("49 tokens of 3 values (torchscript vae", r.stderr)
        os.unlink(pt)
        strip = self.path("strip.h5")
        self.ok("mdx-corrupt", self.table, "--tokenizer", ck, "--objective", "mae", "--count", 4, "-o", strip)
        with h5py.File(strip, "r") as f:
            x0 = f["corrupted"][:, 0]  # the x0 column: decode(encode(x)) on the [-1, 1] scale
        with torch.no_grad():
            back = m.decode(mean[:4]).permute(0, 2, 3, 1).numpy()
        np.testing.assert_allclose(x0, back, rtol=1e-4, atol=1e-5)

    def test_bad_modules(self):
        out = self.path("t.h5")
        bad = self.path("nodecode.pt")
        torch.jit.save(torch.jit.script(NoDecode()), bad)
        self.fails("mdx-tokenize", self.table, "--tokenizer", bad, "-o", out, contains=("no method 'decode'",))
        wrong = self.path("wrong.pt")
        build(wrong, latent=4, enc_out=6)  # declares 4 latent channels, encodes 2 x 3
        self.fails("mdx-tokenize", self.table, "--tokenizer", wrong, "-o", out,
                   contains=("encode() of [1,1,8,8]", "declare float [1,8,2,2]"))
        junk = self.path("junk.pt")
        with open(junk, "wb") as f:
            f.write(b"PK\x03\x04 not really a zip")
        self.fails("mdx-tokenize", self.table, "--tokenizer", junk, "-o", out, contains=("not a TorchScript module",))
        self.assertNoOutput(out)


if __name__ == "__main__":
    unittest.main()
