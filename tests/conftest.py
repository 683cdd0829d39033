"""Shared fixtures: a tiny, learnable synthetic data set so trainer tests run in seconds, and a tiny
network, batch and step runner for step-level algorithm tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from metassl.data import ImageData


def make_tiny_data(n_train: int = 240, n_test: int = 80, size: int = 12, classes: int = 4, seed: int = 0) -> ImageData:
    """Class k = a bright bar at row-band k plus noise: easy to learn, uint8 NHWC like real data."""
    rng = np.random.default_rng(seed)

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % classes
        x = rng.integers(0, 60, (n, size, size, 1)).astype(np.int64)
        band = size // classes
        for k in range(classes):
            x[y == k, k * band:(k + 1) * band, :, :] += 150
        return x.clip(0, 255).astype(np.uint8), y.astype(np.int64)

    x, y = make(n_train)
    xt, yt = make(n_test)
    return ImageData(x, y, xt, yt, [f"c{k}" for k in range(classes)], flip=False, name="tiny")


def write_tiny_npz(path: Path, data: ImageData | None = None, **extra: np.ndarray) -> Path:
    """`data` (default: make_tiny_data()) as a `dataset=<file>.npz` file, with any `extra` arrays."""
    d = data if data is not None else make_tiny_data()
    np.savez(path, x=d.x_train, y=d.y_train, x_test=d.x_test, y_test=d.y_test, **extra)
    return Path(path)


TINY_CLASSES = 4
TINY_UNLABELED = 32       # pool size in tiny_context; tiny_batch's images sit at positions 0..n-1


def tiny_net():
    """Conv + BN + dropout on 1x6x6 inputs, 4 classes: BN and dropout handling matter; runs in milliseconds."""
    import torch
    from torch import nn
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.Dropout(0.2),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, TINY_CLASSES))


def tiny_batch(algo, n: int = 8, seed: int = 1):
    """A hand-made 1x6x6 Batch with one unlabeled tensor per view `algo` asks for, and y_ulb set."""
    import torch
    from metassl.algorithms import Batch
    g = torch.Generator().manual_seed(seed)
    x_lb = torch.randn(n, 1, 6, 6, generator=g)
    y_lb = torch.randint(0, TINY_CLASSES, (n,), generator=g)
    base = torch.randn(n, 1, 6, 6, generator=g)
    x_ulb = [base + 0.1 * torch.randn(n, 1, 6, 6, generator=g) for _ in algo.views]
    batch = Batch(x_lb, y_lb, x_ulb, torch.randint(0, TINY_CLASSES, (n,), generator=g), torch.arange(n))
    if getattr(algo, "bank_every", 0):          # a label bank: the trainer's whole-pool pass comes first, with
        relabel_on_batch(algo, tiny_net(), batch)   # the weights every step test starts from as the teacher
    return batch


def relabel_on_batch(algo, model, batch) -> None:
    """A label bank's relabelling whose pool is the batch's unlabeled images (at positions idx_ulb)."""
    from metassl.batch import PoolPasses
    if getattr(algo, "bank_params", None) == "head" and not hasattr(model, "fc"):   # tiny_net has no features/fc:
        algo.bank_params, algo.features = "all", False                              # the finite-difference path
    x_pool = batch.x_ulb[0]
    algo.relabel(model, PoolPasses(lambda bs: iter([(batch.idx_ulb, x_pool, batch.y_ulb)]),
                                   lambda bs, held_out: iter([(batch.x_lb, batch.y_lb)]), len(x_pool), False,
                                   lambda t: t), tiny_context())


def tiny_context(weight: float = 1.0, beta: float = 0.05, iteration: int = 10, lr: float = 0.05):
    from metassl.algorithms import StepContext
    return StepContext(iteration, lr=lr, meta_step_size=beta, consistency_weight=weight, num_classes=TINY_CLASSES,
                       num_unlabeled=TINY_UNLABELED)


def run_step(algo, model, batch, ctx):
    """(loss, metrics) of one step, whether `step` returns a (loss, metrics) pair or an object with both."""
    out = algo.step(model, batch, ctx)
    return (out.loss, out.metrics) if hasattr(out, "loss") else out


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny trainings on one thread (faster than two for 8x8 images), then restore."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No real data, cache, env or network: HOME in tmp, METASSL_OFFLINE=1, Debian path pointed away."""
    from metassl.data import sources
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METASSL_OFFLINE", "1")
    monkeypatch.delenv("METASSL_DATA", raising=False)
    monkeypatch.setattr(sources, "DEBIAN_FASHION_MNIST", str(tmp_path / "no-debian"))


@pytest.fixture
def tiny_data() -> ImageData:
    return make_tiny_data()


def identity_net(classes: int):
    """logits = the input itself ((N, classes, 1, 1) -> (N, classes)): a test sets the confidences."""
    import torch
    from torch import nn

    lin = nn.Linear(classes, classes)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(classes))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin)


def tiny_run(root: Path, classes: list[str]):
    """A 20-iteration metamixup run on a tiny 8x8 grayscale .npz with named classes: (run dir, its data)."""
    from metassl.algorithms import build_config
    from metassl.train import train
    data = make_tiny_data(n_train=120, n_test=40, size=8)
    write_tiny_npz(root / "tiny.npz", data, classes=np.array(classes))
    cfg = build_config(None, None, [f"dataset={root / 'tiny.npz'}", "device=cpu", "model=cnn", "iterations=20",
                                    "batch_size=16", "num_labels=16", "warmup=2", "consistency_rampup=5",
                                    "eval_every=20", "checkpoint_every=20", "log_every=10", "translate=1"])
    train(cfg, root / "run", quiet=True)
    return root / "run", data


class Killed(Exception):
    """Raised by `train_killed_after` in place of a real kill."""


def train_killed_after(cfg, run_dir, data, monkeypatch, checkpoints: int = 1) -> None:
    """Train `cfg` into `run_dir` and stop it as a kill would, right after its `checkpoints`-th checkpoint is on disk."""
    from metassl.run import checkpoint
    from metassl.train import train

    real_save, saves = checkpoint.save, []

    def save_then_die(state, run_dir):
        real_save(state, run_dir)
        saves.append(state["iteration"])
        if len(saves) == checkpoints:
            raise Killed

    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(Killed):
        train(cfg, run_dir, data=data, quiet=True)
    monkeypatch.setattr(checkpoint, "save", real_save)
