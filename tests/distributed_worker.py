"""What each torchrun process holds, for tests/test_distributed_state.py (2 processes, gloo on CPU):

    python -m torch.distributed.run --nproc-per-node 2 -m tests.distributed_worker OUT TINY.npz

OUT/steps-<algorithm>-rank<r>.pt    `steps`: four train_steps on this rank's shard of fixed global batches
OUT/trained-<algorithm>-rank<r>.pt  the trainer's algorithm state after 4 iterations, and after the same run
                                    resumed from its iteration-3 checkpoint (as if killed after it)
OUT/mpl-rank<r>.txt                 the error that refuses mpl under torchrun
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import torch
from torch import nn

from metassl.run import distributed
from metassl import train as trainer
from metassl.algorithms import Batch, StepContext, build_algorithm
from metassl.config import Config
from metassl.algorithms import build_config
from metassl.errors import UserError

# each algorithm with its state moving fast: thresholds low enough to fill FlexMatch's status, short EMAs,
# a FreeMatch fairness term large enough to matter in the weights
ALGOS = {"flexmatch": ["flexmatch_threshold=0.5"], "freematch": ["freematch_ema=0.5", "freematch_fairness_weight=0.5"],
         "softmatch": ["softmatch_ema=0.5"]}
B, POOL, STEPS = 8, 16, 4        # global batch (labeled = unlabeled), unlabeled pool, steps
TRAIN = ["model=mlp", "device=cpu", "threads=1", "translate=0", "flip=false", "num_labels=40", "batch_size=16",
         "iterations=4", "eval_every=4", "checkpoint_every=1", "log_every=2", "warmup=1"]


def global_batch(t: int) -> Batch:
    """Step t's global batch: 1x4x4 images scaled so a linear model is confident, distinct pool positions."""
    g = torch.Generator().manual_seed(t)
    x = lambda: 4 * torch.randn(B, 1, 4, 4, generator=g)     # noqa: E731
    return Batch(x(), torch.randint(0, 4, (B,), generator=g), [x(), x()], None, torch.randperm(POOL, generator=g)[:B])


def steps(name: str, d: distributed.Dist) -> dict:
    """The algorithm's state and the weights after STEPS train_steps, this rank on its contiguous shard."""
    algo = build_algorithm(build_config(overrides=[f"algorithm={name}", *ALGOS[name]]), d.world)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 4))      # per-row: no batch statistics, no dropout
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lo, hi = d.rank * B // d.world, (d.rank + 1) * B // d.world
    for t in range(STEPS):
        full = global_batch(t)
        shard = Batch(full.x_lb[lo:hi], full.y_lb[lo:hi], [v[lo:hi] for v in full.x_ulb], None, full.idx_ulb[lo:hi])
        ctx = StepContext(t, 0.1, 0.0, 1.0, 4, num_unlabeled=POOL, gather=lambda x: distributed.gather_rows(x, d),
                          total=lambda x: distributed.total(x, d))
        trainer.train_step(model, opt, algo, shard, ctx, d=d)
    return {"algorithm": algo.state_dict(), "model": model.state_dict()}


def trained_state(cfg: Config, run_dir: Path, resume: bool = False) -> dict:
    """Train (or resume) run_dir through `train` and return this rank's algorithm state at the end."""
    runs, setup = [], trainer.setup
    trainer.setup = lambda *args: runs.append(setup(*args)) or runs[-1]     # keep this rank's Run
    try:
        trainer.train(cfg, run_dir, resume=resume, quiet=True)
    finally:
        trainer.setup = setup
    return runs[0].algo.state_dict()


def main(out: Path, npz: str) -> None:
    torch.set_num_threads(1)
    d = distributed.setup("cpu")
    for name in ALGOS:
        torch.save(steps(name, d), out / f"steps-{name}-rank{d.rank}.pt")
        cfg = build_config(overrides=[*TRAIN, f"dataset={npz}", f"algorithm={name}", *ALGOS[name]])
        full, cut = out / f"{name}-full", out / f"{name}-cut"
        states = {"full": trained_state(cfg, full)}
        if d.main:                                 # as if killed right after the iteration-3 checkpoint
            shutil.copytree(full, cut)
            shutil.copy(cut / "prev.pt", cut / "last.pt")
            (cut / "results.json").unlink()
        torch.distributed.barrier()
        states["resumed"] = trained_state(Config(), cut, resume=True)
        torch.save(states, out / f"trained-{name}-rank{d.rank}.pt")
    try:
        trainer.train(build_config(overrides=[*TRAIN, f"dataset={npz}", "algorithm=mpl"]), out / "mpl", quiet=True)
    except UserError as e:
        (out / f"mpl-rank{d.rank}.txt").write_text(str(e))
    finally:        # leave the group as the command line does: gloo's threads alive at exit abort the process
        distributed.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
