"""The one trainer: the loop, SGD (its schedules: schedule.py), EMA, evaluation, checkpoints, logs, torchrun.
Algorithms only define their step (algorithms/base.py); data sources hand over batches (data/).

    metassl train --preset fmnist-1000 iterations=200 device=cpu
    torchrun --nproc-per-node 2 -m metassl train --preset fmnist-1000 device=cpu --out runs/ddp
    python -c "from metassl.train import train; from metassl.algorithms import build_config; \
               train(build_config('fmnist-1000', overrides=['iterations=100']), 'runs/demo')"

`train` reads top to bottom: `setup` (config, data, model, optimiser, run directory), `restore`, a time_limit
fixed as an iteration count (run/budget.py), then per iteration `train_step` (forward, losses, backward,
all-reduce, SGD, EMA), the NaN guard, logging, `evaluate`, `save`; `finish` writes the results. The run
directory's files and rules: run/rundir.py; torchrun and its restarts: run/distributed.py.
"""
from __future__ import annotations

import copy
import itertools
import os
import platform
import signal
import statistics
import sys
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .algorithms import Algorithm, StepContext, StepOutput, build_algorithm, without_unread
from .algorithms.supervised import Supervised
from .batch import Batch, DataSource, PoolPasses
from .config import Config, to_dict
from .data import ImageData, labeled_split, load_dataset
from .data.resident import prepare_data
from .errors import Interrupted, UserError
from .inference.evaluate import error_counts
from .models import build_model, check_model_name
from .run import checkpoint, distributed
from .run.budget import fit_budget, measure_costs
from .run.log import Logger, pseudo_label_quality
from .run.rundir import InMemory, RunDir
from .run.safety import DivergenceWatch, StopSignals, current_stop, nonfinite_weights, stoppable
from .schedule import check_schedule, consistency_weight_at, images_seen, lr_at, meta_step_size_at, unlabeled_schedule
from .torch_utils import ema_update, keep_freed_memory, native_bf16, resolve_device, rng_state, set_rng_state

__all__ = ["train", "train_run", "train_step"]


# --- data, RNG state -------------------------------------------------------------------------------------
def build_data(cfg: Config, algo: Algorithm, data: ImageData | None, device: torch.device) -> DataSource:
    """The data source: resident on the device (default) or streamed from an image folder (stream=true)."""
    num_labels = -1 if algo.all_labels else cfg.num_labels
    if cfg.meta_holdout and cfg.stream:        # (an algorithm without a meta-gradient refuses it: build_algorithm)
        raise UserError(f"meta_holdout={cfg.meta_holdout} holds labels out of a resident data set and stream=true "
                        f"streams its data; set meta_holdout=0")
    if cfg.stream:
        from .data.streaming import StreamingData
        if algo.bank_every:
            raise UserError(f"algorithm={cfg.algorithm} labels the whole unlabeled pool between rounds, which a "
                            "streamed image folder does not hold in memory; set stream=false or pick an online algorithm")
        if cfg.dataset != "folder" or not cfg.data_dir:
            raise UserError("stream=true reads image folders: set dataset=folder data_dir=PATH (train/ and val/ inside)")
        return StreamingData(cfg.data_dir, cfg.image_size or 224, num_labels, cfg.split_seed, cfg.labels_file,
                             cfg.include_labeled_in_unlabeled, device, cfg.workers, cfg.channels_last)
    if data is None:
        data = load_dataset(cfg.dataset, cfg.data_dir or None, cfg.image_size or None)
    split = labeled_split(data.y_train, num_labels, data.num_classes, cfg.split_seed, cfg.num_val,
                          cfg.include_labeled_in_unlabeled, cfg.meta_holdout)
    return prepare_data(data, split, device, cfg.flip, cfg.translate, cfg.channels_last, cfg.pad_mode)


# --- one step --------------------------------------------------------------------------------------------
def train_step(model: nn.Module, opt: torch.optim.Optimizer, algo: Algorithm, batch: Batch, ctx: StepContext, *,
               autocast: AbstractContextManager = nullcontext(), d: distributed.Dist = distributed.Dist(),
               sync_bn: bool = False, ema: nn.Module | None = None, ema_decay: float = 0.0) -> StepOutput:
    """One optimiser step at learning rate ctx.lr: the algorithm's forward and losses, backward, the gradient
    all-reduce (torchrun), SGD, one set of BN statistics, the algorithm's own update, the trainer's EMA."""
    for group in opt.param_groups:
        group["lr"] = ctx.lr
    model.train()
    with autocast:
        out = algo.step(model, batch, ctx)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    distributed.average_gradients(model, d)          # the gradient of the global-batch loss
    opt.step()
    if d.world > 1 and not sync_bn:
        distributed.broadcast_buffers(model, d)        # one set of BN statistics, as DDP keeps
    algo.after_update(model)                           # e.g. a Mean Teacher's teacher
    if ema is not None:
        ema_update(ema, model, ema_decay)
    return out


def due(n: int, every: int) -> bool:
    """Whether iteration n ends an interval of `every` iterations (0: never; the caller adds the last iteration)."""
    return bool(every) and n % every == 0


def step_context(run: Run, cfg: Config, it: int) -> StepContext:
    """What a step at iteration `it` reads: its schedules' values, the class and pool counts, and the global-batch
    operations of a torchrun group (identities in one process)."""
    d = run.dist
    reduce = (lambda g: distributed.average_dict(g, d)) if d.world > 1 and cfg.meta_scope == "global" else None
    return StepContext(it, lr_at(it, cfg), meta_step_size_at(it, cfg), consistency_weight_at(it, cfg),
                       len(run.data.classes), reduce, num_unlabeled=len(run.data.unlabeled),
                       gather=lambda t: distributed.gather_rows(t, d), total=lambda t: distributed.total(t, d))


def in_bf16(cfg: Config, device: torch.device) -> bool:
    """Whether a run computes its steps and bank passes in bf16: amp=true on a device with bf16 units."""
    return cfg.amp and native_bf16(device)


def autocast_for(run: Run) -> AbstractContextManager:
    """bf16 autocast where `in_bf16`, else nothing."""
    return torch.autocast(run.device.type, dtype=torch.bfloat16) if in_bf16(run.cfg, run.device) else nullcontext()


# --- the run's state and its parts -----------------------------------------------------------------------
@dataclass
class Run:
    """What a training run holds between iterations: built by `setup`, restored by `restore`."""

    cfg: Config
    dir: RunDir | InMemory           # where its records go: a run directory, or memory (run_dir=None)
    dist: distributed.Dist           # this process's rank in the torchrun group (one process: rank 0 of 1)
    device: torch.device
    algo: Algorithm
    data: DataSource                 # DeviceData or StreamingData: the split's batches on the device
    model: nn.Module
    ema: nn.Module | None
    opt: torch.optim.Optimizer
    logger: Logger
    stop: StopSignals
    resume: bool = False             # continue the run in `dir` (--resume, or a torchrun restart of it)
    start: int = 0                   # first iteration of this session
    history: list[dict[str, Any]] = field(default_factory=list)   # every evaluation record so far
    elapsed: float = 0.0             # wall seconds of earlier sessions
    train_time: float = 0.0          # training seconds so far (evaluation excluded), all sessions
    last_saved: int | None = None    # iteration of the newest checkpoint on disk
    time_limit: float = 0.0          # the budget `iterations` was fitted to (0: none)
    watch: DivergenceWatch = field(default_factory=DivergenceWatch)
    t0: float = field(default_factory=time.perf_counter)           # start of this session
    t_call: float = 0.0              # when train() was called: a time_limit counts from here (setup included)
    results: dict[str, Any] | None = None   # what `finish` returned

    @property
    def eval_model(self) -> nn.Module:
        return self.ema if self.ema is not None else self.model


def saved_config(where: RunDir | InMemory) -> Config:
    """The run directory's config, less the keys its algorithm does not read (older runs kept their preset's)."""
    return without_unread(where.read_config())


def setup(cfg: Config | None, where: RunDir | InMemory, model: nn.Module | None, data: ImageData | None, resume: bool,
          force: bool, quiet: bool) -> Run:
    """Config, process group, device, algorithm, data, model, EMA and optimiser; the run directory started
    (its config and split written) once all of them are valid."""
    stop = current_stop()
    if cfg is None and not resume:
        raise UserError("train needs a config: cfg=None is for resume=True (the run's saved config)")
    if resume:
        where.check(resume, force)
        cfg = saved_config(where)
    cfg = cfg.resolved()
    d = distributed.setup(cfg.device)
    if not resume and distributed.launch_id() is not None:
        resume, force, cfg = distributed.continue_after_restart(cfg, where, d, force,
                                                                  lambda: saved_config(where).resolved())
    if d.main:
        where.check(resume, force)  # created only below, once config, data and split are valid
    if cfg.batch_size % d.world or cfg.unlabeled_batch_size % d.world:
        raise UserError(f"batch_size={cfg.batch_size} and unlabeled_batch_size={cfg.unlabeled_batch_size} are global "
                        f"and must divide by the {d.world} processes")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, d.local_rank)
    if device.type == "cpu":
        keep_freed_memory()
    if cfg.amp and not native_bf16(device) and d.main and not quiet:
        print(f"metassl: note: amp=true, but {device} has no bf16 units (bf16 would be emulated, slower): "
              "the run computes in fp32", file=sys.stderr)
    algo = build_algorithm(cfg, d.world)      # one-process algorithms refuse torchrun here
    if not cfg.time_limit:                     # (with a time_limit: once the length is fixed, fit_budget)
        check_schedule(cfg, algo.uses_unlabeled, algo.bank_every)
    if model is None:
        check_model_name(cfg.model)            # before the data set is loaded
    source = build_data(cfg, algo, data, device)

    torch.manual_seed(cfg.seed)
    if model is None:
        model = build_model(cfg.model, len(source.classes), source.shape[0], source.shape[1])
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
    if algo.uses_unlabeled and not len(source.unlabeled):
        raise UserError(f"algorithm={cfg.algorithm} needs unlabeled images but the split leaves none; "
                        "lower num_labels or set include_labeled_in_unlabeled=true")
    stop.armed = True                          # from here on SIGINT/SIGTERM stop with a checkpoint
    if not resume and d.main:                  # marked with the launch, so that a torchrun restart continues it
        where.start(force, distributed.launch_id(), cfg, source.split.to_dict())
    logger = Logger(where, cfg.iterations, quiet, enabled=d.main)
    return Run(cfg, where, d, device, algo, source, model, ema, opt, logger, stop, resume)


def restore(run: Run) -> None:
    """Continue from the run directory's checkpoint: weights, optimiser, EMA, algorithm state, every
    rank's RNG, history and clocks; the metrics records cut back to it. A run killed before its first
    checkpoint starts over. Rank 0 reads the checkpoint (falling back to the previous one if the newest is
    damaged) and broadcasts it, so every rank resumes from the same one."""
    state = checkpoint.load(run.dir) if run.dist.main and run.dir.has_checkpoint() else None
    state = distributed.broadcast_object(state, run.dist)
    if state is not None:
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        if run.ema is not None:
            run.ema.load_state_dict(state["ema"])
        run.algo.load_state_dict(state["algorithm"])
        rngs = state["rng"]
        if len(rngs) != run.dist.world:
            raise UserError(f"{run.dir} was checkpointed by {len(rngs)} process(es); resume it with the same "
                            f"number (now {run.dist.world}) for an exact continuation")
        set_rng_state(rngs[run.dist.rank])
        run.start, run.history = int(state["iteration"]), list(state["history"])
        run.time_limit = float(state.get("time_limit", 0.0))
        run.elapsed, run.train_time = float(state["elapsed"]), float(state["train_time"])
        run.last_saved = run.start or None
    run.logger.truncate_after(run.start)


def check_finite(run: Run, n: int) -> None:
    """NaN/Inf in a loss, the pseudo-labels or the weights: stop before iteration n is logged, evaluated or
    saved, so the newest checkpoint on disk stays the last good one."""
    found = run.watch.check()
    if found is None:
        bad = nonfinite_weights(run.model, run.ema)
        if not bad:
            return
        found = (n, [f"the model weights ({bad[0]}{', ...' if len(bad) > 1 else ''})"])
    first, terms = found
    kept = (f"the last good checkpoint (iteration {run.last_saved}) is kept in {run.dir}"
            if run.last_saved is not None else "no checkpoint was written" + (f" to {run.dir}" if run.dir.path else ""))
    raise UserError(f"training diverged {'by' if terms[0].startswith('the model') else 'at'} iteration {first}: "
                    f"{', '.join(terms)} {'is' if len(terms) == 1 else 'are'} NaN/Inf; stopped at iteration {n} "
                    f"and {kept}; try a smaller lr or beta")


def pool_passes(run: Run, pool: Callable[[int], Iterator] | None = None) -> PoolPasses:
    """This rank's shard of the whole-pool passes (`pool`: another pool iterator, e.g. a slice to time)."""
    data, d = run.data, run.dist
    return PoolPasses(pool or (lambda bs: data.pool_batches(bs, d.rank, d.world)),
                      lambda bs, held_out: data.labeled_batches(bs, held_out, d.rank, d.world),
                      len(data.unlabeled), bool(data.flip), lambda t: distributed.sum_all(t, d))


def relabel(run: Run, it: int, ctx: StepContext) -> None:
    """The label bank's teacher pass before iteration `it` with the evaluated weights, each rank a shard of the
    pool; one `refresh` record in the metrics (its cost counts as training)."""
    t0 = time.perf_counter()
    with autocast_for(run):
        metrics = run.algo.relabel(run.eval_model, pool_passes(run), ctx)
    values = {k: v.item() for k, v in metrics.items()}
    # numbered as the (1-based) iteration it precedes, so a resume from the checkpoint of iteration `it` drops it
    run.logger.write({"iteration": it + 1, "kind": "refresh", "seconds": round(time.perf_counter() - t0, 3), **values})


def log_train(run: Run, n: int, ctx: StepContext, out: StepOutput, batch: Batch) -> None:
    """One `train` record (the step's metrics, pseudo-label quality where true labels are known) and the
    progress line; the only host syncs of the loop."""
    metrics = out.metrics
    if out.pseudo_labels is not None and batch.y_ulb is not None and bool((batch.y_ulb >= 0).any()):
        metrics = {**metrics, **pseudo_label_quality(*out.pseudo_labels, batch.y_ulb)}
    values = {k: v.item() for k, v in metrics.items()}
    run.logger.write({"iteration": n, "kind": "train", "lr": ctx.lr, "meta_step_size": ctx.meta_step_size,
                      "consistency_weight": ctx.consistency_weight, **values})
    rate = (n - run.start) / max(1e-9, time.perf_counter() - run.t0)
    run.logger.progress(n, rate, values, run.history[-1]["test_error"] if run.history else None,
                        (run.cfg.iterations - n) / max(rate, 1e-9))


def error_on(run: Run, split: str, model: nn.Module | None = None) -> float:
    """Top-1 error (%) of the evaluated weights (or `model`) on 'test' or 'val', each rank a shard, counts summed
    over ranks."""
    batches = run.data.eval_batches(split, run.cfg.eval_batch_size, run.dist.rank, run.dist.world)
    counts = distributed.sum_all(error_counts(model or run.eval_model, batches, run.device), run.dist)   # fp32 always
    return 100.0 * (counts[0] / counts[1].clamp_min(1)).item()


def evaluate(run: Run, n: int) -> None:
    """An `eval` record after iteration n: test (and validation) error, training seconds so far (evaluation
    excluded, all sessions) and images consumed so far; appended to the history and the metrics. With EMA
    weights the raw weights' errors come too (`*_raw`), so one run decides on validation whether EMA pays."""
    splits = ["test"] + (["val"] if len(run.data.val) else [])
    record: dict[str, Any] = {"iteration": n, "kind": "eval", **{f"{s}_error": error_on(run, s) for s in splits}}
    if run.ema is not None:
        record.update({f"{s}_error_raw": error_on(run, s, run.model) for s in splits})
    record["train_seconds"] = round(run.train_time, 3)
    record["images_seen"] = images_seen(n, run.cfg, run.algo.uses_unlabeled, run.dist.world)
    run.history.append(record)
    run.logger.write(record)


def save(run: Run, n: int) -> None:
    """The `last` checkpoint after iteration n (every rank's RNG gathered; rank 0 writes); none in memory."""
    if run.dir.path is None:
        return
    run.last_saved = n
    rngs = distributed.gather_objects(rng_state(), run.dist)     # every rank's RNG, for an exact resume
    if not run.dist.main:
        return
    data = run.data
    checkpoint.save({"iteration": n, "model": run.model.state_dict(), "optimizer": run.opt.state_dict(),
                     "ema": run.ema.state_dict() if run.ema is not None else {}, "algorithm": run.algo.state_dict(),
                     "rng": rngs, "history": run.history, "config": to_dict(run.cfg),
                     "classes": data.classes, "shape": list(data.shape), "mean": data.mean.cpu(), "std": data.std.cpu(),
                     "elapsed": run.elapsed + time.perf_counter() - run.t0, "train_time": run.train_time,
                     "time_limit": run.time_limit}, run.dir)


def stop_requested(run: Run, n: int) -> bool:
    """SIGINT/SIGTERM seen; under torchrun every process must stop at the same iteration, so they agree
    on logging steps only (one sync)."""
    stopping = run.stop.signum is not None
    if run.dist.world > 1:
        flag = torch.tensor(float(stopping), device=run.device)
        stopping = n % run.cfg.log_every == 0 and bool(distributed.sum_all(flag, run.dist) > 0)
    return stopping


def finish(run: Run) -> dict[str, Any]:
    """The results dict, kept in run.results and written to the run directory by rank 0."""
    cfg, device, history = run.cfg, run.device, run.history
    errors = [h["test_error"] for h in history]
    results = {
        "test_error": errors[-1],
        "test_error_median_last5": statistics.median(errors[-5:]),
        "val_error": history[-1].get("val_error"),
        **{k: history[-1][k] for k in ("test_error_raw", "val_error_raw") if k in history[-1]},
        "iterations": cfg.iterations,
        **({"time_limit": run.time_limit, "budget_seconds": round(time.perf_counter() - run.t_call, 2)}
           if run.time_limit else {}),
        "wall_seconds": round(run.elapsed + time.perf_counter() - run.t0, 2),
        "train_seconds": round(run.train_time, 2),
        "images_per_second": round(images_seen(cfg.iterations, cfg, run.algo.uses_unlabeled, run.dist.world)
                                   / max(run.train_time, 1e-9), 1),
        "evaluated": "ema" if run.ema is not None else "raw",
        "algorithm": cfg.algorithm, "model": cfg.model, "dataset": cfg.dataset, "num_labels": len(run.data.labeled),
        "seed": cfg.seed, "split_seed": cfg.split_seed, "device": str(device), "processes": run.dist.world,
        "precision": "bf16 autocast (evaluation fp32)" if in_bf16(cfg, device) else "fp32",
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}, {torch.get_num_threads()} threads"
                   + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""),
    }
    run.results = results
    if run.dist.main:
        run.dir.write_results(results)
    return results


# --- the loop --------------------------------------------------------------------------------------------
def train(cfg: Config | None, run_dir: str | Path | None, *, model: nn.Module | None = None,
          data: ImageData | None = None, resume: bool = False, force: bool = False, quiet: bool = False) -> dict[str, Any]:
    """Train `cfg` into `run_dir` (or resume it; cfg may then be None: the saved one is used) and return the
    results dict, also written to the run directory. run_dir=None trains in memory: no file, no checkpoint.

    `model` may be any nn.Module mapping (N, C, H, W) floats to (N, K) logits; `data` any ImageData.
    Under torchrun (WORLD_SIZE > 1) every process calls this; rank 0 alone writes.
    """
    return train_run(cfg, run_dir, model=model, data=data, resume=resume, force=force, quiet=quiet).results


@stoppable
def train_run(cfg: Config | None, run_dir: str | Path | None, *, model: nn.Module | None = None,
              data: ImageData | None = None, resume: bool = False, force: bool = False, quiet: bool = False) -> Run:
    """`train`, returning the finished Run: its results (`run.results`), the evaluated model (`run.eval_model`:
    the EMA when ema > 0, else `run.model`), the data's mean/std (`run.data`) and its records (`run.dir`;
    with run_dir=None an InMemory whose `metrics` list holds them)."""
    if cfg is not None and cfg.time_limit:
        import torch._dynamo  # noqa: F401  (the optimiser imports it once per process, seconds: not training time)
    t_call = time.perf_counter()
    run = setup(cfg, RunDir(run_dir) if run_dir is not None else InMemory(), model, data, resume, force, quiet)
    if run.resume:
        restore(run)
    run.t_call = t_call
    if run.cfg.time_limit and not run.start:       # a checkpointed run's length was fixed before it
        costs = measure_costs(run, step=train_step, context=step_context, evaluate=error_on, passes=pool_passes,
                              labeled_only=Supervised(), autocast=autocast_for(run))
        fit_budget(run, costs, t_call, rebuild=build_algorithm)
    cfg, d = run.cfg, run.dist
    autocast = autocast_for(run)
    # labeled-only warm-up (labeled_warmup): the supervised step, no unlabeled batch, then the algorithm's own
    warm = min(cfg.labeled_warmup, cfg.iterations) if run.algo.uses_unlabeled else 0
    warm_algo = Supervised()
    unlabeled = unlabeled_schedule(cfg, d.world)
    batches = itertools.chain(
        run.data.batches(run.start, warm, (), cfg.batch_size, unlabeled, cfg.seed, d.rank, d.world),
        run.data.batches(max(run.start, warm), cfg.iterations, run.algo.views if run.algo.uses_unlabeled else (),
                         cfg.batch_size, unlabeled, cfg.seed, d.rank, d.world))
    for it in range(run.start, cfg.iterations):
        t_step = time.perf_counter()
        ctx = step_context(run, cfg, it)
        if it >= warm and run.algo.bank_every and (it - warm) % run.algo.bank_every == 0:
            relabel(run, it, ctx)
        batch = next(batches)
        out = train_step(run.model, run.opt, warm_algo if it < warm else run.algo, batch, ctx, autocast=autocast,
                         d=d, sync_bn=cfg.sync_bn, ema=run.ema, ema_decay=cfg.ema)
        if it < warm:
            run.algo.after_update(run.model)           # a teacher (Mean Teacher) tracks the warm-up too
        n = it + 1
        pseudo = out.pseudo_labels
        run.watch.update(n, {"loss": out.loss.detach(), **out.metrics,
                             **({"pseudo_labels_plain": pseudo[0], "pseudo_labels": pseudo[1]} if pseudo else {})})
        last = n == cfg.iterations
        logging, evaluating = due(n, cfg.log_every) or last, due(n, cfg.eval_every) or last
        if run.device.type == "cuda" and (logging or evaluating):
            torch.cuda.synchronize()
        run.train_time += time.perf_counter() - t_step

        if logging or evaluating:
            check_finite(run, n)               # NaN/Inf: stop before this iteration is logged or evaluated
        if logging:
            log_train(run, n, ctx, out, batch)
        if evaluating:
            evaluate(run, n)
        stopping = stop_requested(run, n)
        if due(n, cfg.checkpoint_every) or last or stopping:
            check_finite(run, n)               # never write a NaN checkpoint over the last good one
            save(run, n)
        if stopping and not last:
            run.logger.close()
            signum = run.stop.signum or signal.SIGTERM
            kept = (f"checkpoint saved; continue with: metassl train --resume {run.dir}" if run.dir.path
                    else "trained in memory, nothing kept")
            raise Interrupted(f"stopped by {signal.Signals(signum).name} after iteration {n}/{cfg.iterations}; {kept}",
                              128 + signum)
    run.logger.close()
    finish(run)
    return run
