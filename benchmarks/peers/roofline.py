"""This CPU's attainable fp32 rate for one thread, per second of process CPU time (so a shared machine does
not bias it): a large matmul (the best case for a BLAS) and the FixMatch step's own convolutions are not the
same thing, so both the matmul rate and the counted-FLOP rate of metassl's FixMatch iteration are printed.

    .venv/bin/python benchmarks/peers/roofline.py --threads 1
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def cpu_rate(fn, flop: float, repeat: int) -> float:
    """GFLOP per second of process CPU time, the best of `repeat` calls after one warm-up."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return flop / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=2048)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x, y = torch.randn(a.n, a.n), torch.randn(a.n, a.n)
    mm = cpu_rate(lambda: x @ y, 2 * a.n ** 3, 5)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1)
    img = torch.randn(192, 64, 28, 28).contiguous(memory_format=torch.channels_last)
    conv = conv.to(memory_format=torch.channels_last)
    with torch.no_grad():
        c = cpu_rate(lambda: conv(img), 2 * 192 * 64 * 64 * 9 * 28 * 28, 3)
    print(json.dumps({"threads": a.threads, "matmul_gflops_per_cpu_s": round(mm, 1),
                      "conv3x3_64ch_28px_192img_gflops_per_cpu_s": round(c, 1), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
