"""t-SNE of a run's penultimate-layer features of test images, coloured by class (the paper's feature plot).

    metassl tsne runs/fmnist-metamixup --n 2000 --out tsne.png

Features are `model.features(x)` (globally pooled, before `fc`) of the weights the run evaluates (EMA
if it kept one), on a class-stratified random subset of `n` test images (seed 0, the same subset every
time). Needs scikit-learn (t-SNE) and matplotlib.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data import load_dataset
from ..data.split import class_balanced
from ..errors import UserError
from ..run.rundir import RunDir
from ..torch_utils import to_nchw
from .plot import pyplot


def _tsne():
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise UserError("the t-SNE plot needs scikit-learn: pip install scikit-learn") from None
    return TSNE


def subsample(y: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of about n images, each class in proportion to its share of y."""
    if n >= len(y):
        return np.arange(len(y))
    return class_balanced(y, lambda n_c: max(1, round(n * (n_c / len(y)))), seed)[:n]


def plot_tsne(run_dir: str | Path, out: str | Path | None = None, n: int = 2000, device: str = "auto") -> Path:
    """Write the t-SNE scatter of run_dir's test features to `out` (default: RunDir.tsne_plot,
    features_tsne.png in the run directory)."""
    from ..inference.evaluate import load_run, penultimate

    run_dir = Path(run_dir)
    if n < 10:
        raise UserError(f"--n {n} is too small for a t-SNE; use at least 10 test images")
    TSNE, plt = _tsne(), pyplot()                         # fail on missing dependencies before any work
    model, cfg, state = load_run(run_dir, device)
    data = load_dataset(cfg.dataset, cfg.data_dir or None, cfg.image_size or None)
    shape = [int(v) for v in state["shape"]]
    if [data.x_test.shape[3], data.x_test.shape[1]] != shape or data.classes != list(state["classes"]):
        raise UserError(f"the test images of dataset={cfg.dataset!r} ({data.x_test.shape[1:]}, {data.num_classes} "
                        f"classes) do not match the run (channels, size = {shape}, {len(state['classes'])} classes)")
    idx = subsample(data.y_test, n)
    dev = next(model.parameters()).device
    feats = penultimate(model, to_nchw(data.x_test[idx], dev), state["mean"].to(dev), state["std"].to(dev),
                        cfg.eval_batch_size).cpu().numpy()                                            # (n, F)
    emb = TSNE(n_components=2, perplexity=min(30.0, (len(idx) - 1) / 3), init="pca",
               random_state=0).fit_transform(feats)                                                 # (n, 2)

    y, classes = data.y_test[idx], data.classes
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20" if len(classes) <= 20 else "nipy_spectral")
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    for k, name in enumerate(classes):
        m = y == k
        if m.any():
            ax.scatter(emb[m, 0], emb[m, 1], s=6, color=cmap(k / max(1, len(classes) - 1) if len(classes) > 20 else k),
                       label=name)
    if len(classes) <= 20:
        ax.legend(markerscale=3, fontsize=8, loc="best")
    dataset = Path(cfg.dataset).name if cfg.dataset.lower().endswith(".npz") else cfg.dataset
    ax.set(xticks=[], yticks=[], title=f"t-SNE of penultimate features: {cfg.algorithm} on {dataset}\n"
                                       f"{len(idx)} test images, iteration {state['iteration']}, {run_dir.name}")
    ax.title.set_fontsize(10)
    out = Path(out) if out else RunDir(run_dir).tsne_plot
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
