"""Data parallelism under torchrun: process group, gradient all-reduce, synchronised BatchNorm, restarts.

    torchrun --nproc-per-node 2 -m metassl train --preset fmnist-1000 device=cpu     # gloo on CPU
    torchrun --nproc-per-node 8 -m metassl train --preset imagenet-10pct data_dir=...  # nccl on CUDA

`batch_size` and `unlabeled_batch_size` are GLOBAL: each of N processes takes a contiguous 1/N shard
of the same global batch (data/sampling.py), gradients are averaged, so N processes compute what one
process with the whole batch computes (up to BatchNorm, which sees per-process batches unless
`sync_bn=true`, and float reduction order). A single process needs no torchrun.

We average gradients with one flat all-reduce after backward instead of wrapping the model in
DistributedDataParallel: every algorithm runs several forwards (and the meta pass) per backward,
which DDP's reducer does not allow without `static_graph`, and the explicit form keeps the step the
same code with 1 or N processes.
"""
from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from ..config import Config
from .rundir import InMemory, RunDir


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes logs, checkpoints and results."""
        return self.rank == 0


def setup(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun (WORLD_SIZE > 1); else one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        if launch_id() is not None and agents() == 1:
            dist.init_process_group(backend="nccl" if cuda else "gloo", store=_attempt_store(),
                                    rank=int(os.environ["RANK"]), world_size=world)
        else:
            dist.init_process_group(backend="nccl" if cuda else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local)


def restart_count() -> int:
    """How often torchrun's elastic agent has restarted this worker group (`--max-restarts`); 0 outside torchrun."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0)


def agents() -> int:
    """torchrun agents (nodes) in the job; 1 outside torchrun."""
    return int(os.environ.get("GROUP_WORLD_SIZE") or 1)


def launch_id() -> str | None:
    """The torchrun launch this worker group belongs to, the same across the agent's restarts of it and
    different for the next torchrun command; None outside torchrun. A multi-node job with a rendezvous id
    (rank 0 may land on another node after a restart) is that id; otherwise also rank 0's agent: host and
    pid of the torchrun process (the worker's parent), since `--rdzv-id` defaults to "none"."""
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:
        return None
    if agents() > 1 and run_id != "none":
        return run_id
    return f"{run_id}@{socket.gethostname()}:{os.getppid()}"


def _attempt_store() -> dist.Store:
    """torchrun's key-value store under a prefix of its own for this attempt. The agent keeps one store for
    all its restarts of the worker group, and torch (2.13) adds no per-attempt prefix: a restarted group could
    read the dead group's gloo/nccl addresses and fail to connect ("connectFullMesh failed ... Connection
    refused", pytorch/pytorch#135712), spending a restart on nothing. One agent only: the restart count is
    the agent's own, and agents that were not the one to fail do not count a restart."""
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"    # else rank 0 hosts it
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
                          is_master=not agent_store and os.environ.get("RANK") == "0",
                          timeout=dist.constants.default_pg_timeout, multi_tenant=True)
    return dist.PrefixStore(f"metassl/attempt{restart_count()}/", store)


def continue_after_restart(cfg: Config, where: RunDir | InMemory, d: Dist, force: bool,
                           saved_config: Callable[[], Config]) -> tuple[bool, bool, Config]:
    """Under torchrun, which re-runs the same command when --max-restarts restarts the worker group:
    (resume, force, cfg). Rank 0 decides and broadcasts: a restart resumes the run this launch started in
    the run directory, with its saved config (`saved_config()`, read only then), or starts it over if it was
    killed before its config was written; a first attempt, or a run this launch did not start, follows the usual
    rules. On several nodes a restart is known by the launch mark alone (agents that did not fail do not count
    a restart)."""
    how, saved = "new", None
    if d.main and (restart_count() > 0 or agents() > 1):
        how = where.restarted(launch_id())
        saved = saved_config() if how == "resume" else None
        if restart_count() > 0 or how != "new":
            print(f"metassl: torchrun restart {restart_count()}: " + {
                "resume": f"continuing the run in {where}", "start-over": f"starting {where} over (no saved config)",
                "new": f"{where} holds no run of this launch (a first attempt's rules apply)"}[how],
                file=sys.stderr, flush=True)
    how, saved = broadcast_object((how, saved), d)
    return how == "resume", force or how == "start-over", saved or cfg


def teardown() -> None:
    """Leave the process group, once the process has nothing more to train (the command line calls it on exit;
    a process that trains several runs keeps one group for all of them)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def average_(tensors: list[Tensor], d: Dist) -> None:
    """In-place mean over processes of a list of tensors, as one flat all-reduce."""
    if d.world == 1 or not tensors:
        return
    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat)
    flat /= d.world
    for t, avg in zip(tensors, _unflatten_dense_tensors(flat, tensors)):
        t.copy_(avg)


def average_gradients(model: nn.Module, d: Dist) -> None:
    """After backward: every process gets the gradient of the global-batch mean loss."""
    average_([p.grad for p in model.parameters() if p.grad is not None], d)


def average_dict(grads: dict[str, Tensor], d: Dist) -> dict[str, Tensor]:
    """The labeled gradient g_l averaged over processes (the global meta-gradient), as a new dict."""
    out = {k: g.clone() for k, g in grads.items()}
    average_(list(out.values()), d)
    return out


def broadcast_state(model: nn.Module, d: Dist) -> None:
    """Make every process hold rank 0's parameters and buffers (start; buffers after unsynced BN)."""
    if d.world == 1:
        return
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)


def broadcast_buffers(model: nn.Module, d: Dist) -> None:
    """Rank 0's buffers (BN running statistics) everywhere, as DistributedDataParallel keeps them."""
    if d.world == 1:
        return
    with torch.no_grad():
        for b in model.buffers():
            dist.broadcast(b, 0)


def sum_all(values: Tensor, d: Dist) -> Tensor:
    if d.world > 1:
        dist.all_reduce(values)
    return values


def gather_rows(rows: Tensor, d: Dist) -> Tensor:
    """Every process's rows (B, ...) concatenated in rank order, (world B, ...): the global batch's rows, as one
    process holding the whole batch has them (shards are contiguous and equal). No gradient."""
    if d.world == 1:
        return rows
    parts = [torch.empty_like(rows) for _ in range(d.world)]
    dist.all_gather(parts, rows.contiguous())
    return torch.cat(parts)


def total(values: Tensor, d: Dist) -> Tensor:
    """Sum over processes, differentiable: backward sums the gradients over processes too, so after the
    gradient average each process holds the gradient of the global-batch loss (as SyncBatchNorm below)."""
    if d.world == 1:
        return values
    return _Sum.apply(values)


class _Sum(torch.autograd.Function):
    """all_reduce SUM of a copy; backward all-reduces the gradient likewise. Both synchronous, on the default
    group looked up at each call. Not torch.distributed.nn.functional.all_reduce: its `group=group.WORLD`
    default is evaluated when that module is first imported, after init here, so it holds the process group
    for good; `teardown` then leaves gloo's threads running into interpreter shutdown, where one releasing a
    finished collective's tensors takes the GIL of the finalizing interpreter and aborts the process
    ("terminate called without an active exception")."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        g = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(g)
        return g


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's `obj` on every process (other ranks pass anything): one decision, e.g. the checkpoint to resume."""
    if d.world == 1:
        return obj
    box = [obj if d.main else None]
    dist.broadcast_object_list(box, 0)
    return box[0]


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    """Every process's `obj`, in rank order (e.g. RNG states for an exact resume)."""
    if d.world == 1:
        return [obj]
    out: list[Any] = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the global batch on any device (torch's SyncBatchNorm is GPU-only).

    Batch sums are all-reduced with the differentiable `_Sum` (as `total`), so gradients flow through the
    global statistics. Eval mode uses the running statistics, as usual.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or not dist.is_initialized() or dist.get_world_size() == 1:
            return super().forward(x)
        dims = [0] + list(range(2, x.ndim))
        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        stats = _Sum.apply(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_(var.detach() * n / (n - 1).clamp_min(1), m)
                self.num_batches_tracked += 1
        shape = [1, c] + [1] * (x.ndim - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        return y * self.weight.view(shape) + self.bias.view(shape) if self.affine else y


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer by SyncBatchNorm, keeping its parameters and statistics."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNorm):
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        new.load_state_dict(module.state_dict())
        new.train(module.training)
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_sync_batchnorm(child))
    return module
