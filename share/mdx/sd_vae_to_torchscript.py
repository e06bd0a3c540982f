#!/usr/bin/env python3
"""Stable Diffusion's VAE (diffusers' AutoencoderKL, e.g. stabilityai/sd-vae-ft-ema, KL-f8 with 4
latent channels) as a TorchScript tokenizer for mdx's --tokenizer FILE.pt.

    sd_vae_to_torchscript.py MODEL out.pt [--size 256] [--channels 3]

MODEL is a local diffusers model directory (or a hub id, where the machine can download). The
module declares what mdx checks on load (see mdx(7), "TorchScript tokenizers"):

    mdx_kind "vae", stride 2^(levels-1) (8), latent_channels (4), image_channels, scaling_factor
    (the model's config.scaling_factor, 0.18215 for SD 1.x/2.x);
    encode(x [B,C,H,W] in [-1,1]) -> [B, 2k, H/8, W/8]: the posterior's mean and log-variance
    (quant_conv's output, as diffusers' DiagonalGaussianDistribution reads it);
    decode(z [B,k,h,w], unscaled) -> [B,C,H,W] in [-1,1].

Pitfalls: the encoder and decoder are traced, not scripted (diffusers' code is not scriptable),
at --size: use the image size you will tokenize. Save with the LibTorch major version that mdx
links (torch.__version__ here should match `mdx-train --version`): a module saved by a newer
LibTorch may not load. Grayscale tables (--channels 1) are replicated to RGB on the way in and
averaged on the way out.
"""
import argparse
import os
import sys

import torch


class Encode(torch.nn.Module):
    def __init__(self, vae, channels):
        super().__init__()
        self.encoder, self.quant_conv, self.channels = vae.encoder, vae.quant_conv, channels

    def forward(self, x):
        if self.channels == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.quant_conv(self.encoder(x))


class Decode(torch.nn.Module):
    def __init__(self, vae, channels):
        super().__init__()
        self.decoder, self.post_quant_conv, self.channels = vae.decoder, vae.post_quant_conv, channels

    def forward(self, z):
        x = self.decoder(self.post_quant_conv(z))
        return x.mean(1, keepdim=True) if self.channels == 1 else x


class Tokenizer(torch.nn.Module):
    mdx_kind: str
    stride: int
    latent_channels: int
    image_channels: int
    scaling_factor: float

    def __init__(self, enc, dec, stride, latent, channels, scale):
        super().__init__()
        self.enc, self.dec = enc, dec
        self.mdx_kind, self.stride, self.latent_channels = "vae", stride, latent
        self.image_channels, self.scaling_factor = channels, scale

    @torch.jit.export
    def encode(self, x):
        return self.enc(x)

    @torch.jit.export
    def decode(self, z):
        return self.dec(z)

    def forward(self, x):
        return self.decode(self.encode(x)[:, : self.latent_channels])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("output")
    ap.add_argument("--size", type=int, default=256, help="the image size traced at")
    ap.add_argument("--channels", type=int, default=3, choices=(1, 3))
    a = ap.parse_args()
    from diffusers.models import AutoencoderKL  # only this script needs diffusers

    vae = AutoencoderKL.from_pretrained(a.model).eval()
    cfg = vae.config
    stride = 2 ** (len(cfg.block_out_channels) - 1)
    k = cfg.latent_channels
    with torch.no_grad():
        x = torch.zeros(1, a.channels, a.size, a.size)
        enc = torch.jit.trace(Encode(vae, a.channels), x)
        dec = torch.jit.trace(Decode(vae, a.channels), torch.zeros(1, k, a.size // stride, a.size // stride))
    m = torch.jit.script(Tokenizer(enc, dec, stride, k, a.channels, float(cfg.scaling_factor)))
    with torch.no_grad():  # the module round-trips an image as diffusers does
        y = torch.rand(1, a.channels, a.size, a.size) * 2 - 1
        moments = m.encode(y)
        want = vae.decode(moments[:, :k]).sample
        if a.channels == 1:
            want = want.mean(1, keepdim=True)
        err = (m.decode(moments[:, :k]) - want).abs().max().item()
        assert err < 1e-3, f"the traced decoder differs from diffusers' by {err}"
    torch.jit.save(m, a.output)
    print(f"wrote {a.output}: stride {stride}, {k} latent channels, scaling factor {cfg.scaling_factor}, "
          f"torch {torch.__version__}")


if __name__ == "__main__":
    # One fixed hash seed: TorchScript writes a module's constants in Python-set order, so without
    # it the same weights make another file (and sha256) on every run (see fashion_mnist_extractor.py).
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "PYTHONHASHSEED": "0"})
    main()
