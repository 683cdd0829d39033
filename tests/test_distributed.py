"""torchrun on CPU (gloo): 2 processes with B/2 each compute what 1 process with B computes; resume works,
and a worker SIGKILLed under `torchrun --max-restarts` is survived bit-identically. The differentiable sum
(distributed.total) is checked in 2 spawned processes, without torchrun."""
import gc
import importlib.util
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch

from tests.conftest import write_tiny_npz

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

# mlp: no dropout; sync_bn: global BatchNorm statistics; meta (Alg. 1): no mixup randomness; no augmentation
ARGS = ["model=mlp", "sync_bn=true", "algorithm=meta", "translate=0", "flip=false", "device=cpu", "threads=1",
        "num_labels=40", "batch_size=16", "iterations=8", "eval_every=4", "checkpoint_every=1", "log_every=2",
        "warmup=2", "consistency_rampup=0", "lr=0.05", "beta_schedule=constant", "beta=0.5"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(args: list[str], procs: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if procs == 1:
        cmd = [sys.executable, "-m", "metassl", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={procs}", "--master-addr=127.0.0.1",
               f"--master-port={free_port()}", "-m", "metassl", "train", *args]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    npz = write_tiny_npz(tmp / "tiny.npz")
    args = ARGS + [f"dataset={npz}", "--quiet"]
    run(args + ["--out", str(tmp / "one")], 1)
    run(args + ["--out", str(tmp / "two")], 2)
    return tmp


def weights(run_dir, name="last.pt"):
    return torch.load(run_dir / name, weights_only=True)["model"]


def test_two_processes_with_half_batches_equal_one_process(runs):
    one, two = weights(runs / "one"), weights(runs / "two")
    for k in one:
        torch.testing.assert_close(two[k], one[k], rtol=1e-4, atol=1e-5, msg=k)
    r1 = json.loads((runs / "one" / "results.json").read_text())
    r2 = json.loads((runs / "two" / "results.json").read_text())
    assert abs(r1["test_error"] - r2["test_error"]) <= 2.5  # at most a couple of borderline test images


def test_two_process_run_resumes_from_its_checkpoint(runs):
    cut = runs / "cut"
    shutil.copytree(runs / "two", cut)
    shutil.copy(cut / "prev.pt", cut / "last.pt")      # as if killed right after the iteration-7 checkpoint
    (cut / "results.json").unlink()
    run(["--resume", str(cut), "--quiet"], 2)
    full, resumed = weights(runs / "two"), weights(cut)
    for k in full:
        torch.testing.assert_close(resumed[k], full[k], rtol=1e-5, atol=1e-6, msg=k)


def _sum_then_teardown(rank: int, port: int) -> None:
    """One of 2 spawned gloo processes: `total` forward and backward, then `teardown` (see the test below)."""
    from metassl.run import distributed
    torch.set_num_threads(1)
    threads = len(os.listdir("/proc/self/task"))
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    d = distributed.Dist(rank, 2)
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    y = distributed.total(x * (rank + 1), d)                   # (1, 2) + (2, 4)
    (y * torch.tensor([1.0, 10.0]) * (rank + 1)).sum().backward()
    assert y.tolist() == [3.0, 6.0]
    assert x.grad.tolist() == [(rank + 1) * 3.0, (rank + 1) * 30.0]   # (rank + 1) * sum over ranks of the weights
    group = weakref.ref(torch.distributed.group.WORLD)
    distributed.teardown()
    gc.collect()
    assert group() is None, "the process group outlived teardown"
    assert len(os.listdir("/proc/self/task")) == threads, "gloo's threads outlived teardown"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads in /proc")
def test_the_differentiable_sum_sums_values_and_gradients_and_teardown_stops_gloo_threads():
    """Forward sums over processes, backward sums the gradients; and nothing keeps the process group alive
    after `teardown`: gloo threads still running when the interpreter shuts down abort the process."""
    torch.multiprocessing.spawn(_sum_then_teardown, (free_port(),), nprocs=2)


def kill_test():
    """tests/kill_test.py as a module (its torchrun command, worker lookup, kill and comparison)."""
    spec = importlib.util.spec_from_file_location("kill_test", Path(__file__).resolve().parent / "kill_test.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow                      # ~30 s on 2 busy cores: two starts of 2 workers each
def test_a_worker_killed_under_torchrun_max_restarts_finishes_bit_identically(runs):
    """SIGKILL one worker (random rank, after a random number of checkpoints, half the time while rank 0
    writes one) under `torchrun --max-restarts 3`: the agent restarts the group, which continues the run by
    itself; weights, optimizer, metrics and test error equal the uninterrupted 2-process run's exactly."""
    kt = kill_test()
    seed = random.randrange(10 ** 6)
    rng = random.Random(seed)
    rank, k, mode = rng.randrange(2), rng.randint(0, 4), rng.choice(["checkpoint", "after-save"])
    out = runs / f"killed-{seed}"
    with open(runs / f"killed-{seed}.log", "w+") as log:
        proc = subprocess.Popen(kt.torchrun(2, 3, "train", *ARGS, f"dataset={runs / 'tiny.npz'}", "--quiet", "--out",
                                            str(out)), env={**os.environ, "OMP_NUM_THREADS": "1"},
                                stdout=subprocess.DEVNULL, stderr=log, text=True)
        pid, _ = kt.find_worker(proc, rank, 0)
        killed = kt.wait_and_kill(proc, out, mode, k, 0.0, victim=pid)
        proc.wait(timeout=240)
        log.seek(0)
        err = log.read()
    why = f"seed {seed}: rank {rank} killed ({mode}) after {k} checkpoints; {err[-3000:]}"
    assert killed and proc.returncode == 0, why
    assert "metassl: torchrun restart 1: continuing the run" in err, why
    assert kt.compare(runs / "two", out) == [], why
