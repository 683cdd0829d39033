"""The estimator table of docs/results/ESTIMATOR.md on data its recipe was never tuned on; one JSON line per fit.

    python results/commands/sklearn_untuned.py --out results/sklearn-untuned               # both data sets
    python results/commands/sklearn_untuned.py --out results/sklearn-untuned --table       # tables from runs.jsonl

The estimators, their settings and the label count (10 per class) are compare_sklearn.py's, unchanged; the
recipe (src/metassl/estimator/recipe.py) is not touched, and nothing here is chosen on these data sets.
  fmnist784  Fashion-MNIST at full size, 28x28 = 784 features, pixels scaled to 0..16 as digits is. Training
             pool: 3000 training images drawn with np.random.default_rng(split) from the 60000 minus the 1797
             that sklearn_dev.py's fmnist8 development data uses; 10 labels per class among them, the rest -1.
             Test: all 10000 test images (no choice anywhere looked at them). Splits 0-9: 0-2 ran first (as
             ESTIMATOR.md's other tables), 3-9 were added after them for power; the tables keep all ten.
  iris       scikit-learn's iris (150 rows, 4 features, 3 classes), never used for any choice: 38 test rows
             held out (stratified, random_state=split), 10 labels per class among the other 112. Splits 0-9
             (38 test rows give 2.6 points a row; ten splits instead of three).
Resumable: a (data, split, estimator) already in runs.jsonl is skipped. Accuracy is on the test rows after the
fixed budget (the estimator evaluates once, at the end: the final model, never a best one).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_sklearn import estimators  # noqa: E402  the same eight estimators as the reported tables
from sklearn_dev import fmnist8_indices  # noqa: E402  the development rows, excluded here

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SPLITS = {"fmnist784": list(range(10)), "iris": list(range(10))}


def _idx(name: str, offset: int) -> np.ndarray:
    return np.frombuffer(gzip.open(FMNIST / name).read(), np.uint8, offset=offset)


def load(name: str, split: int, per_class: int = 10):
    """(X_train, y_semi, X_test, y_test): y_semi keeps `per_class` labels per class, -1 elsewhere."""
    rng = np.random.default_rng(split)
    if name == "fmnist784":
        x = _idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 784)
        y = _idx("train-labels-idx1-ubyte.gz", 8).astype(np.int64)
        allowed = np.setdiff1d(np.arange(len(x)), fmnist8_indices())
        pool = rng.choice(allowed, 3000, replace=False)
        X_tr, y_tr = x[pool] / 255 * 16, y[pool]
        X_te = _idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784) / 255 * 16
        y_te = _idx("t10k-labels-idx1-ubyte.gz", 8).astype(np.int64)
    else:
        from sklearn.datasets import load_iris
        from sklearn.model_selection import train_test_split
        X, y = load_iris(return_X_y=True)
        X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=38, stratify=y, random_state=split)
    keep = np.concatenate([rng.choice(np.flatnonzero(y_tr == c), per_class, replace=False) for c in np.unique(y_tr)])
    y_semi = np.full(len(y_tr), -1)
    y_semi[keep] = y_tr[keep]
    return X_tr, y_semi, X_te, y_te


def machine() -> dict:
    import sklearn
    import torch
    model = next((line.split(":", 1)[1].strip() for line in subprocess.run(
        ["lscpu"], capture_output=True, text=True).stdout.splitlines() if line.startswith("Model name")), "?")
    return {"cpu": model, "arch": platform.machine(), "cores": os.cpu_count(), "torch": torch.__version__,
            "sklearn": sklearn.__version__, "python": platform.python_version()}


def run(args) -> None:
    import warnings

    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    warnings.simplefilter("ignore")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = out / "runs.jsonl"
    done = {(r["data"], r["split"], r["key"]) for r in map(json.loads, runs.open())} if runs.exists() else set()
    meta = {"command": "python results/commands/sklearn_untuned.py " + " ".join(sys.argv[1:]),
            "date": str(date.today()), "threads": args.threads, **machine()}
    with runs.open("a") as f:
        for data in args.data:
            for split in (args.splits or SPLITS[data]):
                X_tr, y_semi, X_te, y_te = load(data, split)
                for key, (label, make) in estimators(split, args.threads).items():
                    if (data, split, key) in done or (args.only and key not in args.only):
                        continue
                    load_avg = os.getloadavg()[0]
                    est = make()
                    t, c = time.perf_counter(), time.process_time()
                    est.fit(X_tr, y_semi)
                    wall, cpu = time.perf_counter() - t, time.process_time() - c
                    acc = 100 * est.score(X_te, y_te)
                    row = {"data": data, "split": split, "key": key, "estimator": label, "test_accuracy": round(acc, 3),
                           "fit_wall_s": round(wall, 2), "fit_cpu_s": round(cpu, 2), "n_train": len(X_tr),
                           "n_labeled": int((y_semi != -1).sum()), "n_test": len(X_te), "load_avg_at_start": load_avg,
                           **meta}
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    print(f"{data} split {split} {key}: {acc:.1f} % ({cpu:.1f} CPU s, {wall:.1f} s)", flush=True)


def table(args) -> None:
    rows = [json.loads(line) for line in (Path(args.out) / "runs.jsonl").open()]
    m = rows[0]
    print(f"`{m['command']}`, {m['date']}, {m['cpu']} ({m['arch']}, {m['cores']} cores), torch {m['torch']}, "
          f"scikit-learn {m['sklearn']}, {m['threads']} thread(s)\n")
    for data in dict.fromkeys(r["data"] for r in rows):
        rs = [r for r in rows if r["data"] == data]
        keys = {r["key"] for r in rs}                       # splits every estimator has finished (a run may stop)
        splits = sorted(s for s in {r["split"] for r in rs} if keys <= {r["key"] for r in rs if r["split"] == s})
        rs = [r for r in rs if r["split"] in splits]
        acc = {}
        for r in rs:
            acc.setdefault(r["key"], {})[r["split"]] = r
        print(f"{data}: {rs[0]['n_train']} training rows ({rs[0]['n_labeled']} labeled), {rs[0]['n_test']} test "
              f"rows, splits {splits}\n")
        print("| estimator | test accuracy % | fit CPU s |\n|---|---|---|")
        for key, by in acc.items():
            a = np.array([by[s]["test_accuracy"] for s in sorted(by)])
            c = np.array([by[s]["fit_cpu_s"] for s in sorted(by)])
            print(f"| {by[min(by)]['estimator']} | {a.mean():.1f} ± {a.std():.1f} | {c.mean():.1f} |")
        print("\nPaired by split, points of test accuracy (wins / ties / losses):\n")
        for a_key, b_key in (("metassl", "supervised"), ("metassl", "labelspreading"),
                             ("metassl", "selftraining_tuned"), ("metassl", "logreg"),
                             ("metassl_lsinit", "metassl")):
            if a_key in acc and b_key in acc:
                common = sorted(set(acc[a_key]) & set(acc[b_key]))
                d = np.array([acc[a_key][s]["test_accuracy"] - acc[b_key][s]["test_accuracy"] for s in common])
                print(f"- {a_key} - {b_key}: {d.mean():+.1f} ({(d > 0).sum()} / {(d == 0).sum()} / {(d < 0).sum()}"
                      f" over {len(d)} splits); per split {', '.join(f'{v:+.2f}' for v in d)}")
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder: runs.jsonl (one line per fit)")
    ap.add_argument("--data", nargs="+", default=["iris", "fmnist784"], choices=list(SPLITS))
    ap.add_argument("--splits", nargs="+", type=int, default=None, help="default: 0-9")
    ap.add_argument("--only", nargs="+", default=None, help="estimator keys, as in compare_sklearn.py")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--table", action="store_true", help="print the tables from runs.jsonl and exit")
    args = ap.parse_args()
    table(args) if args.table else run(args)


if __name__ == "__main__":
    main()
