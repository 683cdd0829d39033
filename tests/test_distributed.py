"""torchrun on CPU (gloo): 2 processes with B/2 each compute what 1 process with B computes; resume works,
and a worker SIGKILLed under `torchrun --max-restarts` is survived bit-identically."""
import importlib.util
import json
import os
import random
import shutil
import socket
import subprocess
import sys
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
