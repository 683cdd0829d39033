"""Curves of one or more runs from their metrics records: test error, losses, pseudo-label quality.

    metassl plot runs/fmnist-metamixup runs/fmnist-mixup --out plots/
    python -c "from metassl.diagnostics.plot import plot_runs; print(plot_runs(['runs/a', 'runs/b'], 'plots'))"

Writes PNGs (matplotlib, Agg backend, no display needed):
    test_error.png     test error (%) vs iteration, one line per run (the paper's accuracy curves, as error)
    time_to_error.png  test error (%) vs training seconds and vs images seen (time-to-accuracy), runs overlaid;
                       only for runs whose evaluation records carry train_seconds / images_seen
    losses.png         one panel per logged loss term (loss, loss_cls, loss_cons, ...), runs overlaid
    pseudo_labels.png  only when a run logged pl_* (unlabeled labels known): accuracy and calibration error
                       of the plain (dashed) and meta-corrected (solid) pseudo-labels, and the fraction of
                       unlabeled images whose argmax the correction changed, for the better or the worse
Pseudo-label metrics are per-batch estimates at logging steps, hence noisy: raw values are drawn faint
and a centred moving average over `SMOOTH` logging steps on top.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..run.rundir import RunDir

SMOOTH = 5   # logging steps in the moving average of the pseudo-label curves


def pyplot():
    """matplotlib.pyplot on the Agg backend (files only), or a one-line UserError."""
    try:
        import matplotlib
    except ImportError:
        raise UserError("plotting needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def run_labels(run_dirs: list[Path]) -> list[str]:
    """The algorithm of each run (from its saved config), with the run name added where algorithms repeat."""
    algos = []
    for d in run_dirs:
        try:
            algos.append(RunDir(d).read_config().algorithm)
        except UserError:
            algos.append(d.name)
    return [a if algos.count(a) == 1 else f"{a} ({d.name})" for a, d in zip(algos, run_dirs)]


def series(records: list[dict[str, Any]], kind: str, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, values) of `key` over the records of `kind` ('train' or 'eval') that have it."""
    pts = [(r["iteration"], r[key]) for r in records if r["kind"] == kind and isinstance(r.get(key), (int, float))]
    return np.array([p[0] for p in pts]), np.array([p[1] for p in pts], dtype=float)


def time_to_error(records: list[dict[str, Any]], target: float) -> tuple[float, int] | None:
    """(train_seconds, images_seen) at the first evaluation with test error <= target (%), or None if the run
    never reached it (or its records predate the time-to-accuracy fields)."""
    for r in records:
        if r["kind"] == "eval" and isinstance(r.get("test_error"), (int, float)) and r["test_error"] <= target \
                and isinstance(r.get("train_seconds"), (int, float)):
            return float(r["train_seconds"]), int(r.get("images_seen", 0))
    return None


def smooth(v: np.ndarray, window: int = SMOOTH) -> np.ndarray:
    """Centred moving average; the ends average over the points that exist."""
    window = min(window, len(v))          # np.convolve 'same' returns max(len) points: never exceed len(v)
    if window <= 1:
        return v
    k = np.ones(window)
    return np.convolve(v, k, "same") / np.convolve(np.ones_like(v), k, "same")


def plot_runs(run_dirs: list[str | Path], out_dir: str | Path | None = None,
              labels: list[str] | None = None) -> list[Path]:
    """Write the PNGs for the runs into out_dir (default: the run itself for one run, else ./plots); `labels`
    name the curves (default: each run's algorithm, e.g. the bench passes its entry names such as variants)."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise UserError("give at least one run directory")
    all_records = [RunDir(d).read_metrics() for d in run_dirs]            # every dir is checked before any drawing
    plt = pyplot()
    out = Path(out_dir) if out_dir else (run_dirs[0] if len(run_dirs) == 1 else Path("plots"))
    out.mkdir(parents=True, exist_ok=True)
    labels = labels or run_labels(run_dirs)
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(run_dirs))]
    runs = list(zip(all_records, labels, colors))
    written = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=120)
        plt.close(fig)
        written.append(out / name)

    # test error vs iteration (validation error dotted where a run holds out a validation set)
    if any(len(series(r, "eval", "test_error")[0]) for r, _, _ in runs):
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for records, label, color in runs:
            it, err = series(records, "eval", "test_error")
            if len(it):
                ax.plot(it, err, color=color, marker="." if len(it) < 30 else None, label=f"{label}: {err[-1]:.2f}%")
            it, val = series(records, "eval", "val_error")
            if len(it):
                ax.plot(it, val, color=color, linestyle=":", label=f"{label} (validation)")
        ax.set(xlabel="iteration", ylabel="test error (%)", title="Test error")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        save(fig, "test_error.png")

    # time-to-accuracy: the same test error against training seconds and against images seen
    timed = [run for run in runs if len(series(run[0], "eval", "train_seconds")[0])]
    if timed:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, key, xlabel in ((axes[0], "train_seconds", "training seconds (evaluation excluded)"),
                                (axes[1], "images_seen", "images seen (labeled + unlabeled)")):
            for records, label, color in timed:
                pts = [(r[key], r["test_error"]) for r in records
                       if r["kind"] == "eval" and isinstance(r.get(key), (int, float)) and "test_error" in r]
                if pts:
                    x, y = zip(*pts)
                    ax.plot(x, y, color=color, marker="." if len(x) < 30 else None, label=f"{label}: {y[-1]:.2f}%")
            ax.set(xlabel=xlabel, ylabel="test error (%)", title=f"Test error vs {xlabel.split(' (')[0]}")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        save(fig, "time_to_error.png")

    # losses: one panel per logged loss term
    keys = sorted({k for r, _, _ in runs for rec in r if rec["kind"] == "train" for k in rec if k.startswith("loss")},
                  key=lambda k: (k != "loss", k))
    if keys:
        fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.4), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for records, label, color in runs:
                it, v = series(records, "train", key)
                if len(it):
                    ax.plot(it, v, color=color, label=label)
            if all(v > 0 for r, _, _ in runs for v in series(r, "train", key)[1]):
                ax.set_yscale("log")
            ax.set(xlabel="iteration", title=key)
            ax.grid(alpha=0.3)
        axes[0][0].legend(fontsize=8)
        save(fig, "losses.png")

    # pseudo-label quality (only runs whose unlabeled labels were known)
    pl_runs = [run for run in runs if len(series(run[0], "train", "pl_acc_plain")[0])]
    if pl_runs:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        panels = [(axes[0], "accuracy", "accuracy",
                   [("pl_acc_plain", "--", "plain"), ("pl_acc_corrected", "-", "corrected")]),
                  (axes[1], "calibration error", "ECE (15 bins)",
                   [("pl_ece_plain", "--", "plain"), ("pl_ece_corrected", "-", "corrected")]),
                  (axes[2], "argmax changed", "fraction of the unlabeled batch",
                   [("pl_changed", "-", "changed"), ("pl_changed_better", "-.", "to right"),
                    ("pl_changed_worse", ":", "from right")])]
        for ax, title, ylabel, curves in panels:
            for records, label, color in pl_runs:
                for key, style, what in curves:
                    it, v = series(records, "train", key)
                    if len(it):
                        ax.plot(it, v, color=color, alpha=0.25, linewidth=0.8)
                        ax.plot(it, smooth(v), color=color, linestyle=style, label=f"{label}: {what}")
            ax.set(xlabel="iteration", ylabel=ylabel, title=f"Pseudo-labels: {title}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        save(fig, "pseudo_labels.png")
    return written
