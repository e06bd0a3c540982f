#!/usr/bin/env python3
"""A taming-transformers VQGAN (as MAGE uses it: 1024 codes of 256 values, 16x16 codes for
256x256 images) as a TorchScript tokenizer for mdx's --tokenizer FILE.pt.

    vqgan_to_torchscript.py CONFIG.yaml CHECKPOINT.ckpt out.pt [--size 256] [--channels 3]

CONFIG and CHECKPOINT are the taming-transformers model files (vqgan_imagenet_f16_1024, or MAGE's
own vqgan_jax_strongaug.ckpt converted to taming's layout); the taming package must be importable.
The module declares what mdx checks on load (mdx(7), "TorchScript tokenizers"):

    mdx_kind "vq", stride (16), latent_channels (embed_dim, 256), image_channels, codes (n_embed);
    encode(x [B,C,H,W] in [-1,1]) -> int64 codes [B, H/16, W/16]: encoder, quant_conv, and the
    nearest codebook vector (taming's VectorQuantizer);
    decode(codes [B,h,w]) -> [B,C,H,W] in [-1,1]: the codebook vectors, post_quant_conv, decoder.

Pitfalls: traced at --size, not scripted; save with the LibTorch major version that mdx links.
"""
import argparse
import os
import sys

import torch


class Encode(torch.nn.Module):
    def __init__(self, model, channels):
        super().__init__()
        self.encoder, self.quant_conv, self.channels = model.encoder, model.quant_conv, channels
        self.register_buffer("codebook", model.quantize.embedding.weight.detach().clone())

    def forward(self, x):
        if self.channels == 1:
            x = x.repeat(1, 3, 1, 1)
        z = self.quant_conv(self.encoder(x))  # [B, d, h, w]
        b, d, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, d)
        dist = (flat ** 2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + (self.codebook ** 2).sum(1)
        return dist.argmin(1).reshape(b, h, w)


class Decode(torch.nn.Module):
    def __init__(self, model, channels):
        super().__init__()
        self.decoder, self.post_quant_conv, self.channels = model.decoder, model.post_quant_conv, channels
        self.register_buffer("codebook", model.quantize.embedding.weight.detach().clone())

    def forward(self, codes):
        z = self.codebook[codes].permute(0, 3, 1, 2)  # [B, d, h, w]
        x = self.decoder(self.post_quant_conv(z))
        return x.mean(1, keepdim=True) if self.channels == 1 else x


class Tokenizer(torch.nn.Module):
    mdx_kind: str
    stride: int
    latent_channels: int
    image_channels: int
    codes: int

    def __init__(self, enc, dec, stride, latent, channels, codes):
        super().__init__()
        self.enc, self.dec = enc, dec
        self.mdx_kind, self.stride, self.latent_channels = "vq", stride, latent
        self.image_channels, self.codes = channels, codes

    @torch.jit.export
    def encode(self, x):
        return self.enc(x)

    @torch.jit.export
    def decode(self, codes):
        return self.dec(codes)

    def forward(self, x):
        return self.decode(self.encode(x))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("checkpoint")
    ap.add_argument("output")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--channels", type=int, default=3, choices=(1, 3))
    a = ap.parse_args()
    from omegaconf import OmegaConf  # taming-transformers' own dependencies
    from taming.models.vqgan import VQModel

    cfg = OmegaConf.load(a.config).model.params
    model = VQModel(**cfg)
    state = torch.load(a.checkpoint, map_location="cpu")
    model.load_state_dict(state.get("state_dict", state), strict=False)
    model.eval()
    stride = 2 ** (len(cfg.ddconfig.ch_mult) - 1)
    d, k = cfg.embed_dim, cfg.n_embed
    with torch.no_grad():
        enc = torch.jit.trace(Encode(model, a.channels), torch.zeros(1, a.channels, a.size, a.size))
        g = a.size // stride
        dec = torch.jit.trace(Decode(model, a.channels), torch.zeros(1, g, g, dtype=torch.long))
    m = torch.jit.script(Tokenizer(enc, dec, stride, d, a.channels, k))
    with torch.no_grad():  # the codes are taming's
        y = torch.rand(1, a.channels, a.size, a.size) * 2 - 1
        x3 = y.repeat(1, 3, 1, 1) if a.channels == 1 else y
        _, _, (_, _, idx) = model.encode(x3)
        same = (m.encode(y).flatten() == idx.flatten()).float().mean().item()
        assert same > 0.99, f"only {same:.3f} of the codes agree with taming's quantizer"
    torch.jit.save(m, a.output)
    print(f"wrote {a.output}: stride {stride}, {k} codes of {d} values, torch {torch.__version__}")


if __name__ == "__main__":
    # One fixed hash seed: TorchScript writes a module's constants in Python-set order, so without
    # it the same weights make another file (and sha256) on every run (see fashion_mnist_extractor.py).
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, "PYTHONHASHSEED": "0"})
    main()
