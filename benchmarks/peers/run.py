"""metassl beside ModSSC, USB and LAMDA-SSL on one CPU: each toolkit's own FixMatch / FlexMatch / supervised,
run interleaved (so the machine's speed drift hits all alike), tabulated.

    make peers      # the three toolkits' virtual environments, once
    python3 benchmarks/peers/run.py --algorithms fixmatch,flexmatch,supervised --iterations 200 \
        --seeds 0 --settings matched --out results/peers/matched-200it

Toolkits: metassl, metassl-amp (the same with amp=true: bf16 autocast where the CPU has bf16 units), modssc, usb,
lamda. Order: for each seed, algorithm and setting, one round runs every toolkit back to back, the toolkit order
rotating from round to round. Each run is a subprocess in its toolkit's venv writing
OUT/raw/<setting>/<algorithm>/<toolkit>-s<seed>.json; a re-run skips runs whose JSON exists, so an
interrupted benchmark resumes. The labeled split is metassl's (fmnist-1000, split_seed 0), written once
to WORK/split.json by a one-iteration metassl run; every run records the digest of the labeled indices it
used and the table refuses a mismatch. metassl runs from a snapshot of HEAD's sources taken at the first
invocation (WORK/metassl-src, `git archive`) and reused on resume, so concurrent edits and commits to src/
do not leak into a long benchmark; its commit is in OUT/meta.json and in each metassl record (a resume
whose WORK is gone takes a new snapshot of HEAD), with the time each run finished. WORK (default runs/peers/<OUT's name>,
ignored by git) also holds the logs and metassl's run directories; OUT only the records and tables:
OUT/table.md (markdown), OUT/results.csv and OUT/results.json (every field of every run).
`--table-only` rebuilds the tables from the raw files.

Equal wall-clock budget (`--budget-s B`, e.g. with `--settings defaults`): before each run a calibration
run of `--calibrate` iterations (OUT/calibration/..., not tabulated) measures the toolkit's training-loop
seconds per iteration, and the run gets floor(B / that) iterations. The budget is the timed training loop,
the quantity s/it measures (set-up and evaluation excluded; ModSSC's fixed views shown apart). metassl's
`recipe` (the job `make run` ships, its own iteration count) is not fitted: its row shows the seconds it used.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from common import split_digest  # noqa: E402  (stdlib + numpy + torch: the project venv has them)

PY = {"metassl": ROOT / ".venv/bin/python", "metassl-amp": ROOT / ".venv/bin/python",
      "modssc": HERE / ".venv-modssc/bin/python", "usb": HERE / ".venv-usb/bin/python",
      "lamda": HERE / ".venv-lamda/bin/python"}
SCRIPT = {"metassl": "metassl_run.py", "metassl-amp": "metassl_run.py", "modssc": "modssc_run.py",
          "usb": "usb_run.py", "lamda": "lamda_run.py"}
SUPPORTS = {"metassl": {"fixmatch", "flexmatch", "freematch", "supervised", "recipe"},
            "metassl-amp": {"fixmatch", "flexmatch", "freematch", "supervised", "recipe"},   # amp=true: bf16 where the CPU has it
            "usb": {"fixmatch", "flexmatch", "supervised"},
            "modssc": {"fixmatch", "flexmatch", "freematch"},   # its supervised method cannot take a user network
            "lamda": {"fixmatch", "flexmatch"}}    # it has no supervised-only deep estimator


def snapshot_metassl(work: Path, meta: Path) -> tuple[Path, str]:
    """HEAD's src/ exported to WORK/metassl-src/<commit>/, or the snapshot an earlier invocation recorded in
    OUT/meta.json; returns (path to import from, commit)."""
    commit = json.loads(meta.read_text()).get("metassl_commit", "") if meta.exists() else ""
    if not commit or not (work / "metassl-src" / commit[:12] / "metassl").exists():
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=True).stdout.strip()
    dest = work / "metassl-src" / commit[:12]
    if not (dest / "metassl").exists():
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", "HEAD", "src/metassl"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "--strip-components=1", "-C", str(dest)], input=archive.stdout, check=True)
    return dest, commit


def make_split(work: Path, src: Path) -> Path:
    """metassl's fmnist-1000 split (split_seed 0), from a one-iteration run of its own trainer (the supervised step:
    the split is the preset's, and no label-bank pass or whole-pool work runs before that iteration)."""
    path = work / "split.json"
    if not path.exists():
        tmp = work / "split-run"
        env = {**os.environ, "PYTHONPATH": str(src)}
        subprocess.run([str(PY["metassl"]), "-m", "metassl", "train", "--preset", "fmnist-1000", "iterations=1",
                        "algorithm=supervised", "threads=2", "device=cpu", "--out", str(tmp), "--force", "--quiet"], env=env, check=True)
        path.write_text((tmp / "split.json").read_text())
        for f in tmp.glob("*.pt"):
            f.unlink()
    return path


def run_one(tk: str, alg: str, setting: str, seed: int, n: int, threads: int, out: Path, work: Path, split: Path,
            src: Path, kind: str = "raw") -> Path | None:
    """One run in the toolkit's venv -> OUT/<kind>/<setting>/<alg>/<tk>-s<seed>.json (kind: raw or calibration)."""
    dest = out / kind / setting / alg / f"{tk}-s{seed}.json"
    if dest.exists():
        print(f"skip {dest} (done)", flush=True)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    log = work / "logs" / f"{kind}-{setting}-{alg}-{tk}-s{seed}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(PY[tk]), str(HERE / SCRIPT[tk]), "--algorithm", alg, "--iterations", str(n), "--seed", str(seed),
           "--split", str(split), "--setting", setting, "--threads", str(threads), "--out", str(dest)]
    if tk.startswith("metassl"):
        cmd += ["--src", str(src), "--run-dir", str(work / f"{tk}-runs" / f"{kind}-{setting}-{alg}-s{seed}"),
                "--amp", "true" if tk == "metassl-amp" else "false"]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.time()
    print(time.strftime("%H:%M:%S"), "run", " ".join(cmd[1:]), flush=True)
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT).returncode
    print(f"  rc={rc} in {time.time() - t0:.0f} s", flush=True)
    if rc != 0 or not dest.exists():
        return None
    rec = {**json.loads(dest.read_text()), "finished_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
    if tk.startswith("metassl"):       # a benchmark resumed days later may run from a newer snapshot than meta.json's first
        rec["metassl_commit"] = src.name
    dest.write_text(json.dumps(rec, indent=1))
    return dest


def budget_iterations(tk: str, alg: str, setting: str, seed: int, budget_s: float, calibrate: int, threads: int,
                      out: Path, work: Path, split: Path, src: Path) -> int | None:
    """Iterations that fill `budget_s` seconds of this toolkit's training loop, from a short calibration run."""
    cal = run_one(tk, alg, setting, seed, calibrate, threads, out, work, split, src, kind="calibration")
    if cal is None:
        return None
    return max(1, int(budget_s / json.loads(cal.read_text())["s_per_it_wall"]))


COLUMNS = [("toolkit", "toolkit"), ("s/it wall", "s_per_it_wall"), ("s/it CPU", "s_per_it_cpu"),
           ("images/s", "images_per_s"), ("test error %", "test_error"), ("peak RSS MiB", "peak_rss_mib"),
           ("extra", "extra")]


def table(out: Path) -> str:
    """Markdown tables (one per setting and algorithm; mean over seeds, n shown) from OUT/raw/**, plus csv/json."""
    recs = [json.loads(p.read_text()) for p in sorted((out / "raw").glob("*/*/*.json"))]
    for r in recs:
        r.pop("config", None)
    digests = {r["split_digest"] for r in recs}
    if len(digests) > 1:
        raise SystemExit(f"runs used different labeled splits: {sorted(digests)}")
    (out / "results.json").write_text(json.dumps(recs, indent=1))
    keys = sorted({k for r in recs for k in r})
    with open(out / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, keys)
        w.writeheader()
        w.writerows(recs)
    lines = []
    for setting in sorted({r["setting"] for r in recs}):
        for alg in ("recipe", "fixmatch", "flexmatch", "freematch", "supervised"):
            rows = [r for r in recs if r["setting"] == setting and r["algorithm"] == alg]
            if not rows:
                continue
            its = sorted({r["iterations"] for r in rows})
            lines += [f"**{setting}, {alg}** ({'/'.join(map(str, its))} iterations, seeds "
                      f"{sorted({r['seed'] for r in rows})})", "",
                      "| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
            by_tk: dict[str, list[dict]] = {}
            for r in rows:
                by_tk.setdefault(r["toolkit"], []).append(r)
            fastest = min(statistics.mean(r["s_per_it_wall"] for r in v) for v in by_tk.values())
            for tk, v in sorted(by_tk.items(), key=lambda kv: statistics.mean(r["s_per_it_wall"] for r in kv[1])):
                mean = lambda k: statistics.mean(r[k] for r in v)  # noqa: E731
                extra = []
                if "views_wall_s" in v[0]:
                    per = mean("views_wall_s") / mean("iterations")
                    extra.append(f"+{per:.3f} s/it fixed views (wall, {mean('views_wall_s'):.0f} s)")
                if v[0].get("evaluated") == "ema":
                    extra.append("EMA weights")
                if v[0].get("num_workers"):
                    extra.append(f"{v[0]['num_workers']} loader worker(s), CPU not counted")
                if v[0].get("budget_s"):
                    extra.append(f"{mean('train_wall_s'):.0f} s of a {v[0]['budget_s']:.0f} s budget")
                if v[0].get("recipe_algorithm"):
                    extra.append(f"the shipped recipe: {v[0]['recipe_algorithm']}")
                if mean("iterations") != its[0]:
                    extra.append(f"{mean('iterations'):.0f} its")
                ratio = mean("s_per_it_wall") / fastest
                err = f"{mean('test_error'):.2f}"
                if len(v) > 1:
                    err += f" ± {statistics.stdev(r['test_error'] for r in v):.2f} (n={len(v)})"
                cells = [tk, f"{mean('s_per_it_wall'):.3f} ({ratio:.2f}x)", f"{mean('s_per_it_cpu'):.3f}",
                         f"{mean('images_per_s'):.0f}", err,
                         f"{max(r['peak_rss_mib'] for r in v):.0f}", "; ".join(extra)]
                lines.append("| " + " | ".join(cells) + " |")
            lines += paired(by_tk) + [""]
    lines.append(f"Labeled split digest (sha256 of the sorted labeled indices): `{digests.pop() if digests else '-'}`")
    text = "\n".join(lines) + "\n"
    (out / "table.md").write_text(text)
    return text


def paired(by_tk: dict[str, list[dict]]) -> list[str]:
    """Lines giving each peer's test error minus each metassl variant's on the seeds both ran (paired by seed)."""
    lines = []
    for mine, m in sorted((tk, v) for tk, v in by_tk.items() if tk.startswith("metassl")):
        ours = {r["seed"]: r["test_error"] for r in m}
        for tk, v in sorted(by_tk.items()):
            diffs = {r["seed"]: r["test_error"] - ours[r["seed"]] for r in v if r["seed"] in ours}
            if diffs and not tk.startswith("metassl") and len(diffs) > 1:
                each = ", ".join(f"s{s} {d:+.2f}" for s, d in sorted(diffs.items()))
                lines.append(f"- {tk} minus {mine}, paired by seed: {each} (mean {statistics.mean(diffs.values()):+.2f})")
    return [""] + lines if lines else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algorithms", default="fixmatch,flexmatch,supervised")
    ap.add_argument("--toolkits", default="metassl,modssc,usb,lamda")
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--settings", default="matched", help="matched, defaults, or both comma-separated")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--budget-s", type=float, help="equal wall-clock: iterations fitted to this many seconds of "
                    "training loop per run (replaces --iterations; metassl's recipe keeps its own)")
    ap.add_argument("--calibrate", type=int, default=20, help="iterations of the calibration run behind --budget-s")
    ap.add_argument("--out", required=True)
    ap.add_argument("--work", help="scratch: logs, metassl's run dirs, split, source snapshot (default runs/peers/<OUT name>)")
    ap.add_argument("--table-only", action="store_true")
    a = ap.parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(a.work).resolve() if a.work else ROOT / "runs" / "peers" / out.name
    work.mkdir(parents=True, exist_ok=True)
    if not a.table_only:
        src, commit = snapshot_metassl(work, out / "meta.json")
        split = make_split(work, src)
        now = time.strftime("%Y-%m-%d %H:%M:%S")
        old = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}
        meta = {"metassl_commit": commit, "command": " ".join(sys.argv), "started": old.get("started", now),
                "last_invocation": now, "labeled_digest": split_digest(json.loads(split.read_text())["labeled"])}
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
        toolkits = a.toolkits.split(",")
        rounds = [(seed, alg, setting) for seed in map(int, a.seeds.split(",")) for alg in a.algorithms.split(",")
                  for setting in a.settings.split(",")]
        for k, (seed, alg, setting) in enumerate(rounds):
            order = toolkits[k % len(toolkits):] + toolkits[:k % len(toolkits)]   # rotate who goes first
            for tk in order:
                if alg not in SUPPORTS[tk]:
                    continue
                n = a.iterations
                if a.budget_s and tk.startswith("metassl") and setting == "defaults" and alg in ("fixmatch", "flexmatch"):
                    print(f"skip metassl {alg}: its preset opens with 800 labeled-only iterations, so a short "
                          "calibration would time only those; the recipe row is metassl's default", flush=True)
                    continue
                if a.budget_s and alg != "recipe":
                    n = budget_iterations(tk, alg, setting, seed, a.budget_s, a.calibrate, a.threads, out, work,
                                          split, src)
                    if n is None:
                        continue
                dest = run_one(tk, alg, setting, seed, n, a.threads, out, work, split, src)
                if dest and a.budget_s:
                    rec = json.loads(dest.read_text())
                    if "budget_s" not in rec:
                        dest.write_text(json.dumps({**rec, "budget_s": a.budget_s}, indent=1))
            print(table(out), flush=True)
    print(table(out))


if __name__ == "__main__":
    main()
