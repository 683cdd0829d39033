"""Images/s of the inference passes, the eval-mode model as it runs in training ("eager") against its folded
inference copy (metassl.models.fold): evaluation of the 10,000 Fashion-MNIST test images, and a label-bank
teacher pass (features + fc + softmax, chunks of 256) over fmnist-1000's unlabeled pool (59,000 images); the
small `cnn`, channels_last, CPU. `-bf16`: the folded copy under bf16 autocast (what amp=true runs on a CPU with
bf16 units), with how many test predictions and pool pseudo-labels it changes. Optionally the folded copy under
torch.compile (inductor).

    nice -n -5 .venv/bin/python benchmarks/inference_speed.py [--repeat 5] [--threads 1 2] [--compile]

Each thread count runs in its own process (OMP_NUM_THREADS and torch.set_num_threads); within a repeat the
variants run one after another (A/B interleaved), the table shows medians. The machine's load (`uptime`) is
recorded before and after. Writes results/speed/inference-<date>.json.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]


def worker(threads: int, repeat: int, compile_too: bool, pool_images: int, chunks: list[int]) -> dict[str, Any]:
    """One process at `threads` threads: {variant: [seconds per repeat]} for the eval and the pool pass."""
    import torch
    import torch.nn.functional as F

    from metassl.algorithms.selftrain import teacher_pass
    from metassl.batch import PoolPasses
    from metassl.data import load_dataset
    from metassl.data.augment import normalize
    from metassl.data.resident import prepare_data
    from metassl.data.split import labeled_split
    from metassl.inference.evaluate import predict_logits
    from metassl.models import build_model, inference_copy
    from metassl.torch_utils import eval_mode, keep_freed_memory, to_nchw

    torch.set_num_threads(threads)
    keep_freed_memory()                                    # as the trainer does on CPU
    torch.manual_seed(0)
    data = load_dataset("fashion-mnist", None, None)
    split = labeled_split(data.y_train, 1000, data.num_classes, 0)
    dev = prepare_data(data, split, torch.device("cpu"), translate=2, channels_last=True)
    x_test = to_nchw(data.x_test)
    model = build_model("cnn", 10, 1, 28).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(20):                                    # BN statistics and weights away from their init
        idx = torch.randint(0, len(dev.labeled), (64,))
        loss = F.cross_entropy(model(dev.view(dev.x_train[dev.labeled[idx]], "none")), dev.y_train[dev.labeled[idx]])
        opt.zero_grad()
        loss.backward()
        opt.step()
    unlabeled = dev.unlabeled[:pool_images] if pool_images else dev.unlabeled
    n_pool = len(unlabeled)

    def pool(bs: int):
        for i in range(0, n_pool, bs):
            pos = torch.arange(i, min(i + bs, n_pool))
            yield pos, dev.view(dev.x_train[unlabeled[pos]], "none"), dev.y_train[unlabeled[pos]]

    passes = PoolPasses(pool, lambda bs, held_out: iter(()), n_pool, False, lambda t: t)

    @torch.no_grad()
    def eager_eval(chunk: int) -> torch.Tensor:            # inference/evaluate.py's pass before folding
        with eval_mode(model):
            return torch.cat([model(normalize(x_test[i:i + chunk], dev.mean, dev.std)).float()
                              for i in range(0, len(x_test), chunk)])

    def folded_eval(chunk: int, fn: Callable | None = None) -> torch.Tensor:   # the copy at a fixed chunk
        f = fn if fn is not None else inference_copy(model)
        with torch.inference_mode():
            return torch.cat([f(normalize(x_test[i:i + chunk], dev.mean, dev.std)).float()
                              for i in range(0, len(x_test), chunk)])

    def bf16(fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return fn()

    @torch.no_grad()
    def eager_pool() -> torch.Tensor:                      # selftrain.teacher_pass before folding (features=True)
        q = torch.zeros(n_pool, 10)
        with eval_mode(model):
            for pos, x, _ in passes.pool(256):
                q[pos] = F.softmax(model.fc(model.features(x)).float(), dim=1)
        return q

    def folded_pool(m: Any = None) -> torch.Tensor:
        return teacher_pass(m if m is not None else inference_copy(model), passes, 256, False, True)[0]

    evals: dict[str, Callable[[], torch.Tensor]] = {
        "eager-1000": lambda: eager_eval(1000),            # today's default eval_batch_size
        "eager-256": lambda: eager_eval(256),
        "folded": lambda: predict_logits(model, x_test, dev.mean, dev.std, 1000),   # evaluation now: chunks of 256
        "folded-bf16": lambda: bf16(lambda: predict_logits(model, x_test, dev.mean, dev.std, 1000)),
        **{f"folded-{c}": (lambda c=c: folded_eval(c)) for c in chunks},
    }
    pools: dict[str, Callable[[], torch.Tensor]] = {"eager": eager_pool, "folded": folded_pool,
                                                     "folded-bf16": lambda: bf16(folded_pool)}
    compile_info: dict[str, Any] = {}
    if compile_too:
        import torch._dynamo
        import torch._inductor.config as inductor_config
        for name, freezing in (("compiled", False), ("compiled-frozen", True)):
            inductor_config.freezing = freezing
            torch._dynamo.reset()
            t0 = time.perf_counter()
            fc = torch.compile(inference_copy(model))
            try:
                z = folded_eval(256, fc)                   # compiles both chunk shapes (256 and the last 16)
            except Exception as e:                         # inductor's own failures are a result too
                compile_info[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"}
                continue
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            fc2 = torch.compile(inference_copy(model))     # a new copy, as every evaluation makes
            folded_eval(256, fc2)
            again = time.perf_counter() - t0
            ref = eager_eval(256)
            compile_info[name] = {"compile_s": round(first, 2), "new_copy_first_pass_s": round(again, 2),
                                  "max_abs_diff": (z - ref).abs().max().item(), "logit_scale": ref.abs().max().item()}
            evals[name] = lambda fc=fc: folded_eval(256, fc)
        inductor_config.freezing = False
    with torch.no_grad():
        ref_e, ref_p = eager_eval(1000), eager_pool()
    exact = {"eval_max_abs_diff": (evals["folded"]() - ref_e).abs().max().item(), "eval_logit_scale": ref_e.abs().max().item(),
             "pool_max_abs_diff": (folded_pool() - ref_p).abs().max().item()}
    e16, p16 = evals["folded-bf16"]().float(), pools["folded-bf16"]()
    exact["bf16_test_predictions_changed"] = int((e16.argmax(1) != ref_e.argmax(1)).sum())
    exact["bf16_pool_pseudo_labels_changed"] = int((p16.argmax(1) != ref_p.argmax(1)).sum())
    exact["bf16_pool_max_abs_prob_diff"] = (p16 - ref_p).abs().max().item()
    times: dict[str, dict[str, list[float]]] = {"eval": {k: [] for k in evals}, "pool": {k: [] for k in pools}}
    for _ in range(repeat):
        for group, fns in (("eval", evals), ("pool", pools)):
            for k, fn in fns.items():
                t0 = time.perf_counter()
                fn()
                times[group][k].append(time.perf_counter() - t0)
    return {"threads": threads, "images": {"eval": len(x_test), "pool": n_pool}, "seconds": times,
            "exactness": exact, "compile": compile_info}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), platform.processor())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--compile", action="store_true", help="also time torch.compile of the folded copy")
    ap.add_argument("--pool-images", type=int, default=0, help="first N pool images only (0 = the whole pool)")
    ap.add_argument("--chunks", type=int, nargs="*", default=[], help="also the folded copy at these chunk sizes "
                    "(evaluation runs chunks of 256; 128, 512 and 1000 were slower, results/speed/inference-2026-12-07.json)")
    ap.add_argument("--out", help="JSON to write (default results/speed/inference-<date>.json)")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeat, args.compile, args.pool_images, args.chunks)))
        return
    import torch
    record: dict[str, Any] = {"machine": cpu_model(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
                              "torch": torch.__version__, "python": platform.python_version(), "model": "cnn",
                              "repeat": args.repeat, "nice": os.nice(0), "load_before": uptime(), "runs": []}
    for t in args.threads:
        env = {**os.environ, "OMP_NUM_THREADS": str(t), "PYTHONPATH": str(ROOT / "src")}
        cmd = [sys.executable, __file__, "--worker", str(t), "--repeat", str(args.repeat),
               "--pool-images", str(args.pool_images), "--chunks", *map(str, args.chunks)] + (["--compile"] if args.compile else [])
        out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, check=True).stdout
        run = json.loads(out.strip().splitlines()[-1])
        run["images_per_s"] = {g: {k: round(run["images"][g] / statistics.median(v)) for k, v in d.items()}
                               for g, d in run["seconds"].items()}
        record["runs"].append(run)
    record["load_after"] = uptime()
    print(f"{record['machine']}, torch {record['torch']}, median of {args.repeat} interleaved repeats, images/s")
    print(f"load before: {record['load_before']}\nload after:  {record['load_after']}")
    for run in record["runs"]:
        for g, d in run["images_per_s"].items():
            base = d["eager-1000" if g == "eval" else "eager"]
            print(f"  {run['threads']} thread(s) {g:4s} ({run['images'][g]} images): "
                  + ", ".join(f"{k} {v} ({v / base:.2f}x)" for k, v in d.items()))
        print(f"  exactness: {run['exactness']}" + (f"\n  compile: {run['compile']}" if run["compile"] else ""))
    path = Path(args.out).resolve() if args.out else ROOT / "results" / "speed" / f"inference-{datetime.date.today().isoformat()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
