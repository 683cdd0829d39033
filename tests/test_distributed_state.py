"""Algorithms that keep state across steps under torchrun (2 processes, gloo on CPU): every process updates it
from the global batch, so it equals one process's with the whole batch, and rank 0's checkpoint restores it on
every rank; an algorithm that cannot run distributed is refused in one line. One torchrun launch
(tests/distributed_worker.py) serves every test here."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metassl.run import distributed
from metassl.algorithms import ALGORITHMS, build_algorithm
from metassl.config import Config
from metassl.errors import UserError
from tests.conftest import write_tiny_npz
from tests.distributed_worker import ALGOS, steps
from tests.test_distributed import free_port

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
ROOT = Path(__file__).resolve().parents[1]


def launch_worker(out: Path, npz: Path, root: Path = ROOT) -> subprocess.CompletedProcess:
    """One torchrun launch of tests/distributed_worker.py (2 processes) from the tree at `root`, writing to `out`
    (also run over and over, under CPU load, by scripts/stress_distributed.py)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2", "--master-addr=127.0.0.1",
           f"--master-port={free_port()}", "-m", "tests.distributed_worker", str(out), str(npz)]
    path = os.pathsep.join([str(root), str(root / "src"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
    return subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp-state")
    res = launch_worker(out, write_tiny_npz(out / "tiny.npz"))
    assert res.returncode == 0, res.stderr[-3000:]
    return out


def assert_same(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0 if exact else 1e-5, atol=0 if exact else 1e-6, msg=k)


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_two_processes_update_the_state_from_the_global_batch_as_one_process_does(launched, name):
    """After 4 steps on half batches each, both processes hold the state (and weights: FreeMatch's fairness
    sums run over the global batch too) of one process stepping on the whole batches."""
    torch.set_num_threads(1)
    one = steps(name, distributed.Dist())
    if name == "flexmatch":
        assert (one["algorithm"]["selected"] >= 0).sum() > 4           # the status holds confident predictions
    for rank in (0, 1):
        two = torch.load(launched / f"steps-{name}-rank{rank}.pt", weights_only=True)
        assert_same(two["algorithm"], one["algorithm"])
        assert_same(two["model"], one["model"])


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_a_resumed_two_process_run_restores_the_state_on_every_rank(launched, name):
    """Every rank's state equals rank 0's (the one its checkpoint holds); resumed from the checkpoint of
    iteration 3, every rank ends with the uninterrupted run's state."""
    ranks = [torch.load(launched / f"trained-{name}-rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["full"]
    for state in ranks:
        assert_same(state["full"], ranks[0]["full"], exact=True)
        assert_same(state["resumed"], ranks[0]["full"])


def test_mpl_is_refused_under_torchrun_in_one_line(launched):
    expected = ("algorithm=mpl runs in one process only and this run has 2; launch it without torchrun "
                "(or with --nproc-per-node 1)")
    assert [(launched / f"mpl-rank{r}.txt").read_text() for r in (0, 1)] == [expected, expected]
    assert not (launched / "mpl" / "config.json").exists()               # refused before the run directory was made
    with pytest.raises(UserError, match="^algorithm=mpl runs in one process only"):
        build_algorithm(Config(algorithm="mpl"), processes=2)
    assert [n for n, cls in ALGORITHMS.items() if not cls.distributed] == ["mpl"]
