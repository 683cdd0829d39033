"""`metassl bench-step`: what one training step costs, per variant, measured in one process.

    metassl bench-step --model cnn --batch 64 --device cpu --repeat 20
    metassl bench-step --model convlarge --batch 64 --json
    metassl bench-step --variants supervised,fixmatch,vat,metamixup-head      # any registered algorithm too

Variants are timed interleaved (round-robin, so drift and background load hit all alike); each
reports the median and the spread (25th-75th percentile) of ms/step, images/s (labeled + unlabeled)
the ratio to the `mixup` step (ablation row 3: the same step without meta-gradient), the step's FLOPs
(torch.utils.flop_counter: forward + backward, matmuls and convolutions) and the GFLOP/s achieved. Peak
memory is the step's own: on CUDA max_memory_allocated above the resting level; on CPU the peak
RSS increase of a fresh subprocess running that variant alone.

`reference` is the authors' pass sequence, kept here as the baseline to beat: parameters are
perturbed in place and restored, and the plain pseudo-labels get their own forward (three no-grad
unlabeled forwards). Our `metamixup` computes the same update (test_bench_step.py) with one
forward fewer and no parameter mutation.
"""
from __future__ import annotations

import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..algorithms import ALGORITHMS, Batch, StepContext
from ..algorithms.metamixup import MetaMixup, Mixup
from ..algorithms.supervised import Supervised
from ..config import Config
from ..errors import UserError
from ..models import build_model, natural_shape
from ..torch_utils import resolve_device
from ..train import train_step

EPS_SCALE = Config.eps_scale
VARIANTS = ("supervised", "mixup", "reference", "metamixup", "metamixup-head", "metamixup-jvp", "metamixup-exact")


class ReferenceMetaMixup(MetaMixup):
    """The authors' order of passes: eval-mode labeled gradient; no-grad forwards at theta, theta+eps*g and
    theta-eps*g with the parameters changed in place and restored; then the train-mode losses."""

    def pseudo_labels(self, model: nn.Module, batch: Batch, ctx: StepContext) -> tuple[Tensor, Tensor]:
        x_lb, y_lb, x_ulb = batch.x_lb, batch.y_lb, batch.x_ulb[0]
        model.eval()
        params = [p for p in model.parameters() if p.requires_grad]
        g = torch.autograd.grad(F.cross_entropy(model(x_lb), y_lb), params)
        with torch.no_grad():
            y_tilde = F.softmax(model(x_ulb), dim=1)
            eps = self.eps_scale / torch.sqrt(sum((gi * gi).sum() for gi in g))
            torch._foreach_add_(params, [eps * gi for gi in g])
            p_plus = F.softmax(model(x_ulb), dim=1)
            torch._foreach_add_(params, [-2 * eps * gi for gi in g])
            p_minus = F.softmax(model(x_ulb), dim=1)
            torch._foreach_add_(params, [eps * gi for gi in g])
            y_hat = (y_tilde - ctx.meta_step_size * (p_plus - p_minus) / eps).clamp_min(0)
            s = y_hat.sum(1, keepdim=True)
            y_hat = torch.where(s > 0, y_hat / s.clamp_min(1e-12), y_hat)
        model.train()
        return y_tilde, y_hat


def make_algorithm(variant: str) -> Any:
    if variant == "supervised":
        return Supervised()
    if variant == "mixup":
        return Mixup(eps_scale=EPS_SCALE, mixup_gamma=1.0)
    if variant == "reference":
        return ReferenceMetaMixup(eps_scale=EPS_SCALE, mixup_gamma=1.0)
    if variant == "metamixup-head":
        return MetaMixup(eps_scale=EPS_SCALE, mixup_gamma=1.0, meta_params="head")
    if variant in ("metamixup", "metamixup-jvp", "metamixup-exact"):
        method = {"metamixup": "fd", "metamixup-jvp": "jvp", "metamixup-exact": "exact"}[variant]
        return MetaMixup(eps_scale=EPS_SCALE, meta_method=method, mixup_gamma=1.0, meta_fused=True)
    if variant in ALGORITHMS:                                  # any registered algorithm with its defaults
        return ALGORITHMS[variant].from_config(Config(algorithm=variant))
    raise UserError(f"unknown variant {variant!r}; choose from: {', '.join([*VARIANTS, *sorted(ALGORITHMS)])}")


def make_step(variant: str, model_name: str, batch: int, device: torch.device, channels_last: bool,
              seed: int = 0, amp: bool = False) -> Callable[[], None]:
    """A closure running one full training step of `variant`: the trainer's own `train_step`."""
    torch.manual_seed(seed)
    c, s = natural_shape(model_name)
    model = build_model(model_name, 10, c, s).to(device)
    fmt = torch.channels_last if channels_last and model_name != "mlp" else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4)
    algo = make_algorithm(variant)
    x_lb = torch.randn(batch, c, s, s, device=device).contiguous(memory_format=fmt)
    views = algo.views if algo.uses_unlabeled else ()
    x_ulb = [torch.randn(batch, c, s, s, device=device).contiguous(memory_format=fmt) for _ in views]
    idx_ulb = torch.arange(batch, device=device)                  # positions in a pool of `batch` (FlexMatch)
    data = Batch(x_lb, torch.randint(0, 10, (batch,), device=device), x_ulb, idx_ulb=idx_ulb)
    ctx = StepContext(100, 0.05, 0.05, 1.0, 10, num_unlabeled=batch)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    def step() -> None:
        train_step(model, opt, algo, data, ctx, autocast=autocast)

    return step


def step_flops(variant: str, model: str, batch: int, device: torch.device, channels_last: bool) -> int:
    """FLOPs of one full step (forwards, backward; matmuls and convolutions), counted by torch's FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    step = make_step(variant, model, batch, device, channels_last)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_variants(variants: list[str], model: str, batch: int, device: torch.device, repeat: int,
                  channels_last: bool, warmup: int = 2, amp: bool = False) -> dict[str, list[float]]:
    """Seconds per step for each variant, measured round-robin."""
    steps = {v: make_step(v, model, batch, device, channels_last, amp=amp) for v in variants}
    for v in variants:
        for _ in range(warmup):
            steps[v]()
    sync(device)
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(repeat):
        for v in variants:
            t = time.perf_counter()
            steps[v]()
            sync(device)
            times[v].append(time.perf_counter() - t)
    return times


def rss_kib(field: str) -> int:
    """VmRSS (current) or VmHWM (peak since the last clear_refs) of this process, in KiB (Linux)."""
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory_mb(variant: str, model: str, batch: int, device: torch.device, channels_last: bool) -> float:
    """The step's own peak memory: CUDA max allocated above resting; CPU peak-RSS growth in a subprocess."""
    if device.type == "cuda":
        step = make_step(variant, model, batch, device, channels_last)
        step()
        torch.cuda.synchronize()
        rest = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - rest) / 2**20
    # RSS after set-up, then the high-water mark (reset via clear_refs) over the first 3 steps
    code = ("import torch;from metassl.experiments.step import make_step, rss_kib;"
            f"s=make_step({variant!r},{model!r},{batch},torch.device('cpu'),{channels_last});"
            "open('/proc/self/clear_refs','w').write('5');r0=rss_kib('VmRSS');"
            "[s() for _ in range(3)];print(rss_kib('VmHWM')-r0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1]) / 1024   # KiB -> MiB


def bench_step(model: str = "cnn", batch: int = 64, device: str = "cpu", repeat: int = 10,
               variants: list[str] | None = None, *, channels_last: bool = True, memory: bool = True,
               amp: bool = False) -> dict[str, Any]:
    """Time every variant and return {variant: {ms_per_step, spread_ms, images_per_second, ratio_to_mixup,
    peak_memory_mb}} plus the settings."""
    dev = resolve_device(device)
    variants = list(variants or VARIANTS)
    if "mixup" not in variants:
        variants.insert(0, "mixup")
    times = time_variants(variants, model, batch, dev, repeat, channels_last, amp=amp)
    med = {v: statistics.median(t) for v, t in times.items()}
    out: dict[str, Any] = {"model": model, "batch": f"{batch}+{batch}", "device": str(dev), "repeat": repeat,
                           "channels_last": channels_last, "amp_bf16": amp, "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "variants": {}}
    for v, t in times.items():
        q = statistics.quantiles(t, n=4) if len(t) >= 2 else [t[0], t[0], t[0]]
        imgs = batch if v in ("supervised", "fully-supervised") else 2 * batch
        flops = step_flops(v, model, batch, dev, channels_last)
        out["variants"][v] = {"ms_per_step": 1000 * med[v], "spread_ms": [1000 * q[0], 1000 * q[2]],
                              "gflop_per_step": flops / 1e9, "gflop_per_second": flops / 1e9 / med[v],
                              "images_per_second": imgs / med[v], "ratio_to_mixup": med[v] / med["mixup"],
                              "peak_memory_mb": peak_memory_mb(v, model, batch, dev, channels_last) if memory else None}
    return out


def format_table(res: dict[str, Any]) -> str:
    lines = [f"{res['model']}, batch {res['batch']}, {res['device']}, {res['threads']} threads, torch {res['torch']}, "
             f"channels_last={res['channels_last']}, median of {res['repeat']} interleaved steps",
             "| variant | ms/step (p25-p75) | images/s | x mixup | GFLOP/step | GFLOP/s | peak MB |",
             "|---|---|---|---|---|---|---|"]
    for v, r in res["variants"].items():
        mem = "-" if r["peak_memory_mb"] is None else f"{r['peak_memory_mb']:.0f}"
        lines.append(f"| {v} | {r['ms_per_step']:.1f} ({r['spread_ms'][0]:.1f}-{r['spread_ms'][1]:.1f}) | "
                     f"{r['images_per_second']:.0f} | {r['ratio_to_mixup']:.2f} | {r['gflop_per_step']:.2f} | "
                     f"{r['gflop_per_second']:.0f} | {mem} |")
    return "\n".join(lines)
