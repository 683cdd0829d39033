#!/usr/bin/env python
"""Kill test: SIGKILL `metassl train` at random moments, resume it each time, and check that the end
result is bit-identical to an uninterrupted run.

    python tests/kill_test.py --trials 12            # ~1-2 minutes on 2 CPU cores
    python tests/kill_test.py --trials 30 --seed 3 --json kill.json

One trial = one SIGKILL followed by a restart. Each process is first let run k more iterations (k
random, up to a third of what is left, so kills spread over the run), then killed one of these ways:
  random          a uniform moment within the next iteration;
  checkpoint      the moment `last.pt.tmp` appears, i.e. while a checkpoint is being written;
  after-save      just after a new `last.pt` has been renamed into place;
  startup         a uniform moment during start-up (before the process writes anything).
After each kill the run directory is classified (mid-write: `last.pt.tmp` left behind; between renames:
`last.pt` missing but `prev.pt` present; during start-up: no checkpoint written by this process; before
the first checkpoint; between checkpoints) and the run is restarted with `metassl train --resume DIR`. A run killed before its first checkpoint has nothing to
resume: `--resume` refuses it with a one-line error, and the run is started again with `--force`.

When an interrupted run finishes, its final weights (the `model`, `ema` and `optimizer` state in
`last.pt`), every record of metrics.jsonl (train losses and eval errors) and results.json's test errors
must equal those of the uninterrupted reference run exactly. If trials remain, a new interrupted run
starts. The last line printed is the summary; the exit status is 0 only if every trial survived.

With `--procs N` (N > 1) every run goes through torchrun's elastic agent instead:
`python -m torch.distributed.run --standalone --nproc-per-node N --max-restarts 3 -m metassl train ...`.
Each SIGKILL hits one worker (a random rank) of the current attempt, the agent restarts the whole group,
and the restarted group continues the run by itself (no `--resume` typed): up to 3 kills per torchrun
command, one per attempt, and its last attempt runs to the end. The reference is an uninterrupted
N-process run; the comparison is the same.

    python tests/kill_test.py --procs 2 --trials 10 --seed 1     # ~5-10 minutes on 2 CPU cores

Data: a synthetic .npz (200 16x16 grey images + 50 test, 4 classes), model=cnn, metamixup, 60
iterations, checkpoint_every=1, device=cpu, threads=1 (deterministic on CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROCESS_TIMEOUT_S = 300
MAX_RESTARTS = 3                 # torchrun --max-restarts (--procs > 1): kills per torchrun command


def make_data(path: Path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)

    def make(n: int) -> tuple:
        y = np.arange(n) % 4
        x = rng.integers(0, 120, (n, 16, 16)).astype(np.int64)
        for k in range(4):
            x[y == k, 4 * k:4 * k + 4, :] += 12                 # class k: a faint band in the noise
        return x.clip(0, 255).astype(np.uint8), y

    x, y = make(200)
    xt, yt = make(50)
    np.savez(path, x=x, y=y, x_test=xt, y_test=yt)


def overrides(data: Path, iterations: int) -> list[str]:
    return [f"dataset={data}", "model=cnn", "algorithm=metamixup", f"iterations={iterations}", "batch_size=16",
            "num_labels=40", "device=cpu", "threads=1", "checkpoint_every=1", "eval_every=10", "log_every=5",
            "warmup=5", "consistency_rampup=10", "ema=0.9", "translate=2"]


def metassl(*args: str) -> list[str]:
    return [sys.executable, "-m", "metassl", *args]


def torchrun(procs: int, restarts: int, *args: str) -> list[str]:
    """`metassl ...` under torchrun's elastic agent (one node, a fresh rendezvous id per command)."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}",
            f"--max-restarts={restarts}", "-m", "metassl", *args]


def workers(launcher: int) -> dict[int, tuple[int, int]]:
    """The worker processes torchrun (pid `launcher`) runs now: pid -> (rank, attempt), from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) != launcher or stat.rsplit(")", 1)[1].split()[0] == "Z":
                continue
            env = dict(kv.split("=", 1) for kv in (entry / "environ").read_text().split("\0") if "=" in kv)
            found[int(entry.name)] = (int(env["RANK"]), int(env["TORCHELASTIC_RESTART_COUNT"]))
        except (OSError, ValueError, KeyError, IndexError):
            continue                    # gone meanwhile, or not a worker
    return found


def alive(pid: int) -> bool:
    """Running, not a zombie that finished on its own."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def env() -> dict[str, str]:
    e = dict(os.environ, METASSL_OFFLINE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    e["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + e.get("PYTHONPATH", "")
    return e


def progress(run: Path) -> int:
    """The last iteration recorded in metrics.jsonl (0 if none)."""
    try:
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return max((json.loads(l)["iteration"] for l in lines if l.strip()), default=0)
    except (OSError, ValueError, KeyError):
        return 0


def identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a file: changes whenever a new checkpoint is renamed into place."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def classify(run: Path, at_start: tuple[int, int] | None) -> str:
    """Where in the checkpoint cycle the kill landed, judged from what is on disk."""
    if (run / "last.pt.tmp").exists():
        return "mid-checkpoint-write"
    if not (run / "last.pt").exists() and (run / "prev.pt").exists():
        return "between-renames"
    if not (run / "last.pt").exists():
        return "before-first-checkpoint"
    if identity(run / "last.pt") == at_start:
        return "during-startup-or-resume"
    return "between-checkpoints"


def wait_and_kill(proc: subprocess.Popen, run: Path, mode: str, k: int, delay: float, victim: int | None = None) -> bool:
    """Kill `proc` (or its worker `victim`) per `mode` once k checkpoints have been written; False if it
    finished on its own first."""
    def done() -> bool:
        return proc.poll() is not None or victim is not None and not alive(victim)

    def sleep_until(deadline: float) -> bool:
        while time.monotonic() < deadline:
            if done():
                return False
            time.sleep(0.002)
        return True

    give_up = time.monotonic() + PROCESS_TIMEOUT_S
    if mode == "startup":
        if not sleep_until(time.monotonic() + delay):
            return False
    else:
        seen, written = identity(run / "last.pt"), 0
        while written < k or mode == "after-save" and written <= k:
            if done() or time.monotonic() > give_up:
                return False
            now = identity(run / "last.pt")
            if now is not None and now != seen:
                seen, written = now, written + 1
            time.sleep(0.0005)
        if mode == "random" and not sleep_until(time.monotonic() + delay):
            return False
        while mode == "checkpoint" and not (run / "last.pt.tmp").exists():
            if done() or time.monotonic() > give_up:
                return False
            time.sleep(0.0002)
    if victim is None:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True
    if not alive(victim):
        return False
    os.kill(victim, signal.SIGKILL)
    return True


def find_worker(proc: subprocess.Popen, rank: int, attempt: int) -> tuple[int, int] | None:
    """(pid, attempt) of worker `rank` of the first attempt >= `attempt` to start; None if torchrun ended."""
    give_up = time.monotonic() + PROCESS_TIMEOUT_S
    while proc.poll() is None and time.monotonic() < give_up:
        for pid, (r, a) in workers(proc.pid).items():
            if r == rank and a >= attempt:
                return pid, a
        time.sleep(0.002)
    return None


def compare(ref: Path, run: Path) -> list[str]:
    """Differences between two finished runs (empty: bit-identical)."""
    import torch

    problems = []
    a = torch.load(ref / "last.pt", map_location="cpu", weights_only=True)
    b = torch.load(run / "last.pt", map_location="cpu", weights_only=True)

    def same(x, y) -> bool:
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return isinstance(y, (list, tuple)) and len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
        return x == y

    def untimed(records: list[dict]) -> list[dict]:   # train_seconds is a clock reading, never bit-identical
        return [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]

    a["history"], b["history"] = untimed(a["history"]), untimed(b["history"])
    for key in ("iteration", "model", "ema", "optimizer", "history"):
        if not same(a[key], b[key]):
            problems.append(f"last.pt[{key}] differs")
    ma, mb = (untimed([json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]) for d in (ref, run))
    if ma != mb:
        problems.append(f"metrics.jsonl differs ({len(ma)} vs {len(mb)} records)")
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (ref, run))
    for key in ("test_error", "test_error_median_last5", "val_error"):
        if ra.get(key) != rb.get(key):
            problems.append(f"results.json {key}: {ra.get(key)} vs {rb.get(key)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10, help="SIGKILLs to survive (default 10)")
    ap.add_argument("--iterations", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    ap.add_argument("--workdir", help="where runs go (default: a temporary folder, removed afterwards)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", help="also write the counts to this JSON file")
    ap.add_argument("--procs", type=int, default=1,
                    help=f"processes; > 1 runs under torchrun --max-restarts {MAX_RESTARTS} and kills one worker")
    args = ap.parse_args(argv)
    rng = random.Random(args.seed)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="metassl-kill-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        return _run(args, rng, work)
    finally:
        if not args.keep and not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def _run(args: argparse.Namespace, rng: random.Random, work: Path) -> int:
    data = work / "data.npz"
    make_data(data)
    cfg = overrides(data, args.iterations)
    ref = work / "reference"
    shutil.rmtree(ref, ignore_errors=True)
    t0 = time.monotonic()
    train = ["train", *cfg, "--out", str(ref), "--quiet"]
    log = open(work / "reference.log", "w+")
    proc = subprocess.Popen(metassl(*train) if args.procs == 1 else torchrun(args.procs, 0, *train), env=env(),
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    first_ckpt = None
    while proc.poll() is None:
        if first_ckpt is None and (ref / "last.pt").exists():
            first_ckpt = time.monotonic() - t0
        time.sleep(0.005)
    if proc.returncode != 0:
        log.seek(0)
        print(f"kill_test: the reference run failed (exit {proc.returncode}): {log.read()[-2000:]}")
        return 1
    t_total = time.monotonic() - t0
    t_start = first_ckpt or t_total / 2
    t_train = max(0.5, t_total - t_start)
    print(f"kill_test: reference run {t_total:.1f} s (first checkpoint after {t_start:.1f} s)", flush=True)

    k = Kills(args, rng, cfg, t_start, t_train / args.iterations)
    while k.kills < args.trials:
        k.chains += 1
        run = work / f"interrupted{k.chains}"
        shutil.rmtree(run, ignore_errors=True)
        n_chain, failure = (k.single_chain(run) if args.procs == 1 else k.torchrun_chain(run, work))
        if failure is None:
            problems = compare(ref, run)
            failure = f"run {k.chains} ({n_chain} kills): " + "; ".join(problems) if problems else None
        if failure:
            k.failures.append(failure)
        k.outcomes.append((n_chain, not k.failures))
        if k.failures:
            break

    survived = sum(n for n, ok in k.outcomes if ok)
    survived_chains = sum(ok for _, ok in k.outcomes)
    records = len((ref / "metrics.jsonl").read_text().splitlines())
    evals = sum('"kind": "eval"' in l for l in (ref / "metrics.jsonl").read_text().splitlines())
    test_error = json.loads((ref / "results.json").read_text())["test_error"]
    counts = {"trials": k.kills, "survived": survived, "where": k.where, "prev_pt_fallbacks": k.fell_back,
              "restarted_with_force": k.forced, "processes_started": k.restarts, "interrupted_runs": k.chains,
              "identical_runs": survived_chains, "records_compared": records, "eval_records": evals,
              "test_error": test_error, "failures": k.failures, "iterations": args.iterations, "seed": args.seed,
              "procs": args.procs, "killed_ranks": k.ranks, "extra_restarts": k.extra_restarts}
    if args.json:
        Path(args.json).write_text(json.dumps(counts, indent=1))
    for f in k.failures:
        print(f"kill_test: FAILED {f}")
    spots = ", ".join(f"{v} {w}" for w, v in sorted(k.where.items()))
    how = (f"{k.fell_back} resumes fell back to prev.pt, {k.forced} runs killed before their first checkpoint "
           f"restarted with --force" if args.procs == 1 else
           f"{args.procs} processes under torchrun --max-restarts {MAX_RESTARTS}; killed rank "
           + ", ".join(f"{r}: {n}" for r, n in sorted(k.ranks.items()))
           + f"; {k.fell_back} resumes fell back to prev.pt, {k.extra_restarts} restarts beyond one per kill")
    print(f"kill_test: {survived}/{k.kills} trials survived ({spots}; {how}); "
          f"{survived_chains}/{k.chains} interrupted runs bit-identical to the uninterrupted one "
          f"(last.pt model/ema/optimizer, {records} metrics.jsonl records incl. {evals} evals, "
          f"results.json test_error {test_error:.2f}%)")
    return 0 if not k.failures and survived == k.kills and k.kills >= args.trials else 1


class Kills:
    """The kill schedule and what the kills found, over all interrupted runs."""

    MODES = ["random", "checkpoint", "after-save", "startup", "checkpoint"]

    def __init__(self, args: argparse.Namespace, rng: random.Random, cfg: list[str], t_start: float,
                 t_iter: float) -> None:
        self.args, self.rng, self.cfg, self.t_start, self.t_iter = args, rng, cfg, t_start, t_iter
        self.kills, self.chains, self.restarts, self.fell_back, self.forced, self.extra_restarts = 0, 0, 0, 0, 0, 0
        self.where: dict[str, int] = {}
        self.ranks: dict[int, int] = {}
        self.failures: list[str] = []
        self.outcomes: list[tuple[int, bool]] = []      # (kills in the interrupted run, bit-identical at the end)

    def plan(self, run: Path) -> tuple[str, int, float]:
        """The next kill: its mode, checkpoints to wait for, and delay."""
        mode = self.MODES[self.kills % len(self.MODES)]
        k = self.rng.randint(0, max(1, (self.args.iterations - progress(run)) // 3))
        return mode, k, self.rng.uniform(0, self.t_start if mode == "startup" else self.t_iter)

    def landed(self, run: Path, at_start: tuple[int, int] | None, mode: str, who: str = "") -> None:
        self.kills += 1
        spot = classify(run, at_start)
        self.where[spot] = self.where.get(spot, 0) + 1
        print(f"kill_test: trial {self.kills}: SIGKILL ({mode}){who} landed {spot} at iteration ~{progress(run)}",
              flush=True)

    def single_chain(self, run: Path) -> tuple[int, str | None]:
        """One process, killed and restarted with `metassl train --resume DIR` until it finishes."""
        cmd = metassl("train", *self.cfg, "--out", str(run), "--quiet")
        n_chain = 0
        while True:
            proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            self.restarts += 1
            at_start = identity(run / "last.pt")
            mode = None
            if self.kills < self.args.trials:
                mode, k, delay = self.plan(run)
            if mode is not None and wait_and_kill(proc, run, mode, k, delay):
                n_chain += 1
                self.landed(run, at_start, mode)
                proc.stderr.close()
                resumable = (run / "config.json").exists() and any((run / n).exists() for n in ("last.pt", "prev.pt"))
                cmd = (metassl("train", "--resume", str(run), "--quiet") if resumable
                       else metassl("train", *self.cfg, "--out", str(run), "--quiet", "--force"))
                self.forced += not resumable
                continue
            try:
                _, err = proc.communicate(timeout=PROCESS_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                return n_chain, f"run {self.chains}: a process hung"
            self.fell_back += err.count("resuming from prev.pt")
            if proc.returncode != 0:
                return n_chain, f"run {self.chains}: exit {proc.returncode}: {err.strip()[-500:]}"
            return n_chain, None

    def torchrun_chain(self, run: Path, work: Path) -> tuple[int, str | None]:
        """One torchrun command: a random worker of each attempt killed (up to MAX_RESTARTS), the agent
        restarts the group, which continues the run by itself; the last attempt runs to the end."""
        log_path = work / f"interrupted{self.chains}.log"
        log = open(log_path, "w")
        proc = subprocess.Popen(torchrun(self.args.procs, MAX_RESTARTS, "train", *self.cfg, "--out", str(run), "--quiet"),
                                env=env(), stdout=subprocess.DEVNULL, stderr=log, text=True)
        n_chain, attempt, extra = 0, 0, 0
        while n_chain < MAX_RESTARTS and self.kills < self.args.trials:
            rank = self.rng.randrange(self.args.procs)
            found = find_worker(proc, rank, attempt)
            if found is None:
                break
            pid, started = found
            extra += started - attempt                   # an attempt that failed without our kill
            self.restarts += 1
            at_start = identity(run / "last.pt")
            mode, k, delay = self.plan(run)
            if not wait_and_kill(proc, run, mode, k, delay, victim=pid):
                break
            n_chain += 1
            self.ranks[rank] = self.ranks.get(rank, 0) + 1
            self.landed(run, at_start, mode, f" of rank {rank} (attempt {started})")
            attempt = started + 1
        try:
            proc.wait(timeout=PROCESS_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            return n_chain, f"run {self.chains}: torchrun hung (log: {log_path})"
        log.close()
        err = log_path.read_text(errors="replace")
        self.fell_back += err.count("resuming from prev.pt")
        self.extra_restarts += max(extra, err.count("metassl: torchrun restart ") - n_chain)
        if proc.returncode != 0:
            return n_chain, f"run {self.chains}: torchrun exit {proc.returncode} after {n_chain} kills (log: {log_path})"
        return n_chain, None


if __name__ == "__main__":
    sys.exit(main())
