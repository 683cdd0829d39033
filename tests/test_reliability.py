"""Reliability: killed runs resume exactly, checkpoints never tear, SIGTERM/SIGINT stop with a checkpoint,
divergence stops the run and keeps the last good checkpoint (docs/RELIABILITY.md)."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from metassl.run import checkpoint
from metassl.cli import main
from metassl.algorithms import build_config
from metassl.errors import Interrupted, UserError
from metassl.run.safety import DivergenceWatch, StopSignals
from metassl.train import train
from tests.conftest import make_tiny_data, write_tiny_npz

ROOT = Path(__file__).resolve().parents[1]
TINY = ["device=cpu", "batch_size=16", "num_labels=40", "warmup=2", "consistency_rampup=4", "translate=1", "ema=0.9"]
LOG = ["log_every=1", "eval_every=5"]
SUB = ["threads=1"]                       # only in subprocesses: set_num_threads would leak into the test process


def env() -> dict[str, str]:
    return dict(os.environ, METASSL_OFFLINE="1", PYTHONPATH=str(ROOT / "src"))


def metassl(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "metassl", *args], capture_output=True, text=True, env=env(),
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "tiny.npz")


def untimed(records: list[dict]) -> list[dict]:
    """Records without `train_seconds` (a clock reading: it differs between any two runs)."""
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]


def assert_same_run(a: Path, b: Path) -> None:
    """Bit-identical final weights, optimizer state, eval history, metrics.jsonl and test error (every
    record the same but its training-time clock, which must still grow from one evaluation to the next)."""
    sa, sb = checkpoint.load(a), checkpoint.load(b)
    assert sa["iteration"] == sb["iteration"]
    for key in ("model", "ema"):
        for name, t in sa[key].items():
            assert torch.equal(t, sb[key][name]), f"{key}.{name}"
    for i, st in sa["optimizer"]["state"].items():
        assert torch.equal(st["momentum_buffer"], sb["optimizer"]["state"][i]["momentum_buffer"])
    assert untimed(sa["history"]) == untimed(sb["history"])
    ma, mb = ([json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b))
    assert untimed(ma) == untimed(mb)
    for records in (sb["history"], [r for r in mb if r["kind"] == "eval"]):
        clock = [r["train_seconds"] for r in records]
        assert clock == sorted(clock) and clock[0] > 0      # cumulative across the resume
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert ra["test_error"] == rb["test_error"] and ra["test_error_median_last5"] == rb["test_error_median_last5"]


# ----------------------------------------------------------------------------- SIGKILL at random moments

@pytest.mark.slow
def test_kill_test_survives_ten_sigkills_bit_identically(tmp_path):
    """tests/kill_test.py: 10 SIGKILLs (some while a checkpoint is being written), resumed each time
    (40 iterations instead of 60 to stay well under 2 minutes on 2 shared cores)."""
    report = tmp_path / "kill.json"
    p = subprocess.run([sys.executable, str(ROOT / "tests" / "kill_test.py"), "--trials", "10", "--iterations", "40",
                        "--json", str(report)], capture_output=True, text=True, env=env(), timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    counts = json.loads(report.read_text())
    assert counts["trials"] >= 10 and counts["survived"] == counts["trials"] and not counts["failures"]
    assert counts["where"].get("mid-checkpoint-write", 0) >= 1, counts
    assert counts["identical_runs"] == counts["interrupted_runs"] >= 1
    print(p.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- SIGTERM / SIGINT

@pytest.fixture(scope="module")
def reference_run(npz, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ref") / "run"
    p = metassl("train", f"dataset={npz}", "iterations=20", "checkpoint_every=1000", *TINY, *LOG, *SUB,
                "--out", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    return out


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_with_a_checkpoint_and_resume_is_identical(sig, npz, reference_run, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "metassl", "train", f"dataset={npz}", "iterations=20",
                             "checkpoint_every=1000", *TINY, *LOG, *SUB, "--out", str(out), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and len((out / "metrics.jsonl").read_text().splitlines()) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and re.match(rf"metassl: stopped by {sig.name} after iteration \d+/20; checkpoint saved",
                                        lines[0]), err
    stopped_at = int(re.search(r"iteration (\d+)/", lines[0]).group(1))
    assert 3 <= stopped_at < 20
    assert checkpoint.load(out)["iteration"] == stopped_at       # written by the stop, not by checkpoint_every
    assert not (out / "results.json").exists()
    p = metassl("train", "--resume", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    assert_same_run(reference_run, out)


class SignalOnForward(nn.Module):
    """A small CNN that sends `sig` to its own process on the k-th training forward."""

    def __init__(self, sig: int, k: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, 4))
        self.sig, self.k, self.calls = sig, k, 0

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.k:
                os.kill(os.getpid(), self.sig)
        return self.net(x)


def test_in_process_stop_restores_the_previous_handlers(tmp_path):
    seen, sigint_before = [], signal.getsignal(signal.SIGINT)
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))   # a harmless handler to restore
    try:
        cfg = build_config(None, None, TINY + LOG + ["iterations=10", "checkpoint_every=100", "algorithm=supervised"])
        with pytest.raises(Interrupted) as info:
            train(cfg, tmp_path / "run", model=SignalOnForward(signal.SIGTERM, 4), data=make_tiny_data(), quiet=True)
        assert info.value.exit_code == 143 and "after iteration 4/10" in str(info.value)
        assert checkpoint.load(tmp_path / "run")["iteration"] == 4
        handler = signal.getsignal(signal.SIGTERM)
        assert handler is not None and handler.__name__ == "<lambda>" and not seen    # restored, never called
        assert signal.getsignal(signal.SIGINT) is sigint_before
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_handlers_only_in_the_main_thread():
    box = {}

    def worker():
        with StopSignals() as s:
            box["installed"] = bool(s._previous)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert box == {"installed": False}


def test_signal_before_the_run_directory_exists_writes_nothing(tmp_path):
    stop = StopSignals()
    with stop, pytest.raises(Interrupted) as info:
        stop._handle(signal.SIGTERM, None)                      # not armed yet: stop at once
    assert info.value.exit_code == 143 and "nothing was written" in str(info.value)


# ----------------------------------------------------------------------------- checkpoints

def _save_two(run: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    checkpoint.save({"iteration": 1, "model": {"w": torch.zeros(1000)}}, run)
    checkpoint.save({"iteration": 2, "model": {"w": torch.ones(1000)}}, run)


@pytest.mark.parametrize("damage", ["truncated", "bit-flip", "empty", "missing", "garbage", "not-a-checkpoint"])
def test_damaged_last_falls_back_to_prev_with_a_warning(damage, tmp_path, capsys):
    run = tmp_path / "run"
    _save_two(run)
    last = run / "last.pt"
    raw = last.read_bytes()
    if damage == "truncated":
        last.write_bytes(raw[: len(raw) // 2])
    elif damage == "bit-flip":                                   # inside the tensor data: torch.load alone accepts it
        i = raw.index(np.ones(1, np.float32).tobytes() * 8)
        last.write_bytes(raw[:i] + bytes([raw[i] ^ 0x10]) + raw[i + 1:])
        state = torch.load(last, weights_only=True)
        assert not torch.equal(state["model"]["w"], torch.ones(1000))   # silently wrong without the digest
    elif damage == "empty":
        last.write_bytes(b"")
    elif damage == "missing":
        last.unlink()
    elif damage == "garbage":
        last.write_bytes(os.urandom(len(raw)))
    else:
        torch.save([1, 2, 3], last)
    capsys.readouterr()
    state = checkpoint.load(run)
    assert state["iteration"] == 1 and torch.equal(state["model"]["w"], torch.zeros(1000))
    err = capsys.readouterr().err
    assert err.startswith("metassl: warning:") and "prev.pt" in err and len(err.strip().splitlines()) == 1


def test_both_damaged_is_a_user_error(tmp_path):
    run = tmp_path / "run"
    _save_two(run)
    for name in ("last.pt", "prev.pt"):
        (run / name).write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(UserError, match="no readable checkpoint"):
        checkpoint.load(run)


def test_load_is_weights_only_and_runs_no_code(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    run = tmp_path / "run"
    _save_two(run)
    torch.save({"iteration": 3, "model": {}, "x": Evil()}, run / "last.pt")
    calls = []
    real = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: calls.append(kw) or real(*a, **kw))
    assert checkpoint.load(run)["iteration"] == 1 and not marker.exists()   # refused, fell back to prev.pt
    assert calls and all(kw.get("weights_only") is True for kw in calls)


def test_a_kill_between_the_two_renames_leaves_a_complete_checkpoint(tmp_path, monkeypatch):
    """save(): new file complete and fsynced first; killed after last->prev, prev.pt is used."""
    run = tmp_path / "run"
    _save_two(run)
    real_replace, calls = os.replace, []

    def replace_then_die(a, b):
        calls.append((Path(a).name, Path(b).name))
        if len(calls) == 2:
            raise KeyboardInterrupt                              # killed before tmp -> last
        real_replace(a, b)

    monkeypatch.setattr(checkpoint.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"iteration": 3, "model": {"w": torch.full((3,), 3.0)}}, run)
    monkeypatch.undo()
    assert calls[0] == ("last.pt", "prev.pt") and not (run / "last.pt").exists()
    assert checkpoint.load(run)["iteration"] == 2


def test_a_failed_checkpoint_write_keeps_the_previous_and_is_one_line(tmp_path, monkeypatch):
    run = tmp_path / "run"
    _save_two(run)

    def disk_full(*a, **kw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", disk_full)
    with pytest.raises(UserError, match="No space left on device"):
        checkpoint.save({"iteration": 3, "model": {}}, run)
    monkeypatch.undo()
    assert not (run / "last.pt.tmp").exists() and checkpoint.load(run)["iteration"] == 2


def test_resume_from_a_truncated_last_checkpoint_is_identical(npz, tmp_path):
    """last.pt torn (e.g. by a disk failure): --resume warns, continues from prev.pt and ends identical."""
    ref, out = tmp_path / "ref", tmp_path / "run"
    p = metassl("train", f"dataset={npz}", "iterations=12", "checkpoint_every=3", *TINY, *LOG, *SUB, "--out", str(ref),
                "--quiet")
    assert p.returncode == 0, p.stderr
    shutil.copytree(ref, out)
    raw = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(raw[: len(raw) // 3])          # iteration 12 torn: prev.pt holds 9
    p = metassl("train", "--resume", str(out), "--quiet")
    assert p.returncode == 0, p.stderr
    assert "metassl: warning:" in p.stderr and "resuming from prev.pt (iteration 9)" in p.stderr
    assert_same_run(ref, out)


# ----------------------------------------------------------------------------- divergence

def test_divergence_watch_keeps_the_first_iteration_and_terms():
    w = DivergenceWatch()
    ok = {"loss": torch.tensor(1.0), "loss_cons": torch.tensor(0.5), "pseudo_labels": torch.ones(4, 3) / 3}
    for n in range(1, 7):
        w.update(n, ok)
    assert w.check() is None
    w.update(7, {**ok, "loss_cons": torch.tensor(float("inf")), "pseudo_labels": torch.full((4, 3), float("nan"))})
    w.update(8, {k: torch.full_like(v, float("nan")) for k, v in ok.items()})
    assert w.check() == (7, ["loss_cons", "pseudo_labels"])


def _diverge(argv: list[str], capsys) -> tuple[str, Path]:
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("metassl: error: training diverged"), err
    return err[0], Path(argv[argv.index("--out") + 1])


def _finite_checkpoint(out: Path) -> int:
    state = checkpoint.load(out)
    for key in ("model", "ema"):
        for name, t in state[key].items():
            assert not t.is_floating_point() or bool(torch.isfinite(t).all()), f"{key}.{name}"
    return int(state["iteration"])


def test_huge_meta_step_stops_with_iteration_and_term_and_keeps_a_finite_checkpoint(npz, tmp_path, capsys):
    """beta_t grows past float32 (cosine shape: beta * t / warmup): y^ = proj(y~ - beta_t g) turns NaN."""
    line, out = _diverge(["train", f"dataset={npz}", *TINY, "algorithm=meta", "beta_schedule=cosine", "beta=1e40",
                          "warmup=1000", "iterations=60", "checkpoint_every=2", "log_every=50", "eval_every=50",
                          "--quiet", "--out", str(tmp_path / "run")], capsys)
    m = re.search(r"diverged at iteration (\d+): (.*) (?:is|are) NaN/Inf; stopped at iteration (\d+) and the last good "
                  r"checkpoint \(iteration (\d+)\)", line)
    assert m and "pseudo_labels" in m.group(2), line
    first, stopped, kept = int(m.group(1)), int(m.group(3)), int(m.group(4))
    assert kept < first <= stopped and stopped - kept <= 2
    assert _finite_checkpoint(out) == kept
    assert not (out / "results.json").exists()


def test_exploding_lr_stops_and_keeps_a_finite_checkpoint(npz, tmp_path, capsys):
    line, out = _diverge(["train", f"dataset={npz}", *TINY, "algorithm=supervised", "lr=10", "momentum=0.99",
                          "warmup=0", "iterations=200", "checkpoint_every=5", "log_every=50", "eval_every=50",
                          "--quiet", "--out", str(tmp_path / "run")], capsys)
    kept = int(re.search(r"last good checkpoint \(iteration (\d+)\)", line).group(1))
    assert re.search(r"diverged (at|by) iteration \d+: ", line)
    assert _finite_checkpoint(out) == kept


def test_nan_between_checkpoints_is_never_saved(tmp_path):
    """A loss that turns NaN at a step that is neither logged nor evaluated stops the run at the next save."""

    class NaNAfter(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(144, 4)
            self.calls = 0

        def forward(self, x):
            out = self.lin(x.flatten(1))
            if self.training:
                self.calls += 1
                if self.calls >= 7:
                    out = out * float("nan")
            return out

    cfg = build_config(None, None, TINY + ["iterations=20", "checkpoint_every=5", "log_every=100",
                                                "eval_every=100", "algorithm=supervised"])
    with pytest.raises(UserError, match=r"diverged at iteration 7: loss.* stopped at iteration 10 .*iteration 5\)"):
        train(cfg, tmp_path / "run", model=NaNAfter(), data=make_tiny_data(), quiet=True)
    assert _finite_checkpoint(tmp_path / "run") == 5


# ----------------------------------------------------------------------------- torchrun restarts (in process)

@pytest.fixture
def torchrun_env(monkeypatch):
    """This process as a worker of torchrun launch `job` (one process); returns a setter for the restart count."""
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job")
    monkeypatch.setenv("GROUP_WORLD_SIZE", "1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)

    def attempt(n: int, run_id: str = "job") -> None:
        monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", str(n))
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", run_id)
    return attempt


def test_a_torchrun_restart_continues_its_run_exactly_past_a_torn_metrics_line(torchrun_env, tmp_path, capsys):
    """torchrun re-runs the same command after a worker died: the run continues from its checkpoint (no
    --resume typed), metrics.jsonl is cut back to it, a torn last line is dropped with a warning, and the end
    is bit-identical to the uninterrupted run."""
    cfg = build_config(None, None, TINY + LOG + ["iterations=10", "checkpoint_every=4"])
    ref, out = tmp_path / "ref", tmp_path / "run"
    torchrun_env(0)
    train(cfg, ref, data=make_tiny_data(), quiet=True)
    shutil.copytree(ref, out)
    shutil.copy(out / "prev.pt", out / "last.pt")                # killed after the iteration-8 checkpoint
    (out / "results.json").unlink()
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"iteration": 11, "kind": "tra')                # a power loss mid-append
    capsys.readouterr()
    torchrun_env(1)
    train(cfg, out, data=make_tiny_data(), quiet=True)
    err = capsys.readouterr().err
    assert f"torchrun restart 1: continuing the run in {out}" in err
    assert re.search(r"metassl: warning: .*metrics.jsonl line 13 is not a whole record", err), err
    assert_same_run(ref, out)


def test_a_first_attempt_or_another_launch_still_refuses_an_existing_run(torchrun_env, tmp_path):
    run = tmp_path / "run"
    torchrun_env(0)
    cfg = build_config(None, None, TINY + ["iterations=4", "checkpoint_every=2", "eval_every=4", "log_every=4"])
    train(cfg, run, data=make_tiny_data(), quiet=True)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    for restart, run_id in ((0, "job"), (1, "another-job")):     # a new command, or a restart of another launch
        torchrun_env(restart, run_id)
        with pytest.raises(UserError, match="already exists; pass resume=True"):
            train(cfg, run, data=make_tiny_data(), quiet=True)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    torchrun_env(1)                                              # its own launch with --force: continued, not cleared
    train(cfg, run, data=make_tiny_data(), force=True, quiet=True)
    assert checkpoint.load(run)["iteration"] == 4 and (run / "metrics.jsonl").read_bytes() == before["metrics.jsonl"]


def test_restarted_run_decides_from_the_launch_mark(tmp_path):
    from metassl.run.rundir import RunDir

    run = RunDir(tmp_path / "run")
    assert run.restarted("job@h:1") == "new"                     # never created
    run.path.mkdir()
    run.mark_launch("job@h:1")
    assert run.restarted("job@h:1") == "start-over"              # killed before config.json: start it over
    (run.path / "config.json").write_text("{}")
    assert run.restarted("job@h:1") == "resume"
    assert run.restarted("job@h:2") == run.restarted(None) == "new"   # another torchrun command
    (run.path / "launch.json").write_text('{"torchrun": "job@h')  # torn mark: not ours
    assert run.restarted("job@h:1") == "new"
