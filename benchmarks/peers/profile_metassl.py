"""Where metassl's FixMatch iteration goes (matched protocol, CPU): sampling, augmentation, the step's
compute kernels, and everything else. Wraps metassl's functions from outside (src/ is not touched).

    .venv/bin/python benchmarks/peers/profile_metassl.py --iterations 60 --profile-from 30 --out /tmp/prof.json

Per iteration (mean over iterations >= --profile-from, after warm-up; the top ops by input shape, i.e. by
layer, too; wall time and minor page faults also over iterations [--profile-from/2, --profile-from), where
the profiler is off; `--plain-malloc` turns off the trainer's `keep_freed_memory()`):
- sampling: `batch_indices` (which images), views: `DeviceData.view` (augment + normalise, 3 per iteration),
  step: `train_step` (forward, losses, backward, SGD), rest: the loop's other work (ctx, logging, checks);
- inside the step, torch.profiler's self CPU time split into the dense kernels (convolution, BatchNorm,
  matmul and their backward) and all other ops; the step's wall minus all op time is Python/dispatch.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MATCHED  # noqa: E402

DENSE = ("convolution", "conv2d", "mkldnn", "batch_norm", "addmm", "mm", "linear", "bmm")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--algorithm", default="fixmatch")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--profile-from", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--src")
    ap.add_argument("--plain-malloc", action="store_true",
                    help="skip the trainer's keep_freed_memory() (glibc's defaults), to measure what it saves")
    ap.add_argument("--amp", action="store_true", help="amp=true: bf16 autocast where the CPU has bf16 units")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    if a.src:
        sys.path.insert(0, a.src)
    import metassl.data.resident as R
    import metassl.train as T
    from metassl.algorithms import build_config

    m, N = MATCHED, a.iterations
    cfg = build_config("fmnist-1000", None, [
        f"algorithm={a.algorithm}", f"iterations={N}", f"threads={a.threads}", "device=cpu", f"eval_every={N}",
        f"checkpoint_every={N}", "log_every=50", f"lr={m['lr']}", f"weight_decay={m['weight_decay']}",
        "lr_schedule=constant", "warmup=0", "consistency_rampup=0", "labeled_warmup=0", "unlabeled_batch_size=64",
        f"amp={str(a.amp).lower()}"])

    it = {"n": 0}
    acc: dict[str, float] = defaultdict(float)

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if it["n"] >= a.profile_from:
                    acc[name] += time.perf_counter() - t
        return wrapper

    if a.plain_malloc:
        T.keep_freed_memory = lambda: False
    R.batch_indices = timed("sampling", R.batch_indices)
    R.DeviceData.view = timed("views", R.DeviceData.view)
    prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
    step = T.train_step

    def train_step(*args, **kwargs):
        if it["n"] == a.profile_from // 2:     # the unprofiled window: the profiler allocates (and faults) itself
            acc["faults_start"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            acc["plain_start"] = time.perf_counter()
        if it["n"] == a.profile_from:
            acc["faults_end"] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            acc["plain_end"] = time.perf_counter()
            prof.__enter__()
            acc["loop_start"] = time.perf_counter()
        t = time.perf_counter()
        out = step(*args, **kwargs)
        if it["n"] >= a.profile_from:
            acc["step"] += time.perf_counter() - t
        it["n"] += 1
        if it["n"] == N:
            acc["loop_end"] = time.perf_counter()
            prof.__exit__(None, None, None)
        return out
    T.train_step = train_step

    run_dir = Path(a.out).with_suffix("")
    T.train(cfg, run_dir, force=True, quiet=True)
    for f in run_dir.glob("*.pt"):
        f.unlink()

    n = N - a.profile_from
    dense = other = 0.0
    ops = []
    for e in prof.key_averages():
        if e.key.startswith("ProfilerStep") or e.key.startswith("## "):
            continue
        us = e.self_cpu_time_total
        if any(k in e.key for k in DENSE):
            dense += us
        else:
            other += us
        ops.append((us, e.key, e.count))
    ops.sort(reverse=True)
    shaped = sorted(((e.self_cpu_time_total, e.key, str(e.input_shapes), e.count)
                     for e in prof.key_averages(group_by_input_shape=True) if not e.key.startswith(("Profiler", "## "))),
                    reverse=True)
    per = lambda x: x / n * 1e3  # noqa: E731  (seconds total -> ms per iteration)
    rec = {
        "algorithm": a.algorithm, "amp": a.amp, "iterations_profiled": n, "threads": torch.get_num_threads(),
        "ms_per_iteration_loop": (acc["loop_end"] - acc["loop_start"]) / n * 1e3,
        "ms_sampling": per(acc["sampling"]), "ms_views": per(acc["views"]), "ms_step": per(acc["step"]),
        "ms_step_dense_kernels_selfcpu": dense / n / 1e3, "ms_step_other_ops_selfcpu": other / n / 1e3,
        "unprofiled_iterations": (u := a.profile_from - a.profile_from // 2),
        "ms_per_iteration_unprofiled": (acc["plain_end"] - acc["plain_start"]) / u * 1e3,
        "minor_page_faults_per_it_unprofiled": (acc["faults_end"] - acc["faults_start"]) / u,
        "keep_freed_memory": not a.plain_malloc,
        "top_ops_ms_per_it": [(k, round(us / n / 1e3, 3), c // n) for us, k, c in ops[:25]],
        "top_ops_by_shape_ms_per_it": [(k, shape, round(us / n / 1e3, 3), c // n) for us, k, shape, c in shaped[:30]],
        "note": "op self-CPU times include the views' ops (they run inside the profiled window too)",
    }
    Path(a.out).write_text(json.dumps(rec, indent=1))
    print(json.dumps({k: v for k, v in rec.items() if not k.startswith("top_ops")}, indent=1))
    for k, ms, c in rec["top_ops_ms_per_it"]:
        print(f"{ms:8.3f} ms  x{c:<4} {k}")


if __name__ == "__main__":
    main()
