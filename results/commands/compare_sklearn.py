"""MetaSSLClassifier against scikit-learn's semi-supervised estimators; prints a markdown table.

    python results/commands/compare_sklearn.py                        # digits and breast cancer, splits 0 1 2, 2 threads
    python results/commands/compare_sklearn.py --data digits --only metassl supervised --splits 0
    python results/commands/compare_sklearn.py --splits 100 101 102   # other split seeds (for tuning; the table uses 0 1 2)

Protocol (digits): 397 test rows held out (stratified, `random_state=split`), 10 labels per class
kept among the 1400 training rows (drawn with `np.random.default_rng(split)`), the rest of them -1. Breast
cancer (569 rows, 2 classes): 142 test rows, 10 labels per class. Every estimator sees the same X_train,
y_semi and is scored on the same test rows, which no estimator sees in `fit`. Accuracy is mean +/- std
(population) over splits. Fit time: wall seconds of `fit` alone and its process CPU seconds, with torch and BLAS
(threadpoolctl) at `--threads` threads (default 1). On a machine shared with other jobs the wall time grows with
the load while the CPU seconds stay close to what the fit costs alone (at 1 thread, CPU ~ idle wall time).
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date

import numpy as np


def load(name: str, split: int, per_class: int = 10):
    """(X_train, y_semi, X_test, y_test): y_semi keeps `per_class` labels per class, -1 elsewhere."""
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.model_selection import train_test_split

    X, y = {"digits": load_digits, "breast_cancer": load_breast_cancer}[name](return_X_y=True)
    test_size = {"digits": 397, "breast_cancer": 142}[name]
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=test_size, stratify=y, random_state=split)
    rng = np.random.default_rng(split)
    keep = np.concatenate([rng.choice(np.flatnonzero(y_tr == c), per_class, replace=False) for c in np.unique(y)])
    y_semi = np.full(len(y_tr), -1)
    y_semi[keep] = y_tr[keep]
    return X_tr, y_semi, X_te, y_te


class LabeledOnly:
    """Fits `est` on the labeled rows (y != -1) alone."""

    def __init__(self, est):
        self.est = est

    def fit(self, X, y):
        self.est.fit(X[y != -1], y[y != -1])
        return self

    def score(self, X, y):
        return self.est.score(X, y)


def estimators(seed: int, threads: int) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
    from sklearn.svm import SVC

    from metassl import MetaSSLClassifier

    kw = {"n_jobs": threads} if "n_jobs" in MetaSSLClassifier().get_params() else {}   # older versions: torch's
    return {
        "labelspreading": ("`LabelSpreading(kernel=\"knn\", n_neighbors=7)` (scikit-learn)",
                           lambda: LabelSpreading(kernel="knn", n_neighbors=7)),
        "labelspreading_tuned": ("`LabelSpreading(kernel=\"knn\", n_neighbors=15)` on standardised features "
                                 "(chosen on dev data)",
                                 lambda: make_pipeline(StandardScaler(), LabelSpreading(kernel="knn", n_neighbors=15))),
        "selftraining": ("`SelfTrainingClassifier(SVC(probability=True, gamma=0.001))` (scikit-learn)",
                         lambda: SelfTrainingClassifier(SVC(probability=True, gamma=0.001, random_state=seed))),
        "selftraining_tuned": ("`SelfTrainingClassifier(LogisticRegression(C=1), threshold=0.9)` on standardised "
                               "features (chosen on dev data)",
                               lambda: make_pipeline(StandardScaler(), SelfTrainingClassifier(
                                   LogisticRegression(C=1, max_iter=2000), threshold=0.9))),
        "metassl": ("`MetaSSLClassifier()` (defaults)", lambda: MetaSSLClassifier(random_state=seed, **kw)),
        "metassl_lsinit": ("`MetaSSLClassifier(init=\"label_spreading\")` (the previous default)",
                           lambda: MetaSSLClassifier(init="label_spreading", random_state=seed, **kw)),
        "supervised": ("`MetaSSLClassifier(algorithm=\"supervised\", init=\"none\")` (the labels alone)",
                       lambda: MetaSSLClassifier(algorithm="supervised", init="none", random_state=seed, **kw)),
        "logreg": ("`LogisticRegression` on the labels alone (standardised)",
                   lambda: LabeledOnly(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", nargs="+", default=["digits", "breast_cancer"], choices=["digits", "breast_cancer"])
    ap.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--only", nargs="+", default=None, help="estimator keys: labelspreading labelspreading_tuned "
                    "selftraining selftraining_tuned metassl metassl_lsinit supervised logreg")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads (and the metassl n_jobs)")
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits
    torch.set_num_threads(args.threads)
    threadpool_limits(args.threads)
    print(f"`python results/commands/compare_sklearn.py {' '.join(os.sys.argv[1:])}`, {date.today()}, "
          f"{platform.machine()} {os.cpu_count()} cpu, {args.threads} threads, load average at start "
          f"{os.getloadavg()[0]:.1f}\n")
    for data in args.data:
        rows = {}
        for split in args.splits:
            X_tr, y_semi, X_te, y_te = load(data, split)
            for key, (label, make) in estimators(split, args.threads).items():
                if args.only and key not in args.only:
                    continue
                est = make()
                t, c = time.perf_counter(), time.process_time()
                est.fit(X_tr, y_semi)
                seconds, cpu = time.perf_counter() - t, time.process_time() - c
                acc = 100 * est.score(X_te, y_te)
                rows.setdefault(label, []).append((acc, seconds, cpu))
                print(f"  {data} split {split} {key}: {acc:.1f} % in {seconds:.1f} s ({cpu:.1f} CPU s)", flush=True)
        n_lab = (y_semi != -1).sum()
        print(f"\n{data}: {len(X_tr)} training rows ({n_lab} labeled), {len(X_te)} test rows, splits {args.splits}\n")
        print("| estimator | test accuracy % | fit wall s | fit CPU s |\n|---|---|---|---|")
        for label, v in rows.items():
            acc, sec, cpu = np.array(v).T
            print(f"| {label} | {acc.mean():.1f} ± {acc.std():.1f} | {sec.mean():.1f} | {cpu.mean():.1f} |")
        print()


if __name__ == "__main__":
    main()
