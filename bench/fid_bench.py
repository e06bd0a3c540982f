"""mdx-fid on two 2048-d statistics files (Inception's width) against pytorch-fid's formula
(scipy.linalg.sqrtm of the product) on the same matrices, in the same run; prints both times,
their ratio and the agreement of the two values."""
import argparse
import json
import os
import subprocess
import tempfile
import time

import h5py
import numpy as np
import scipy
import scipy.linalg


def frechet_scipy(mu1, sigma1, mu2, sigma2, eps=1e-6):
    diff = mu1 - mu2
    covmean, _ = scipy.linalg.sqrtm(sigma1.dot(sigma2), disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
    if np.iscomplexobj(covmean):
        covmean = covmean.real
    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def stats(rng, n, dim, scale):
    """Covariance of n correlated samples: full rank when n > dim, like Inception features of 10k images."""
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    x = np.abs(rng.standard_normal((n, dim)) @ mix) * scale  # non-negative, like pooled ReLU features
    return x.mean(0), np.cov(x, rowvar=False)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build"))
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--samples", type=int, default=5000)
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs each")
    args = p.parse_args()

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="mdx-fid-bench-") as d:
        files = []
        for i, scale in enumerate((1.0, 1.1)):
            mu, sigma = stats(rng, args.samples, args.dim, scale)
            path = os.path.join(d, f"s{i}.h5")
            with h5py.File(path, "w") as f:
                f["mu"], f["sigma"] = mu, sigma
                f.attrs["count"] = args.samples
                f.attrs["extractor_kind"] = "torchscript"
                f.attrs["extractor_sha256"] = "0" * 64
                f.attrs["extractor_size"] = 299
            files.append((path, mu, sigma))

        mdx_times, scipy_times = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            r = subprocess.run([os.path.join(args.bin, "mdx-fid"), "-q", files[0][0], files[1][0]],
                               capture_output=True, text=True, check=True)
            mdx_times.append(time.perf_counter() - t)
            mdx_fid = json.loads(r.stdout)["fid"]
            t = time.perf_counter()
            ref = frechet_scipy(files[0][1], files[0][2], files[1][1], files[1][2])
            scipy_times.append(time.perf_counter() - t)

    commit = json.loads(r.stdout)["mdx_commit"]
    tm, ts = min(mdx_times), min(scipy_times)
    print(f"Frechet distance of two {args.dim}-d Gaussians (best of {args.repeat}, {os.cpu_count()} CPUs, "
          f"mdx {commit}, scipy {scipy.__version__})")
    print(f"  mdx-fid (whole process: start-up, reading, Cholesky + eigvalsh): {tm:8.3f} s   fid {mdx_fid:.10g}")
    print(f"  pytorch-fid formula (scipy.linalg.sqrtm, in memory):           {ts:8.3f} s   fid {ref:.10g}")
    print(f"  speed-up {ts / tm:.1f}x; relative difference {abs(mdx_fid - ref) / abs(ref):.2e}")


if __name__ == "__main__":
    main()
