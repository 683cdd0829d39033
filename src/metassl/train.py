"""The one trainer: data resident on the device, the loop, SGD and schedules, EMA, evaluation,
atomic checkpoints, logs. Algorithms only define their step (see algorithms/base.py).

    metassl train --preset fmnist-1000 iterations=200 device=cpu
    python -c "from metassl.train import train; from metassl.config import build_config; \
               train(build_config('fmnist-1000', overrides=['iterations=100']), 'runs/demo')"
"""
from __future__ import annotations

import copy
import functools
import json
import math
import os
import platform
import signal
import statistics
import sys
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from . import checkpoint
from .algorithms import Algorithm, Batch, StepContext, build_algorithm
from .algorithms.meta_gradient import eval_mode
from .config import Config, load_saved, parse_steps, to_dict
from .data import ImageData, Split, labeled_split, load_dataset
from .data.augment import channel_stats, normalize, strong_augment, to_float, weak_augment
from .errors import Interrupted, UserError
from .models import build_model


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without it is a one-line error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


# --- data ------------------------------------------------------------------------------------------------
@dataclass
class DeviceData:
    """The whole data set as uint8 NCHW tensors on the training device, plus the split."""

    x_train: Tensor           # uint8 (N, C, H, W) (or float, used as is); unlabeled-only images appended last
    y_train: Tensor           # int64 (N,), -1 for unlabeled-only images
    x_test: Tensor
    y_test: Tensor
    labeled: Tensor           # int64 indices into x_train (CPU)
    unlabeled: Tensor
    val: Tensor
    mean: Tensor              # (C,) float32 on the device, on the 0..1 scale
    std: Tensor
    flip: bool
    translate: int
    classes: list[str]

    @property
    def shape(self) -> tuple[int, int]:
        """(in_channels, image_size)."""
        return self.x_train.shape[1], self.x_train.shape[2]

    def view(self, x_u8: Tensor, kind: str) -> Tensor:
        """One augmented, normalised view of a batch: 'weak' (translate+flip), 'strong' or 'none'. uint8 images
        are mapped to [0, 1]; float inputs (tabular features as (N, D, 1, 1), see estimator.py) are used as is."""
        x = to_float(x_u8) if x_u8.dtype == torch.uint8 else x_u8
        if kind == "weak":
            x = weak_augment(x, self.translate, self.flip)
        elif kind == "strong":
            x = strong_augment(x, self.translate, self.flip)
        return normalize(x, self.mean, self.std)

    def batch(self, idx_lb: Tensor, idx_ulb: Tensor | None, views: tuple[str, ...]) -> Batch:
        dev = self.x_train.device
        idx_lb = idx_lb.to(dev, non_blocking=True)
        x_ulb, y_ulb = [], None
        if idx_ulb is not None and views:
            idx_ulb = idx_ulb.to(dev, non_blocking=True)
            raw = self.x_train[idx_ulb]
            x_ulb = [self.view(raw, v) for v in views]
            y_ulb = self.y_train[idx_ulb]
        return Batch(self.view(self.x_train[idx_lb], "weak"), self.y_train[idx_lb], x_ulb, y_ulb)


def _nchw(x: np.ndarray, device: torch.device) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device)


def prepare_data(cfg: Config, data: ImageData, split: Split, device: torch.device) -> DeviceData:
    """Move images to the device once (small data sets stay resident); statistics from the training set."""
    x_train, y_train = data.x_train, data.y_train.astype(np.int64)
    unlabeled = split.unlabeled
    if data.x_unlabeled is not None and len(data.x_unlabeled):
        extra = np.arange(len(x_train), len(x_train) + len(data.x_unlabeled))
        x_train = np.concatenate([x_train, data.x_unlabeled])
        y_train = np.concatenate([y_train, -np.ones(len(data.x_unlabeled), np.int64)])
        unlabeled = np.concatenate([unlabeled, extra])
    xt = _nchw(x_train, device)
    mean, std = channel_stats(xt)
    flip = data.flip if cfg.flip == "auto" else cfg.flip == "true"
    return DeviceData(xt, torch.from_numpy(y_train).to(device), _nchw(data.x_test, device),
                      torch.from_numpy(data.y_test.astype(np.int64)).to(device),
                      torch.from_numpy(split.labeled), torch.from_numpy(unlabeled), torch.from_numpy(split.val),
                      mean.to(device), std.to(device), flip, cfg.translate, list(data.classes))


class Sampler:
    """Endless random batches from an index set: shuffled passes, the position saved for exact resume."""

    def __init__(self, indices: Tensor, batch_size: int, seed: int) -> None:
        self.indices, self.batch_size = indices, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.empty(0, dtype=torch.long), 0

    def next(self) -> Tensor:
        out = []
        need = self.batch_size
        while need > 0:
            if self.pos >= len(self.perm):
                self.perm = self.indices[torch.randperm(len(self.indices), generator=self.gen)]
                self.pos = 0
            take = self.perm[self.pos:self.pos + need]
            self.pos += len(take)
            need -= len(take)
            out.append(take)
        return torch.cat(out)

    def state_dict(self) -> dict[str, Any]:
        return {"gen": self.gen.get_state(), "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.gen.set_state(s["gen"])
        self.perm, self.pos = s["perm"], int(s["pos"])


# --- schedules: pure functions of the iteration (0-based) -----------------------------------------------
def lr_at(it: int, cfg: Config) -> float:
    """Linear warm-up to cfg.lr, then cosine to 0, step decay, or constant."""
    if it < cfg.warmup:
        return cfg.lr * (it + 1) / cfg.warmup
    if cfg.lr_schedule == "cosine":
        progress = (it - cfg.warmup) / max(1, cfg.iterations - cfg.warmup)
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.lr_schedule == "step":
        return cfg.lr * cfg.lr_decay ** sum(it >= s for s in parse_steps(cfg.lr_steps))
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


def pseudo_label_quality(y_tilde: Tensor, y_hat: Tensor, y_true: Tensor) -> dict[str, Tensor]:
    """Diagnostics only (benchmarks know the unlabeled labels): accuracy and calibration error (ECE,
    15 bins) of the plain and corrected pseudo-labels, and how often the correction flips the argmax
    and whether for the better. Rows with unknown labels (-1) are ignored."""
    known = y_true >= 0
    y_tilde, y_hat, y_true = y_tilde[known], y_hat[known], y_true[known]
    out: dict[str, Tensor] = {}
    for name, p in (("plain", y_tilde), ("corrected", y_hat)):
        conf, pred = p.max(1)
        correct = (pred == y_true).float()
        bins = (conf * 15).long().clamp(max=14)
        gap = torch.zeros(15, device=p.device).index_add_(0, bins, conf - correct).abs().sum() / max(1, len(p))
        out[f"pl_acc_{name}"], out[f"pl_ece_{name}"] = correct.mean(), gap
    changed = y_tilde.argmax(1) != y_hat.argmax(1)
    out["pl_changed"] = changed.float().mean()
    out["pl_changed_better"] = (changed & (y_hat.argmax(1) == y_true)).float().mean()
    out["pl_changed_worse"] = (changed & (y_tilde.argmax(1) == y_true)).float().mean()
    return out


# --- logging ---------------------------------------------------------------------------------------------
class Logger:
    """metrics.jsonl (always), TensorBoard events (when tensorboard is installed), a progress line."""

    def __init__(self, run_dir: Path, total: int, quiet: bool) -> None:
        self.path, self.total, self.quiet = run_dir / "metrics.jsonl", total, quiet
        self.tty = sys.stderr.isatty()
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tb"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            pass

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop records written after the checkpoint being resumed from."""
        if self.path.exists():
            keep = [l for l in self.path.read_text().splitlines() if l and json.loads(l)["iteration"] <= iteration]
            checkpoint.atomic_write_text(self.path, "".join(l + "\n" for l in keep))

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("iteration", "kind") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["iteration"])

    def progress(self, it: int, rate: float, losses: dict[str, float], err: float | None) -> None:
        if self.quiet:
            return
        width = 24
        done = int(width * it / self.total)
        bar = "#" * done + "." * (width - done)
        parts = " ".join(f"{k}={v:.4f}" for k, v in losses.items() if k.startswith("loss"))
        line = f"[{bar}] {it}/{self.total} {rate:.1f} it/s {parts}" + (f" test_err={err:.2f}%" if err is not None else "")
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr)
        if self.tb is not None:
            self.tb.close()


# --- the run ---------------------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class DivergenceWatch:
    """NaN/Inf in a loss term or in the pseudo-labels, tracked on the device with no host sync per step: it
    keeps the first iteration at which a watched term stopped being finite, and which terms those were.
    `check` syncs once (the trainer calls it on logging, evaluation and checkpoint steps)."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.first: Tensor | None = None   # 0-dim int64: first bad iteration (1-based), -1 while all finite
        self.flags: Tensor | None = None   # bool (len(names),): which terms were not finite then

    def update(self, n: int, terms: dict[str, Tensor]) -> None:
        terms = {k: v.detach() for k, v in terms.items() if isinstance(v, Tensor) and v.is_floating_point()}
        if not terms:
            return
        # one fused norm per term: NaN/Inf anywhere in a term makes its norm NaN/Inf (~0.1 ms a step on CPU)
        finite = torch.isfinite(torch.stack(torch._foreach_norm(list(terms.values()))))
        if tuple(terms) != self.names:          # the first step, or an algorithm whose terms vary
            if self.check() is not None:
                return                          # keep the first divergence
            self.names = tuple(terms)
            self.first = torch.full((), -1, dtype=torch.long, device=finite.device)
            self.flags = torch.zeros_like(finite)
        newly = (self.first < 0) & ~finite.all()
        self.first = self.first.masked_fill(newly, n)
        self.flags = torch.where(newly, ~finite, self.flags)

    def check(self) -> tuple[int, list[str]] | None:
        """(first bad iteration, the terms that were NaN/Inf there), or None while everything is finite."""
        if self.first is None or int(self.first) < 0:
            return None
        return int(self.first), [k for k, bad in zip(self.names, self.flags.tolist()) if bad]


def nonfinite_weights(*modules: nn.Module | None) -> list[str]:
    """Names of floating-point parameters/buffers holding NaN or Inf (one host sync)."""
    named = [(k, v) for m in modules if m is not None for k, v in m.state_dict().items() if v.is_floating_point()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(v).all() for _, v in named]).tolist()
    return [k for (k, _), good in zip(named, ok) if not good]


class StopSignals:
    """SIGINT/SIGTERM during training: finish the current iteration, write a checkpoint, stop with
    `Interrupted` (exit status 128 + signal). Before the run is armed (its directory not yet written) or on
    a second signal it stops at once: nothing half-written is left either way, checkpoints being atomic.
    Installed only from the main thread; the previous handlers are restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.armed and self.signum is None:
            self.signum = signum                # the loop checks it after each iteration
            return
        why = ("(a second signal): stopped at once, the newest checkpoint on disk is kept" if self.signum is not None
               else "before the run started; nothing was written")
        raise Interrupted(f"interrupted by {name} {why}", 128 + signum)


_STOP: StopSignals | None = None   # the handlers of the train() call in progress (see _stoppable)


def _stoppable(fn):
    """Run `fn` (train) with StopSignals installed and reachable as _STOP; restore everything afterwards."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _STOP
        outer, _STOP = _STOP, StopSignals()
        try:
            with _STOP:
                return fn(*args, **kwargs)
        finally:
            _STOP = outer
    return wrapper


def check_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Never overwrite a run without --resume or --force (checks only: creates and deletes nothing)."""
    if resume:
        if not (run_dir / "config.json").exists():
            raise UserError(f"cannot resume: {run_dir} holds no metassl run (no config.json)")
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} is a file; pass another --out")
    if run_dir.exists() and any(run_dir.iterdir()) and not force:
        raise UserError(f"run directory {run_dir} already exists; pass --resume to continue it or --force to overwrite")


def open_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Create (or with --force clear) the run directory; called only once all input has been validated."""
    check_run_dir(run_dir, resume, force)
    if resume:
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        for name in ("last.pt", "prev.pt", "metrics.jsonl", "results.json", "split.json", "config.json"):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


@_stoppable
def train(cfg: Config, run_dir: str | Path, *, model: nn.Module | None = None, data: ImageData | None = None,
          resume: bool = False, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (or resume it) and return the results dict written to results.json.

    `model` may be any nn.Module mapping (N, C, H, W) floats to (N, K) logits; `data` any ImageData.
    """
    run_dir = Path(run_dir)
    stop = _STOP or StopSignals()
    check_run_dir(run_dir, resume, force)      # created only below, once config, data and split are valid
    if resume:
        cfg = load_saved(run_dir / "config.json").resolved()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    algo: Algorithm = build_algorithm(cfg)

    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir or None, cfg.image_size or None)
    num_labels = -1 if getattr(algo, "all_labels", False) else cfg.num_labels
    split = labeled_split(data.y_train, num_labels, data.num_classes, cfg.split_seed, cfg.num_val,
                          cfg.include_labeled_in_unlabeled)
    dd = prepare_data(cfg, data, split, device)

    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg.model, data.num_classes, dd.shape[0], dd.shape[1])
    model = model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema > 0 else None
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.ndim <= 1 else decay).append(p)
    opt = torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                           {"params": no_decay, "weight_decay": 0.0}],
                          lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    lb = Sampler(dd.labeled, cfg.batch_size, cfg.seed)
    ulb = Sampler(dd.unlabeled, cfg.unlabeled_batch_size, cfg.seed + 1) if len(dd.unlabeled) else None
    if algo.uses_unlabeled and ulb is None:
        raise UserError(f"algorithm={cfg.algorithm} needs unlabeled images but the split leaves none; "
                        "lower num_labels or set include_labeled_in_unlabeled=true")
    stop.armed = True                          # from here on SIGINT/SIGTERM stop with a checkpoint
    if not resume:
        open_run_dir(run_dir, resume, force)
        checkpoint.atomic_write_text(run_dir / "config.json", json.dumps(to_dict(cfg), indent=1))
        checkpoint.atomic_write_text(run_dir / "split.json", json.dumps(split.to_dict()))

    start, history, elapsed, train_time = 0, [], 0.0, 0.0
    logger = Logger(run_dir, cfg.iterations, quiet)
    if resume:
        state = checkpoint.load(run_dir)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        algo.load_state_dict(state["algorithm"])
        lb.load_state_dict(state["sampler_lb"])
        if ulb is not None:
            ulb.load_state_dict(state["sampler_ulb"])
        _set_rng_state(state["rng"])
        start, history = int(state["iteration"]), list(state["history"])
        elapsed, train_time = float(state["elapsed"]), float(state["train_time"])
        logger.truncate_after(start)

    amp = cfg.amp and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else nullcontext()
    images_per_it = cfg.batch_size + (cfg.unlabeled_batch_size if algo.uses_unlabeled else 0)
    eval_model = ema if ema is not None else model
    t0, t_seg, it_seg = time.perf_counter(), time.perf_counter(), start
    latest_err = history[-1]["test_error"] if history else None
    watch, last_saved = DivergenceWatch(), (start if resume else None)

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
        checkpoint.save({"iteration": it, "model": model.state_dict(), "optimizer": opt.state_dict(),
                         "ema": ema.state_dict() if ema is not None else {}, "algorithm": algo.state_dict(),
                         "sampler_lb": lb.state_dict(), "sampler_ulb": ulb.state_dict() if ulb else {},
                         "rng": _rng_state(), "history": history, "config": to_dict(cfg),
                         "classes": dd.classes, "shape": list(dd.shape), "mean": dd.mean.cpu(), "std": dd.std.cpu(),
                         "elapsed": elapsed + time.perf_counter() - t0, "train_time": train_time}, run_dir)

    for it in range(start, cfg.iterations):
        t_step = time.perf_counter()
        lr = lr_at(it, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        ctx = StepContext(it, lr, beta_at(it, cfg), consistency_weight_at(it, cfg), len(dd.classes))
        batch = dd.batch(lb.next(), ulb.next() if (ulb is not None and algo.views) else None, algo.views)
        model.train()
        with autocast:
            loss, metrics = algo.step(model, batch, ctx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
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
            record = {"iteration": n, "kind": "eval",
                      "test_error": error_percent(eval_model, dd.x_test, dd.y_test, dd.mean, dd.std, cfg.eval_batch_size)}
            if len(dd.val):
                vi = dd.val.to(device)
                record["val_error"] = error_percent(eval_model, dd.x_train[vi], dd.y_train[vi], dd.mean, dd.std,
                                                    cfg.eval_batch_size)
            history.append(record)
            latest_err = record["test_error"]
            logger.write(record)
        if n % cfg.checkpoint_every == 0 or n == cfg.iterations or stop.signum is not None:
            guard(n)                           # never write a NaN checkpoint over the last good one
            save(n)
        if stop.signum is not None and n < cfg.iterations:
            logger.close()
            raise Interrupted(f"stopped by {signal.Signals(stop.signum).name} after iteration {n}/{cfg.iterations}; "
                              f"checkpoint saved; continue with: metassl train --resume {run_dir}", 128 + stop.signum)
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
        "algorithm": cfg.algorithm, "model": cfg.model, "dataset": cfg.dataset, "num_labels": len(split.labeled),
        "seed": cfg.seed, "split_seed": cfg.split_seed, "device": str(device),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, {torch.get_num_threads()} threads",
    }
    checkpoint.atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1))
    return results
