"""Choose MetaSSLClassifier's defaults and the classical baselines' settings on development data that no reported
table uses, scored on validation rows; writes every fit as a CSV row.

    python results/commands/sklearn_dev.py --out results/sklearn-dev/rows.csv

Development data (disjoint from digits and breast cancer, the reported data sets):
  fmnist8   1797 Fashion-MNIST training images (seeded draw), area-downsampled to 8x8 and scaled to 0..16 as
            digits is, as 64 features; 397 validation rows, 10 labels per class among the other 1400 rows.
  wine      scikit-learn's wine data (178 rows, 13 features on very different scales, 3 classes): 45 validation
            rows, 10 labels per class among the other 133.
Dev splits 0, 1, 2 (the same draw rules as compare_sklearn.py). MetaSSLClassifier candidates vary the module
constants of src/metassl/estimator/recipe.py (passes, init share, init neighbours) and lr; LabelSpreading and SelfTraining
candidates vary kernel / base estimator and standardisation. Rows: data, split, family, candidate, val accuracy.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import itertools
import time
from pathlib import Path

import numpy as np

FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
FMNIST_LABELS = Path("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz")


def fmnist8_indices() -> np.ndarray:
    """The 1797 Fashion-MNIST training images (indices into the 60000) that fmnist8 uses."""
    return np.random.default_rng(12345).choice(60000, 1797, replace=False)


def fmnist8() -> tuple[np.ndarray, np.ndarray]:
    """1797 Fashion-MNIST images as 8x8 (area mean over 28->8 via a 4x4 crop-free resize), 0..16, (N, 64)."""
    from PIL import Image
    x = np.frombuffer(gzip.open(FMNIST).read(), np.uint8, offset=16).reshape(-1, 28, 28)
    y = np.frombuffer(gzip.open(FMNIST_LABELS).read(), np.uint8, offset=8).astype(np.int64)
    idx = fmnist8_indices()
    assert len(x) == 60000
    small = np.stack([np.asarray(Image.fromarray(im).resize((8, 8), Image.BOX)) for im in x[idx]])
    return np.round(small.reshape(-1, 64) / 255 * 16), y[idx]


def load(name: str, split: int, per_class: int = 10):
    from sklearn.datasets import load_wine
    from sklearn.model_selection import train_test_split

    X, y = fmnist8() if name == "fmnist8" else load_wine(return_X_y=True)
    val_size = {"fmnist8": 397, "wine": 45}[name]
    X_tr, X_va, y_tr, y_va = train_test_split(X, y, test_size=val_size, stratify=y, random_state=split)
    rng = np.random.default_rng(split)
    keep = np.concatenate([rng.choice(np.flatnonzero(y_tr == c), per_class, replace=False) for c in np.unique(y)])
    y_semi = np.full(len(y_tr), -1)
    y_semi[keep] = y_tr[keep]
    return X_tr, y_semi, X_va, y_va


def metassl_candidates(seed: int) -> dict:
    from metassl import MetaSSLClassifier
    grid = {"defaults": {}, "share0.5": {"INIT_SHARE": 0.5}, "share1.0": {"INIT_SHARE": 1.0},
            "k10": {"INIT_NEIGHBORS": 10}, "passes15": {"EPOCHS": 15}, "passes40": {"EPOCHS": 40},
            "lr0.1": {"lr": 0.1}, "init_none": {"init": "none"}}
    out = {}
    for name, change in grid.items():
        consts = {k: v for k, v in change.items() if k.isupper()}
        params = {k: v for k, v in change.items() if not k.isupper()}
        out[name] = (consts, lambda p=params: MetaSSLClassifier(random_state=seed, n_jobs=1, **p))
    return out


def baseline_candidates(seed: int) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.semi_supervised import LabelSpreading, SelfTrainingClassifier
    from sklearn.svm import SVC

    def std(est, on):
        return Standardised(est) if on else est

    out = {}
    for on in (False, True):
        tag = "std" if on else "raw"
        for k in (3, 5, 7, 10, 15, 20):
            out[("labelspreading", f"{tag} knn k={k}")] = lambda k=k, on=on: std(LabelSpreading(kernel="knn", n_neighbors=k), on)
        for g in (0.3, 1.0, 3.0):               # rbf gamma as a multiple of 1 / (D * var(X)), sklearn's 'scale'
            for a in (0.2, 0.8):
                out[("labelspreading", f"{tag} rbf gamma={g}x alpha={a}")] = \
                    lambda g=g, a=a, on=on: std(_ScaledRBFSpreading(g, a), on)
        bases = {"svc C=1": lambda: SVC(probability=True, C=1, random_state=seed),
                 "svc C=10": lambda: SVC(probability=True, C=10, random_state=seed),
                 "logreg C=1": lambda: LogisticRegression(C=1, max_iter=2000),
                 "logreg C=10": lambda: LogisticRegression(C=10, max_iter=2000),
                 "knn k=3": lambda: KNeighborsClassifier(3),
                 "forest": lambda: RandomForestClassifier(200, random_state=seed)}
        for (bname, make), thr in itertools.product(bases.items(), (0.75, 0.9)):
            out[("selftraining", f"{tag} {bname} threshold={thr}")] = \
                lambda make=make, thr=thr, on=on: std(SelfTrainingClassifier(make(), threshold=thr), on)
    return out


class Standardised:
    """`est` on features standardised with the mean/std of the rows it is fitted on (labeled and unlabeled)."""

    def __init__(self, est):
        self.est = est

    def fit(self, X, y):
        self.mean, self.std = X.mean(0), np.where(X.std(0) > 0, X.std(0), 1.0)
        self.est.fit((X - self.mean) / self.std, y)
        return self

    def score(self, X, y):
        return self.est.score((X - self.mean) / self.std, y)


class _ScaledRBFSpreading:
    """LabelSpreading(kernel='rbf') with gamma = factor / (D * X.var()), set at fit time (sklearn's 'scale')."""

    def __init__(self, factor: float, alpha: float):
        self.factor, self.alpha = factor, alpha

    def fit(self, X, y):
        from sklearn.semi_supervised import LabelSpreading
        gamma = self.factor / (X.shape[1] * X.var())
        self.est = LabelSpreading(kernel="rbf", gamma=gamma, alpha=self.alpha, max_iter=200).fit(X, y)
        return self

    def score(self, X, y):
        return self.est.score(X, y)


def main() -> None:
    import warnings
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", nargs="+", default=["fmnist8", "wine"])
    ap.add_argument("--splits", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--only", choices=["metassl", "baselines"])
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    from metassl.estimator import recipe
    torch.set_num_threads(1)
    threadpool_limits(1)
    warnings.simplefilter("ignore")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    new = not Path(args.out).exists()
    with open(args.out, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(["data", "split", "family", "candidate", "val_accuracy", "fit_cpu_s"])
        for data, split in itertools.product(args.data, args.splits):
            X_tr, y_semi, X_va, y_va = load(data, split)
            jobs = []
            if args.only != "baselines":
                for name, (consts, make) in metassl_candidates(split).items():
                    jobs.append(("metassl", name, consts, make))
            if args.only != "metassl":
                for (family, name), make in baseline_candidates(split).items():
                    jobs.append((family, name, {}, make))
            for family, name, consts, make in jobs:
                saved = {k: getattr(recipe, k) for k in consts}
                for k, v in consts.items():
                    setattr(recipe, k, v)
                try:
                    c = time.process_time()
                    acc = 100 * make().fit(X_tr, y_semi).score(X_va, y_va)
                    cpu = time.process_time() - c
                finally:
                    for k, v in saved.items():
                        setattr(recipe, k, v)
                w.writerow([data, split, family, name, f"{acc:.2f}", f"{cpu:.1f}"])
                f.flush()
                print(f"{data} {split} {family} {name}: {acc:.1f} ({cpu:.1f} CPU s)", flush=True)


if __name__ == "__main__":
    main()
