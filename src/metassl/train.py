"""The one trainer: the loop, SGD and schedules, EMA, evaluation, checkpoints, logs, torchrun.
Algorithms only define their step (algorithms/base.py); data sources hand over batches (data/).

    metassl train --preset fmnist-1000 iterations=200 device=cpu
    torchrun --nproc-per-node 2 -m metassl train --preset fmnist-1000 device=cpu --out runs/ddp
    python -c "from metassl.train import train; from metassl.config import build_config; \
               train(build_config('fmnist-1000', overrides=['iterations=100']), 'runs/demo')"
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
import signal
import statistics
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import checkpoint, distributed
from .algorithms import Algorithm, StepContext, build_algorithm
from .algorithms.meta_gradient import eval_mode
from .config import Config, load_saved, parse_steps, to_dict
from .data import ImageData, labeled_split, load_dataset
from .data.augment import normalize, to_float
from .data.resident import DeviceData, prepare_data
from .errors import Interrupted, UserError
from .files import atomic_write_text
from .log import Logger, pseudo_label_quality
from .models import build_model
from .safety import DivergenceWatch, check_run_dir, current_stop, nonfinite_weights, open_run_dir, stoppable


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present (cuda:LOCAL_RANK under torchrun); CUDA without CUDA is a one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


# --- schedules: pure functions of the iteration (0-based) -----------------------------------------------
def lr_at(it: int, cfg: Config) -> float:
    """Linear warm-up to cfg.lr, then cosine to 0, step decay, or constant. The warm-up and the decay see
    t = it + 1 (lr_origin=one) or t = it (zero: the authors', lr 0 at the first step, decay after a milestone)."""
    t = it + 1 if cfg.lr_origin == "one" else it
    if it < cfg.warmup:
        return cfg.lr * t / cfg.warmup
    if cfg.lr_schedule == "cosine":
        progress = (it - cfg.warmup) / max(1, cfg.iterations - cfg.warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_decay ** sum(t > s for s in parse_steps(cfg.lr_steps))
    return cfg.lr


def beta_at(it: int, cfg: Config) -> float:
    """Meta learning rate: beta * lr_t (authors, beta=1), a constant, or beta on the lr's shape."""
    if cfg.beta_schedule == "constant":
        return cfg.beta
    return cfg.beta * lr_at(it, cfg) / (cfg.lr if cfg.beta_schedule == "cosine" else 1.0)


def consistency_weight_at(it: int, cfg: Config) -> float:
    """w(t): linear ramp from 0 to consistency_weight over consistency_rampup iterations."""
    if cfg.consistency_rampup == 0:
        return cfg.consistency_weight
    return cfg.consistency_weight * min(1.0, it / cfg.consistency_rampup)


# --- evaluation and EMA ----------------------------------------------------------------------------------
@torch.no_grad()
def predict_logits(model: nn.Module, x_u8: Tensor, mean: Tensor, std: Tensor, batch_size: int) -> Tensor:
    """Eval-mode logits (N, K) for uint8 images (float inputs are used as is), in chunks."""
    with eval_mode(model):
        return torch.cat([model(normalize(x_u8[i:i + batch_size], mean, std)).float()
                          for i in range(0, len(x_u8), batch_size)])


def error_percent(model: nn.Module, x_u8: Tensor, y: Tensor, mean: Tensor, std: Tensor, batch_size: int) -> float:
    """Top-1 error in percent."""
    pred = predict_logits(model, x_u8, mean, std, batch_size).argmax(1)
    return 100.0 * (pred != y).float().mean().item()


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_data(cfg: Config, algo: Algorithm, data: ImageData | None, device: torch.device) -> Any:
    """The data source: resident on the device (default) or streamed from an image folder (stream=true)."""
    num_labels = -1 if getattr(algo, "all_labels", False) else cfg.num_labels
    if cfg.stream:
        from .data.streaming import StreamingData
        if cfg.dataset != "folder" or not cfg.data_dir:
            raise UserError("stream=true reads image folders: set dataset=folder data_dir=PATH (train/ and val/ inside)")
        return StreamingData(cfg.data_dir, cfg.image_size or 224, num_labels, cfg.split_seed, cfg.labels_file,
                             cfg.include_labeled_in_unlabeled, device, cfg.workers, cfg.channels_last)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir or None, cfg.image_size or None)
    split = labeled_split(data.y_train, num_labels, data.num_classes, cfg.split_seed, cfg.num_val,
                          cfg.include_labeled_in_unlabeled)
    return prepare_data(data, split, device, cfg.flip, cfg.translate, cfg.channels_last, cfg.pad_mode)


def error_on(model: nn.Module, dd: Any, split: str, cfg: Config, d: distributed.Dist) -> float:
    """Top-1 error (%) on 'test' or 'val', each rank a shard, counts summed over ranks."""
    counts = distributed.sum_all(dd.error_counts(model, split, cfg.eval_batch_size, d.rank, d.world), d)
    return 100.0 * (counts[0] / counts[1].clamp_min(1)).item()


@stoppable
def train(cfg: Config, run_dir: str | Path, *, model: nn.Module | None = None, data: ImageData | None = None,
          resume: bool = False, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (or resume it) and return the results dict written to results.json.

    `model` may be any nn.Module mapping (N, C, H, W) floats to (N, K) logits; `data` any ImageData.
    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 alone writes.
    """
    run_dir = Path(run_dir)
    stop = current_stop()
    if resume:
        check_run_dir(run_dir, resume, force)
        cfg = load_saved(run_dir / "config.json").resolved()
    d = distributed.setup(cfg.device)
    if d.main:
        check_run_dir(run_dir, resume, force)  # created only below, once config, data and split are valid
    if cfg.batch_size % d.world or cfg.unlabeled_batch_size % d.world:
        raise UserError(f"batch_size={cfg.batch_size} and unlabeled_batch_size={cfg.unlabeled_batch_size} are global "
                        f"and must divide by the {d.world} processes")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, d.local_rank)
    algo: Algorithm = build_algorithm(cfg)
    dd = build_data(cfg, algo, data, device)

    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg.model, len(dd.classes), dd.shape[0], dd.shape[1])
    if cfg.sync_bn and d.world > 1:
        model = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if device.type == "cuda"
                 else distributed.convert_sync_batchnorm(model))
    model = model.to(device)
    if cfg.channels_last and device.type in ("cpu", "cuda"):
        model = model.to(memory_format=torch.channels_last)
    distributed.broadcast_state(model, d)
    if d.rank > 0:
        torch.manual_seed(cfg.seed * 7919 + d.rank)   # each process its own augmentation/dropout draws
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema > 0 else None
    # weight decay on every parameter (BN affine and biases included), as the authors' released code does
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    if algo.uses_unlabeled and not len(dd.unlabeled):
        raise UserError(f"algorithm={cfg.algorithm} needs unlabeled images but the split leaves none; "
                        "lower num_labels or set include_labeled_in_unlabeled=true")
    stop.armed = True                          # from here on SIGINT/SIGTERM stop with a checkpoint
    if not resume and d.main:
        open_run_dir(run_dir, resume, force)
        atomic_write_text(run_dir / "config.json", json.dumps(to_dict(cfg), indent=1))
        atomic_write_text(run_dir / "split.json", json.dumps(dd.split.to_dict()))

    start, history, elapsed, train_time = 0, [], 0.0, 0.0
    logger = Logger(run_dir, cfg.iterations, quiet, enabled=d.main)
    if resume and checkpoint.exists(run_dir):  # a run killed before its first checkpoint starts over
        state = checkpoint.load(run_dir)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        algo.load_state_dict(state["algorithm"])
        rngs = state["rng"]
        if len(rngs) != d.world:
            raise UserError(f"{run_dir} was checkpointed by {len(rngs)} process(es); resume it with the same number "
                            f"(now {d.world}) for an exact continuation")
        _set_rng_state(rngs[d.rank])
        start, history = int(state["iteration"]), list(state["history"])
        elapsed, train_time = float(state["elapsed"]), float(state["train_time"])
    if resume:
        logger.truncate_after(start)

    amp = cfg.amp and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    images_per_it = cfg.batch_size + (cfg.unlabeled_batch_size if algo.uses_unlabeled else 0)
    eval_model = ema if ema is not None else model
    reduce = (lambda g: distributed.average_dict(g, d)) if d.world > 1 and cfg.meta_scope == "global" else None
    t0, t_seg, it_seg = time.perf_counter(), time.perf_counter(), start
    latest_err = history[-1]["test_error"] if history else None
    watch, last_saved = DivergenceWatch(), (start if resume and start else None)

    def guard(n: int) -> None:
        """NaN/Inf in a loss, the pseudo-labels or the weights: stop before iteration n is logged, evaluated or
        saved, so the newest checkpoint on disk stays the last good one."""
        found = watch.check()
        if found is None:
            bad = nonfinite_weights(model, ema)
            if not bad:
                return
            found = (n, [f"the model weights ({bad[0]}{', ...' if len(bad) > 1 else ''})"])
        first, terms = found
        kept = (f"the last good checkpoint (iteration {last_saved}) is kept in {run_dir}" if last_saved is not None
                else f"no checkpoint was written to {run_dir}")
        raise UserError(f"training diverged {'by' if terms[0].startswith('the model') else 'at'} iteration {first}: "
                        f"{', '.join(terms)} {'is' if len(terms) == 1 else 'are'} NaN/Inf; stopped at iteration {n} "
                        f"and {kept}; try a smaller lr or beta")

    def save(it: int) -> None:
        nonlocal last_saved
        last_saved = it
        rngs = distributed.gather_objects(_rng_state(), d)     # every rank's RNG, for an exact resume
        if not d.main:
            return
        checkpoint.save({"iteration": it, "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "ema": ema.state_dict() if ema is not None else {}, "algorithm": algo.state_dict(),
                         "rng": rngs, "history": history, "config": to_dict(cfg),
                         "classes": dd.classes, "shape": list(dd.shape), "mean": dd.mean.cpu(), "std": dd.std.cpu(),
                         "elapsed": elapsed + time.perf_counter() - t0, "train_time": train_time}, run_dir)

    batches = dd.batches(start, cfg.iterations, algo.views if algo.uses_unlabeled else (), cfg.batch_size,
                         cfg.unlabeled_batch_size, cfg.seed, d.rank, d.world)
    for it in range(start, cfg.iterations):
        t_step = time.perf_counter()
        lr = lr_at(it, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        ctx = StepContext(it, lr, beta_at(it, cfg), consistency_weight_at(it, cfg), len(dd.classes), reduce)
        batch = next(batches)
        model.train()
        with autocast:
            loss, metrics = algo.step(model, batch, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.average_gradients(model, d)          # the gradient of the global-batch loss
        opt.step()
        if d.world > 1 and not cfg.sync_bn:
            distributed.broadcast_buffers(model, d)        # one set of BN statistics, as DDP keeps
        algo.after_update(model)
        if ema is not None:
            ema_update(ema, model, cfg.ema)
        n = it + 1
        pseudo = getattr(algo, "last_pseudo_labels", None)
        watch.update(n, {"loss": loss.detach(), **metrics,
                         **({"pseudo_labels_plain": pseudo[0], "pseudo_labels": pseudo[1]} if pseudo else {})})
        if device.type == "cuda" and (n % cfg.log_every == 0 or n % cfg.eval_every == 0):
            torch.cuda.synchronize()
        train_time += time.perf_counter() - t_step

        if n == cfg.iterations or not (n % cfg.log_every and n % cfg.eval_every):
            guard(n)                           # NaN/Inf: stop before this iteration is logged or evaluated
        if n % cfg.log_every == 0 or n == cfg.iterations:
            if pseudo is not None and batch.y_ulb is not None and bool((batch.y_ulb >= 0).any()):
                metrics = {**metrics, **pseudo_label_quality(*pseudo, batch.y_ulb)}
            values = {k: v.item() for k, v in metrics.items()}   # host syncs only on logging steps
            logger.write({"iteration": n, "kind": "train", "lr": lr, "beta": ctx.beta,
                          "consistency_weight": ctx.consistency_weight, **values})
            rate = (n - it_seg) / max(1e-9, time.perf_counter() - t_seg)
            logger.progress(n, rate, values, latest_err)
        if n % cfg.eval_every == 0 or n == cfg.iterations:
            record = {"iteration": n, "kind": "eval", "test_error": error_on(eval_model, dd, "test", cfg, d)}
            if len(dd.val):
                record["val_error"] = error_on(eval_model, dd, "val", cfg, d)
            history.append(record)
            latest_err = record["test_error"]
            logger.write(record)
        stopping = stop.signum is not None
        if d.world > 1:   # every process must stop at the same iteration: agree on logging steps only (one sync)
            stopping = n % cfg.log_every == 0 and bool(distributed.sum_all(torch.tensor(float(stopping), device=device), d) > 0)
        if n % cfg.checkpoint_every == 0 or n == cfg.iterations or stopping:
            guard(n)                           # never write a NaN checkpoint over the last good one
            save(n)
        if stopping and n < cfg.iterations:
            logger.close()
            raise Interrupted(f"stopped by {signal.Signals(stop.signum or signal.SIGTERM).name} after iteration {n}/{cfg.iterations}; "
                              f"checkpoint saved; continue with: metassl train --resume {run_dir}", 128 + (stop.signum or signal.SIGTERM))
    logger.close()

    errors = [h["test_error"] for h in history]
    results = {
        "test_error": errors[-1],
        "test_error_median_last5": statistics.median(errors[-5:]),
        "val_error": history[-1].get("val_error"),
        "iterations": cfg.iterations,
        "wall_seconds": round(elapsed + time.perf_counter() - t0, 2),
        "train_seconds": round(train_time, 2),
        "images_per_second": round(images_per_it * cfg.iterations / max(train_time, 1e-9), 1),
        "evaluated": "ema" if ema is not None else "raw",
        "algorithm": cfg.algorithm, "model": cfg.model, "dataset": cfg.dataset, "num_labels": len(dd.labeled),
        "seed": cfg.seed, "split_seed": cfg.split_seed, "device": str(device), "processes": d.world,
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, {torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
    }
    if d.main:
        atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1))
    return results
