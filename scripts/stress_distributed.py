"""Launch the 2-process torchrun test worker (tests/distributed_worker.py) over and over while busy loops load
the CPUs, and count how the launches ended: a rank killed by SIGABRT at exit ("terminate called without an
active exception") shows up only now and then, so one passing test run says little. Not part of `make test`.

    nice -n 10 .venv/bin/python scripts/stress_distributed.py --launches 50 --load 2 \\
        --out results/distributed-stress/after.json

The busy loops run at this script's priority and the launches --nice-gap below it: the workers' threads are
then preempted often, as under a machine's other jobs. Prints one summary line; --out gets a JSON record
(machine, date, tree, counts, the failures' stderr tails), rewritten after every launch.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

import torch  # noqa: E402

from tests.conftest import write_tiny_npz  # noqa: E402
from tests.test_distributed_state import launch_worker  # noqa: E402

ABORT = "terminate called without an active exception"


def outcome(res: subprocess.CompletedProcess | None) -> str:
    """'ok', 'abort' (a rank died of SIGABRT), 'timeout' or 'error' (anything else)."""
    if res is None:
        return "timeout"
    if res.returncode == 0:
        return "ok"
    return "abort" if ABORT in res.stderr or "(SIGABRT)" in res.stderr else "error"


def tree() -> dict:
    """The commit of the tree under test and whether it has local changes (None outside a git checkout)."""
    git = lambda *a: subprocess.run(["git", "-C", str(ROOT), *a], capture_output=True, text=True)   # noqa: E731
    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return {"root": str(ROOT), "commit": None, "dirty": None}
    return {"root": str(ROOT), "commit": head.stdout.strip(), "dirty": bool(git("status", "--porcelain").stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--launches", type=int, default=50, help="torchrun launches, one after another (default 50)")
    ap.add_argument("--load", type=int, default=2, help="busy-loop processes running meanwhile (default 2)")
    ap.add_argument("--out", type=Path, required=True, help="JSON record to write")
    ap.add_argument("--nice-gap", type=int, default=5, help="launches run this much nicer than the load (default 5)")
    ap.add_argument("--note", default="", help="free text kept in the record (what this tree is)")
    args = ap.parse_args()

    counts: Counter[str] = Counter()
    failures, seconds = [], []
    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.load)]
    os.nice(args.nice_gap)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"host": platform.node(), "platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version(), "torch": torch.__version__},
              "tree": tree(), "note": args.note, "command": sys.argv, "load": args.load, "nice_gap": args.nice_gap}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            npz = write_tiny_npz(Path(tmp) / "tiny.npz")
            for i in range(args.launches):
                out = Path(tmp) / f"launch{i}"
                out.mkdir()
                t0 = time.perf_counter()
                try:
                    res = launch_worker(out, npz, ROOT)
                except subprocess.TimeoutExpired:
                    res = None
                seconds.append(round(time.perf_counter() - t0, 2))
                kind = outcome(res)
                counts[kind] += 1
                if kind != "ok":
                    failures.append({"launch": i, "outcome": kind, "returncode": None if res is None else res.returncode,
                                     "terminate_printed": res is not None and ABORT in res.stderr,
                                     "stderr_tail": "" if res is None else res.stderr[-3000:]})
                print(f"launch {i + 1}/{args.launches}: {kind}", file=sys.stderr, flush=True)
                write(args.out, record, counts, seconds, failures)
    finally:
        for p in load:
            p.kill()
            p.wait()
    print(record["summary"])


def write(path: Path, record: dict, counts: Counter, seconds: list[float], failures: list[dict]) -> None:
    """The record so far (a run stopped early keeps its launches), with its one-line summary."""
    record["summary"] = (f"{len(seconds)} launches under {record['load']} busy loops: {counts['ok']} ok, "
                         f"{counts['abort']} aborted (SIGABRT), {counts['error']} other failures, "
                         f"{counts['timeout']} timed out; {sum(seconds) / len(seconds):.1f} s a launch")
    record.update(launches=len(seconds), counts={k: counts[k] for k in ("ok", "abort", "error", "timeout")},
                  seconds=seconds, failures=failures)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
