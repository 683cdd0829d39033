"""Shared by the bad-input suites (test_bad_input.py: settings, command lines, run directories;
test_bad_data_files.py: corrupt data files; test_predict.py: prediction inputs): the command that succeeds,
the one-line-error check of the CLI and the same check of the Python API, which must answer in its own words."""
from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Callable

import pytest
from hypothesis import HealthCheck, settings

from metassl.cli import main
from metassl.errors import UserError
from tests.conftest import make_tiny_data, write_tiny_npz

_fresh = itertools.count()
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# A training command that succeeds on GOOD_NPZ (test_the_base_command_is_valid); each case spoils one thing.
BASE = ["train", "--quiet", "device=cpu", "threads=1", "iterations=1", "batch_size=4", "num_labels=8",
        "eval_every=1", "log_every=1", "checkpoint_every=1", "warmup=0", "consistency_rampup=0"]
N_TRAIN, N_CLASSES = 40, 4


pytestmark = pytest.mark.usefixtures("isolated")   # conftest.py: no real data, cache, env or network


TINY = make_tiny_data(n_train=N_TRAIN, n_test=8, size=8, classes=N_CLASSES)
G = {"x": TINY.x_train, "y": TINY.y_train, "x_test": TINY.x_test, "y_test": TINY.y_test}   # (N, 8, 8, 1) uint8


@pytest.fixture(scope="module")
def good_npz(tmp_path_factory) -> Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "good.npz", TINY)


def fresh(tmp_path: Path) -> Path:
    """A new, not yet existing path in tmp_path, for a run or a data set (hypothesis reuses tmp_path across examples)."""
    return tmp_path / f"run{next(_fresh)}"


def rejects(argv: list[str], capsys, out: Path | None) -> str:
    """main(argv) must print exactly one `metassl: error:` line on stderr, return 2 and not create `out`."""
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert rc == 2, f"{argv!r}: exit {rc}, stderr {cap.err[-1500:]!r}"
    assert len(lines) == 1 and lines[0].startswith("metassl: error: "), f"{argv!r}: stderr {cap.err!r}"
    if out is not None:
        assert not out.exists(), f"{argv!r} left {out} behind: {sorted(p.name for p in out.iterdir())}"
    return lines[0]


CLI_WORDS = re.compile(r"--(resume|force|out)\b|\bINPUT\b")   # what Python calls resume=True, run_dir, images...


def python_rejects(call: Callable[[], object], out: Path | None = None) -> UserError:
    """call() must raise UserError whose message is one line in Python's words (no --flags), and not create `out`."""
    with pytest.raises(UserError) as info:
        call()
    msg = str(info.value)
    assert len(msg.splitlines()) == 1 and not CLI_WORDS.search(msg), msg
    if out is not None:
        assert not out.exists(), f"{msg!r} left {out} behind"
    return info.value


def train_from_python(overrides: list[str], out: Path, extra: list[str] = ()) -> None:
    """What `metassl train <overrides> <extra> --out out` does, through the Python API (build_config, train)."""
    from metassl.algorithms import build_config
    from metassl.train import train

    flag, rest, args = {}, [], iter(extra)
    for a in args:
        if a in ("--preset", "--config"):
            flag[a] = next(args)
        elif a != "--force":
            rest.append(a)
    cfg = build_config(flag.get("--preset"), flag.get("--config"), list(overrides) + rest)
    train(cfg, out, force="--force" in extra, quiet=True)


def train_rejects(overrides: list[str], capsys, tmp_path: Path, data: Path | None = None,
                  extra: list[str] = ()) -> str:
    """The spoiled command is refused alike by the CLI (one line, exit 2) and by Python (UserError, one line,
    its rendering for the CLI being the CLI's line); neither creates the run directory. The CLI's line."""
    out = fresh(tmp_path)
    ds = [f"dataset={data}"] if data is not None else []
    line = rejects(BASE + ds + list(overrides) + list(extra) + ["--out", str(out)], capsys, out)
    e = python_rejects(lambda: train_from_python(BASE[2:] + ds + list(overrides), out, list(extra)), out)
    assert line == f"metassl: error: {e.cli}" or line.endswith("--help`)"), (line, e.cli)   # else: argparse's
    return line
