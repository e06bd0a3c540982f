#!/usr/bin/python3
"""Benchmark of one mdx-train training step (`mdx-train --benchmark N`) against the same step written
in PyTorch on the same LibTorch build (Debian's python3-torch), measured in the same run.

Both sides do the same work per step: index the in-memory uint8 table and patchify; corrupt the
batch (per objective: UMD's two groups of different kept counts, MAE's 75 % mask, DiT's noise on
every token, l-DAE's noise in a PCA latent); forward through the same masked-diffusion
auto-encoder (same architecture, asserted by the parameter count); the objective's loss; backward;
gradient clipping to 1.0; AdamW (betas 0.9/0.95, weight decay 0.05 on >= 2-D weights except the
CLS tokens); EMA of every parameter (0.9999). The Python side runs on random data of the table's
shape and, for l-DAE, a random orthonormal basis of the tokenizer's size. Same thread count on
both sides. mdx's tools keep freed memory in the process (mallopt, lib/mdx/util/tool.cpp); the
Python side runs with glibc's defaults unless the environment sets MALLOC_MMAP_THRESHOLD_ and
MALLOC_TRIM_THRESHOLD_ (which then reach both sides), which tells how much of a difference that
is. Each side: 3 warm-up steps, then --steps timed steps; best of --repeat runs.

Prints a JSON line per measurement and a Markdown table with the ratios. Run by `make bench`
(bench/run.sh) with /usr/bin/python3.

On a machine that is busy with other work, OpenMP's spinning threads (and OpenBLAS's own pool
beside them) make multi-threaded timings swing by several times on both sides; the load average
goes into every JSON line, and a warning to stderr when it is high at the start. `--threads 1
--blas-threads 1` (or OMP_WAIT_POLICY=passive in the environment) gives stable ratios there."""
import argparse
import ctypes
import json
import math
import os
import subprocess
import sys
import tempfile
import time


def _blas_threads_before_torch():
    """--blas-threads N sets OPENBLAS_NUM_THREADS for both sides; OpenBLAS reads it when torch loads it."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--blas-threads", type=int, default=0)
    n = ap.parse_known_args()[0].blas_threads
    if n > 0:
        os.environ["OPENBLAS_NUM_THREADS"] = str(n)


_blas_threads_before_torch()
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from machine import commit, cpu_name  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WARMUP = 3  # mdx-train --benchmark's warm-up steps

PRESETS = {"tiny": (192, 6, 3, 2), "s": (384, 12, 6, 4), "b": (768, 12, 12, 4), "l": (1024, 24, 16, 8)}


# ---------------------------------------------------------------------------------------------
# The model: lib/mdx/model/autoencoder.{h,cpp}, op for op.

def sincos_positions(dim, gh, gw):
    def axis(pos):
        quarter = dim // 4
        omega = 1.0 / torch.pow(10000.0, torch.arange(quarter, dtype=torch.float64) / quarter)
        out = torch.outer(pos.double(), omega)
        return torch.cat([out.sin(), out.cos()], 1)
    ys = torch.arange(gh, dtype=torch.float64).repeat_interleave(gw)
    xs = torch.arange(gw, dtype=torch.float64).repeat(gh)
    return torch.cat([axis(xs), axis(ys)], 1).float()


def timestep_frequencies(t, dim, max_period=10000.0):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float().unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([args.cos(), args.sin()], 1)


def modulate(x, shift, scale):
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def linear(i, o):
    lin = nn.Linear(i, o)
    nn.init.xavier_uniform_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def zero_linear(i, o):
    lin = nn.Linear(i, o)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return lin


def plain_norm(dim):
    return nn.LayerNorm(dim, eps=1e-6, elementwise_affine=False)


def time_embedder(dim):
    a, b = nn.Linear(256, dim), nn.Linear(dim, dim)
    for lin in (a, b):
        nn.init.normal_(lin.weight, 0.0, 0.02)
        nn.init.zeros_(lin.bias)
    return nn.Sequential(a, nn.SiLU(), b)


class AdaLNBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.heads = heads
        self.norm1, self.norm2 = plain_norm(dim), plain_norm(dim)
        self.qkv, self.proj = linear(dim, 3 * dim), linear(dim, dim)
        self.fc1, self.fc2 = linear(dim, hidden), linear(hidden, dim)
        self.modulation = zero_linear(dim, 6 * dim)

    def forward(self, x, c):
        m = self.modulation(F.silu(c)).chunk(6, 1)
        B, N, dim = x.shape
        h = modulate(self.norm1(x), m[0], m[1])
        qkv = self.qkv(h).reshape(B, N, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-2, -1)).mul_(1.0 / math.sqrt(q.size(-1)))
        a = torch.matmul(scores.softmax(-1), v)
        y = x + m[2].unsqueeze(1) * self.proj(a.transpose(1, 2).reshape(B, N, dim))
        h = modulate(self.norm2(y), m[3], m[4])
        return y + m[5].unsqueeze(1) * self.fc2(F.gelu(self.fc1(h), approximate="tanh"))


class MaskedDiffusionAutoencoder(nn.Module):
    def __init__(self, height, width, channels, patch, dim, depth, heads, decoder_dim, decoder_depth,
                 decoder_heads, mlp_ratio=4.0, cls_tokens=4, learned=False):
        super().__init__()
        D, W, Wd = patch * patch * channels, dim, decoder_dim
        gh, gw = height // patch, width // patch
        self.W, self.Wd, self.C = W, Wd, cls_tokens
        self.patch_embed = linear(D, W)
        self.cls = nn.Parameter(torch.randn(cls_tokens, W) * 0.02)
        self.encoder_mask_token = nn.Parameter(torch.randn(W) * 0.02)
        # UMD's form (learned: True): learned positions, N(0, 1/sqrt(hw)), and one time embedding for
        # encoder, decoder and final modulation; else fixed sin-cos and one per side.
        self.shared = learned
        if learned:
            self.positions = nn.Parameter(torch.randn(gh * gw, W) / math.sqrt(gh * gw))
        else:
            self.register_buffer("positions", sincos_positions(W, gh, gw))
        self.time_mlp = time_embedder(W)
        if not learned:
            self.decoder_time_mlp = time_embedder(Wd)
        self.encoder = nn.ModuleList(AdaLNBlock(W, heads, mlp_ratio) for _ in range(depth))
        self.encoder_norm = nn.LayerNorm(W, eps=1e-6)
        self.decoder_embed = linear(W, Wd)
        self.prefix_embed = linear(W, Wd)
        self.mask_token = nn.Parameter(torch.randn(Wd) * 0.02)
        if learned:
            self.decoder_positions = nn.Parameter(torch.randn(gh * gw, Wd) / math.sqrt(gh * gw))
        else:
            self.register_buffer("decoder_positions", sincos_positions(Wd, gh, gw))
        self.decoder = nn.ModuleList(AdaLNBlock(Wd, decoder_heads, mlp_ratio) for _ in range(decoder_depth))
        self.final_norm = plain_norm(Wd)
        self.final_modulation = zero_linear(Wd, 2 * Wd)
        self.head = zero_linear(Wd, 2 * D)

    def condition(self, time_index, decoder_side):
        freqs = timestep_frequencies(time_index, 256)
        return self.decoder_time_mlp(freqs) if decoder_side and not self.shared else self.time_mlp(freqs)

    def run_encoder(self, x, keep, c):
        G, W = x.size(0), x.size(2)
        visible = x.gather(1, keep.unsqueeze(-1).expand(G, keep.size(1), W))
        h = torch.cat([self.cls.unsqueeze(0).expand(G, self.cls.size(0), W), visible], 1)
        for block in self.encoder:
            h = block(h, c)
        return self.encoder_norm(h)

    def forward(self, tokens, time_index, dropped, masked):
        B, L = tokens.shape[:2]
        W, Wd, C = self.W, self.Wd, self.C
        x = self.patch_embed(tokens) + self.positions
        token_only = masked & ~dropped
        if token_only.any().item():
            x = torch.where(token_only.unsqueeze(-1), self.encoder_mask_token + self.positions, x)
        c_enc = self.condition(time_index, False)
        # Rows keep different numbers of tokens (UMD's two steps): encode each group of equal count.
        kept = (~dropped).sum(1).cpu()
        groups = {}
        for i, k in enumerate(kept.tolist()):
            groups.setdefault(k, []).append(i)
        full = self.mask_token.expand(B, L, Wd).contiguous()
        representation = torch.empty(B, W)
        for K in sorted(groups):
            rows_list = groups[K]
            G = len(rows_list)
            rows = torch.tensor(rows_list, dtype=torch.long)
            every = G == B
            keep = (~(dropped if every else dropped.index_select(0, rows))).nonzero().select(1, 1).reshape(G, K)
            h = self.run_encoder(x if every else x.index_select(0, rows), keep,
                                 c_enc if every else c_enc.index_select(0, rows))
            rep = h[:, :C].mean(1).to(representation.dtype)  # bf16 under autocast, as mdx casts back
            dec = self.decoder_embed(h[:, C:]).to(full.dtype)
            part = (full if every else full.index_select(0, rows)).scatter(1, keep.unsqueeze(-1).expand(G, K, Wd), dec)
            if every:
                full, representation = part, rep
            else:
                full = full.index_copy(0, rows, part)
                representation = representation.index_copy(0, rows, rep)
        c_dec = c_enc if self.shared else self.condition(time_index, True)
        h = torch.cat([self.prefix_embed(representation).unsqueeze(1), full + self.decoder_positions], 1)
        for block in self.decoder:
            h = block(h, c_dec)
        m = self.final_modulation(F.silu(c_dec)).chunk(2, 1)
        out = self.head(modulate(self.final_norm(h), m[0], m[1]))[:, 1:]
        x0, eps = out.chunk(2, 2)
        return x0, eps, representation


# ---------------------------------------------------------------------------------------------
# Corruption (lib/mdx/corrupt/{schedule,mask,objective}.cpp) and losses (lib/mdx/train/loss.cpp).

def schedule(kind, T=1000):
    """signal, noise, weight: float64 [T]."""
    t = torch.arange(T, dtype=torch.float64)
    weight = torch.ones(T, dtype=torch.float64)
    if kind in ("linear", "cosine"):
        if kind == "linear":
            betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
        else:
            f = lambda s: torch.cos((s / T + 0.008) / 1.008 * math.pi / 2) ** 2
            betas = torch.clamp(1.0 - f(t + 1.0) / f(t), max=0.999)
        ab = torch.cumprod(1.0 - betas, 0)
        return ab.sqrt(), (1.0 - ab).sqrt(), weight
    if kind == "ldae-gamma":
        g2 = 1.0 - t / T
        return g2.sqrt(), (1.0 - g2).sqrt(), weight
    raise ValueError(kind)


def per_row(coef, t, dims):
    return coef.index_select(0, t).float().reshape((t.size(0),) + (1,) * (dims - 1))


def mae_mask(rows, L, ratio):
    keep = int(L * (1.0 - ratio))
    rank = torch.rand(rows, L).argsort(1).argsort(1)
    m = rank < (L - keep)
    return m, m.clone()


class Step:
    """One objective's training step over an in-memory uint8 table, as mdx-train's Trainer::train_step."""

    def __init__(self, objective, model, images, batch, patch, total, pca_dim, ema=0.9999, bf16=False):
        self.objective, self.model, self.images, self.batch, self.patch = objective, model, images, batch, patch
        self.bf16 = bf16  # the forward pass under CPU autocast, as mdx-train --precision bf16
        self.total, self.ema_decay = total, ema
        self.warmup = int(math.floor(0.05 * total + 0.5))
        self.base_lr = 1.5e-4 * batch / 256
        kind = {"umd": "cosine", "dit": "linear", "ldae": "ldae-gamma", "mae": "cosine"}[objective]
        self.signal, self.noise, self.weight = schedule(kind)
        self.abar = self.signal ** 2 / (self.signal ** 2 + self.noise ** 2)
        named = list(model.named_parameters())
        self.params = [p for _, p in named]
        decay = [p for n, p in named if p.dim() >= 2 and n != "cls"]
        rest = [p for n, p in named if not (p.dim() >= 2 and n != "cls")]
        self.opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
                                     lr=self.base_lr, betas=(0.9, 0.95), eps=1e-8, foreach=False)
        with torch.no_grad():
            self.ema = {n: p.detach().clone() for n, p in named}
        self.named = named
        D = patch * patch * images.size(3)
        if objective == "ldae":  # a random orthonormal basis of the tokenizer's size
            q, _ = torch.linalg.qr(torch.randn(D, D, dtype=torch.float64))
            self.components = q.t().contiguous()  # rows = directions
            self.mean = torch.randn(D, dtype=torch.float64) * 0.1
            self.pca_dim = pca_dim
        self.perm, self.perm_epoch = None, -1
        self.spe = max(1, images.size(0) // batch)

    def lr(self, step):
        if step < self.warmup:
            return self.base_lr * step / self.warmup
        if self.total <= self.warmup:
            return self.base_lr
        progress = (step - self.warmup) / (self.total - self.warmup)
        return self.base_lr * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))

    def batch_indices(self, step):
        epoch, pos = divmod(step, self.spe)
        n = self.images.size(0)
        if epoch != self.perm_epoch:
            self.perm, self.perm_epoch = torch.randperm(n), epoch
        b = self.batch
        if b <= n:
            return self.perm[pos * b: pos * b + b]
        return self.perm.repeat((b + n - 1) // n)[:b]

    def patchify(self, idx):
        imgs = self.images.index_select(0, idx).float().div(127.5).sub_(1.0)
        n, h, w, c = imgs.shape
        p = self.patch
        return imgs.reshape(n, h // p, p, w // p, p, c).permute(0, 1, 3, 2, 4, 5).reshape(n, (h // p) * (w // p), p * p * c)

    def encode(self, x):
        v = self.components[: self.pca_dim].float()
        return torch.matmul(x.float() - self.mean.float(), v.t())

    def decode(self, z):
        v = self.components[: self.pca_dim].float()
        return torch.matmul(z.float(), v) + self.mean.float()

    def corrupt(self, x0):
        B, L, D = x0.shape
        t = torch.randint(0, 1000, (B,), dtype=torch.long)
        representation = torch.zeros(B, dtype=torch.bool)
        if self.objective == "umd":
            rep = int(math.floor(B * 0.5 + 0.5))
            ma, da = mae_mask(rep, L, 0.75)
            mb, db = mae_mask(B - rep, L, 0.375)
            masked, dropped = torch.cat([ma, mb]), torch.cat([da, db])
            representation[:rep] = True
            t[:rep] = -1
        elif self.objective == "mae":
            masked, dropped = mae_mask(B, L, 0.75)
            t.fill_(-1)
        else:
            masked = torch.zeros(B, L, dtype=torch.bool)
            dropped = masked.clone()
        noisy = t >= 0
        tc = t.clamp_min(0)
        if self.objective == "ldae":
            z = self.encode(x0)
            eps = torch.randn(B, L, self.pca_dim)
            zt = per_row(self.signal, tc, 3) * z + per_row(self.noise, tc, 3) * eps
            xt = torch.where(noisy.view(B, 1, 1), self.decode(zt), x0)
        else:
            eps = torch.randn(B, L, D)
            xt = torch.where(noisy.view(B, 1, 1), per_row(self.signal, tc, 3) * x0 + per_row(self.noise, tc, 3) * eps, x0)
        eps = eps * noisy.view(B, 1, 1).float()
        time_index = torch.where(noisy, t + 1, torch.zeros_like(t))
        return dict(xt=xt, eps=eps, t=t, time_index=time_index, masked=masked, dropped=dropped,
                    representation=representation)

    def loss(self, b, x0, out_x0, out_eps):
        def masked_mean(values, select):
            s = select.to(values.dtype)
            return (values * s).sum() / s.sum().clamp_min(1.0)

        def token_mse(pred, target):
            return (pred.float() - target.float()).pow(2).mean(-1)

        if self.objective == "umd":
            L = x0.size(1)
            rep = b["representation"].unsqueeze(1).expand(-1, L)
            noisy, masked = ~rep, b["masked"]
            ex, ee = token_mse(out_x0, x0), token_mse(out_eps, b["eps"])
            rep_term = masked_mean(ex, masked & rep)
            noisy_masked = bool((masked & noisy).any().item())
            eps_term = masked_mean(ee, (~masked & noisy) if noisy_masked else noisy)
            x0_term = masked_mean(ex, (masked & noisy) if noisy_masked else noisy)
            return 0.5 * 0.5 * (eps_term + x0_term) + 0.5 * rep_term
        if self.objective == "mae":
            return masked_mean(token_mse(out_x0, x0), b["masked"])
        if self.objective == "ldae":
            basis = self.components.float()
            r = torch.matmul(x0.float() - out_x0.float(), basis.t())
            w = torch.full((basis.size(0),), 0.1)
            w[: self.pca_dim] = 1.0
            per_token = (r.pow(2) * w).sum(-1)
            lam = per_row(self.weight, b["t"].clamp_min(0), 2)
            return (per_token * lam).mean()
        return token_mse(out_eps, b["eps"]).mean()  # dit

    def __call__(self, step):
        for g in self.opt.param_groups:
            g["lr"] = self.lr(step)
        x0 = self.patchify(self.batch_indices(step))
        b = self.corrupt(x0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            out_x0, out_eps, _ = self.model(b["xt"], b["time_index"], b["dropped"], b["masked"])
        loss = self.loss(b, x0, out_x0, out_eps)
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()
        with torch.no_grad():
            d = self.ema_decay
            for n, p in self.named:
                self.ema[n].mul_(d).add_(p.detach(), alpha=1 - d)
        return loss


def python_run(objective, args, table_shape, pca_dim):
    torch.manual_seed(0)
    n, h, w, c = table_shape
    dim, depth, heads, ddepth = PRESETS[args.model]
    model = MaskedDiffusionAutoencoder(h, w, c, args.patch, dim, depth, heads, dim, ddepth, heads,
                                       learned=objective == "umd")
    model.train()
    params = sum(p.numel() for p in model.parameters())
    images = torch.randint(0, 256, table_shape, dtype=torch.uint8)
    step = Step(objective, model, images, args.batch, args.patch, args.steps + WARMUP, pca_dim, bf16=args.bf16)
    for i in range(WARMUP):
        step(i)
    t0 = time.perf_counter()
    for i in range(WARMUP, WARMUP + args.steps):
        loss = step(i)
    secs = time.perf_counter() - t0
    if not math.isfinite(loss.item()):
        sys.exit(f"python {objective}: the loss is not finite")
    return {"parameters": params, "seconds": secs}


# ---------------------------------------------------------------------------------------------

def python_subprocess(objective, args, table_shape, pca_dim, bf16=False):
    """python_run in a fresh interpreter, as a user's training script runs: in this process, a
    second run would find the heap that the first one grew (and glibc's page faults gone)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--python-side", objective, "--model", args.model,
           "--batch", str(args.batch), "--steps", str(args.steps), "--threads", str(args.requested_threads),
           "--images", str(table_shape[0])] + (["--bf16"] if bf16 else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"python side failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    return json.loads(r.stdout.splitlines()[-1])


def cpp_run(objective, args, table, tokenizer, out, bf16=False):
    cmd = [os.path.join(args.bin, "mdx-train"), "-q", table, "-o", out, "--benchmark", str(args.steps),
           "--objective", objective, "--model", args.model, "--batch", str(args.batch),
           "--threads", str(args.requested_threads), "--device", "cpu",
           # the Python side's work: an EMA of every parameter, no augmentation
           "--ema", "0.9999", "--augment", "none", "--precision", "bf16" if bf16 else "fp32"]
    if objective == "ldae":
        cmd += ["--tokenizer", tokenizer]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"benchmark command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not lines:
        sys.exit(f"no JSON from: {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return json.loads(lines[-1])


def run_tool(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"command failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=os.environ.get("MDX_BIN") or os.path.join(ROOT, "build"),
                    help="folder of the mdx executables (default: $MDX_BIN, else build/)")
    ap.add_argument("--model", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up steps)")
    ap.add_argument("--repeat", type=int, default=2, help="runs per side; the best counts")
    ap.add_argument("--threads", type=int, default=0,
                    help="LibTorch CPU threads of both sides (0: each side's default, what a user gets)")
    ap.add_argument("--objectives", default="umd,mae,ldae,dit")
    ap.add_argument("--images", type=int, default=2000, help="rows of the in-memory table")
    ap.add_argument("--blas-threads", type=int, default=0,
                    help="OPENBLAS_NUM_THREADS of both sides (0: as the environment says). LibTorch's thread "
                         "count does not reach Debian's pthread OpenBLAS, whose own pool (one thread per core by "
                         "default) runs the matmuls beside the OpenMP threads; on a loaded machine the two pools "
                         "oversubscribe the cores and the timings swing by several times")
    ap.add_argument("--python-side", metavar="OBJECTIVE", help=argparse.SUPPRESS)  # one Python run, as JSON
    ap.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)  # that Python run under autocast
    ap.add_argument("--precisions", default="fp32,bf16",
                    help="fp32, bf16 or both: bf16 is mdx-train --precision bf16 against PyTorch's CPU autocast")
    args = ap.parse_args()
    args.patch, pca_dim = 4, 8  # Fashion-MNIST 28x28x1: L = 49 tokens of D = 16; l-DAE d = 8
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    for o in objectives:
        if o not in ("umd", "mae", "ldae", "dit"):
            ap.error(f"unknown objective '{o}' (umd, mae, ldae, dit)")
    if args.steps < 1 or args.repeat < 1 or args.threads < 0 or args.batch < 1:
        ap.error("--steps, --repeat and --batch must be >= 1, --threads >= 0")
    # mdx-train --threads N also sets OpenBLAS's pool to N (lib/mdx/util/tool.cpp): so does this side
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        if not args.blas_threads:
            try:  # the library torch already loaded (libblas.so.3 -> OpenBLAS): dlopen returns it
                ctypes.CDLL("libopenblas.so.0").openblas_set_num_threads(args.threads)
            except (OSError, AttributeError):
                pass
    args.requested_threads = args.threads
    args.threads = torch.get_num_threads()  # what both sides run on
    if args.python_side:
        print(json.dumps(python_run(args.python_side, args, (args.images, 28, 28, 1), pca_dim)))
        return
    load = os.getloadavg()[0]
    if load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {load:.1f} on {os.cpu_count()} cores before the benchmark: other work "
              f"competes with both sides (see --help on --threads 1 --blas-threads 1)", file=sys.stderr)
    rev = commit()
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or any(p not in ("fp32", "bf16") for p in precisions):
        ap.error("--precisions takes fp32, bf16 or both")
    n = min(max(args.images, args.batch), 10000)
    table_shape = (n, 28, 28, 1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="mdx-train-bench-") as tmp:
        table, tokenizer, out = os.path.join(tmp, "t.h5"), os.path.join(tmp, "pca.h5"), os.path.join(tmp, "x.h5")
        run_tool([os.path.join(args.bin, "mdx-tokenize"), "-q", f"{FMNIST}/t10k-images-idx3-ubyte.gz",
                  "--labels", f"{FMNIST}/t10k-labels-idx1-ubyte.gz", "--limit", str(n), "-o", table])
        if "ldae" in objectives:
            run_tool([os.path.join(args.bin, "mdx-pca-fit"), "-q", table, "--patch", str(args.patch),
                      "--dim", str(pca_dim), "-o", tokenizer])
        for obj in objectives:
            for prec in precisions:
                bf16 = prec == "bf16"
                best = {}
                for _ in range(args.repeat):  # interleaved, so that drift in the machine's load hits both sides
                    j = cpp_run(obj, args, table, tokenizer, out, bf16)
                    if j["threads"] != args.threads:
                        sys.exit(f"mdx-train ran on {j['threads']} threads, not {args.threads}")
                    if j.get("precision", "fp32") != prec:
                        sys.exit(f"mdx-train ran in {j.get('precision')}, not {prec}")
                    if "c++" not in best or j["step_ms"] < best["c++"]["step_ms"]:
                        best["c++"] = {"step_ms": j["step_ms"], "parameters": j["parameters"],
                                       "mdx_train_commit": j.get("commit"), "loadavg": os.getloadavg()[0]}
                    p = python_subprocess(obj, args, table_shape, pca_dim, bf16)
                    ms = 1000 * p["seconds"] / args.steps
                    if "python" not in best or ms < best["python"]["step_ms"]:
                        best["python"] = {"step_ms": ms, "parameters": p["parameters"], "loadavg": os.getloadavg()[0]}
                if best["c++"]["parameters"] != best["python"]["parameters"]:
                    sys.exit(f"{obj}: the Python model has {best['python']['parameters']} parameters, "
                             f"mdx-train's {best['c++']['parameters']}: not the same architecture")
                for side in ("c++", "python"):
                    b = best[side]
                    row = {"bench": "train-step", "side": side, "commit": rev, "objective": obj, "model": args.model,
                           "precision": prec, "batch": args.batch, "threads": args.threads, "steps": args.steps,
                           "repeat": args.repeat, "parameters": b["parameters"], "step_ms": round(b["step_ms"], 3),
                           "images_per_s": round(1000 * args.batch / b["step_ms"], 2),
                           "libtorch": torch.__version__, "cpu": cpu_name(),
                           "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS", "default"),
                           "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                           "loadavg": round(b["loadavg"], 2)}
                    if side == "c++":
                        row["mdx_train_commit"] = b["mdx_train_commit"]
                    print(json.dumps(row), flush=True)
                    rows.append(row)
    get = lambda obj, side, prec=precisions[0]: next(  # noqa: E731
        r for r in rows if r["objective"] == obj and r["side"] == side and r["precision"] == prec)
    print()
    print(f"model {args.model}, batch {args.batch}, {args.threads} threads (OpenBLAS's own pool: "
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'its default')}), best of {args.repeat} x {args.steps} steps, "
          f"{cpu_name()}")
    print()
    for prec in precisions:
        print(f"| objective ({prec}) | C++ step ms | Python step ms | C++ images/s | Python images/s | speed vs Python |")
        print("|---|---:|---:|---:|---:|---:|")
        for obj in objectives:
            c, p = get(obj, "c++", prec), get(obj, "python", prec)
            print(f"| {obj} | {c['step_ms']:.1f} | {p['step_ms']:.1f} | {c['images_per_s']:.1f} | "
                  f"{p['images_per_s']:.1f} | {p['step_ms'] / c['step_ms']:.2f}x |")
        print()
    if "fp32" in precisions and "bf16" in precisions:
        print("| objective | C++ bf16 / fp32 speed-up | Python autocast / fp32 speed-up |")
        print("|---|---:|---:|")
        for obj in objectives:
            print(f"| {obj} | {get(obj, 'c++', 'fp32')['step_ms'] / get(obj, 'c++', 'bf16')['step_ms']:.2f}x | "
                  f"{get(obj, 'python', 'fp32')['step_ms'] / get(obj, 'python', 'bf16')['step_ms']:.2f}x |")
        print()
    if "umd" in objectives and "dit" in objectives:
        L, C, B = 49, 4, args.batch
        rep = int(math.floor(B * 0.5 + 0.5))
        enc = rep * (C + int(L * 0.25)) + (B - rep) * (C + int(L * 0.625))
        share = enc / (B * (C + L))
        cu, cd = get("umd", "c++")["step_ms"], get("dit", "c++")["step_ms"]
        pu, pd = get("umd", "python")["step_ms"], get("dit", "python")["step_ms"]
        print(f"\nUMD step / DiT step: {cu / cd:.2f} (C++), {pu / pd:.2f} (Python); UMD's encoder sees "
              f"{100 * share:.0f} % of DiT's encoder tokens (CLS included), its decoder all of them")


if __name__ == "__main__":
    main()
