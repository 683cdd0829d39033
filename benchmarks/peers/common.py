"""What every peer script shares: Fashion-MNIST from its IDX files, metassl's labeled split, metassl's
small `cnn` written out layer for layer, the matched protocol, and the measurement written to JSON.

Imports only numpy and torch, so it runs in each toolkit's own virtual environment (none of them has
metassl installed). Not a re-implementation of any algorithm: the scripts beside it call each toolkit's own.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

FMNIST = Path(os.environ.get("FMNIST_DIR", "/usr/share/datasets/fashion-mnist"))

# The matched protocol: what every toolkit is set to where it can be (README-style units).
MATCHED = dict(
    batch_size=64,          # labeled images per iteration
    unlabeled_batch_size=64,  # unlabeled images per iteration (uratio / mu = 1)
    lr=0.03,                # SGD, constant (no warm-up, no decay)
    momentum=0.9,           # plain momentum, no Nesterov
    weight_decay=5e-4,      # L2 on every parameter where the toolkit allows (see docs: USB skips BN/bias)
    threshold=0.95,         # tau, FixMatch and FlexMatch
    lambda_u=1.0,           # unlabeled loss weight, no ramp
    translate=2,            # weak view: random crop with 2-pixel reflect padding, then horizontal flip
)


# ----------------------------------------------------------------------------- data

def _idx(path: Path) -> np.ndarray:
    """Read one IDX file (optionally .gz) into a uint8 array."""
    for p in (path, path.with_name(path.name + ".gz")):
        if p.exists():
            raw = (gzip.open if p.suffix == ".gz" else open)(p, "rb").read()
            ndim = raw[3]
            shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)
    raise FileNotFoundError(f"{path} (or .gz) not found; install Debian's dataset-fashion-mnist or set FMNIST_DIR")


def load_fmnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train (60000, 28, 28) uint8, y_train (60000,), x_test (10000, 28, 28), y_test (10000,)."""
    return (_idx(FMNIST / "train-images-idx3-ubyte"), _idx(FMNIST / "train-labels-idx1-ubyte").astype(np.int64),
            _idx(FMNIST / "t10k-images-idx3-ubyte"), _idx(FMNIST / "t10k-labels-idx1-ubyte").astype(np.int64))


def split_digest(labeled: list[int] | np.ndarray) -> str:
    """sha256 of the sorted labeled indices as a JSON list: the same for metassl's split.json and every peer."""
    return hashlib.sha256(json.dumps(sorted(int(i) for i in labeled)).encode()).hexdigest()


def load_split(path: str | Path) -> tuple[np.ndarray, np.ndarray, str]:
    """Labeled and unlabeled indices (sorted int64) from a metassl run's split.json, and the labeled digest."""
    d = json.loads(Path(path).read_text())
    lab, unl = np.sort(np.asarray(d["labeled"], np.int64)), np.sort(np.asarray(d["unlabeled"], np.int64))
    assert not np.intersect1d(lab, unl).size, "labeled and unlabeled overlap"
    return lab, unl, split_digest(lab)


def channel_stats(x_train: np.ndarray) -> tuple[float, float]:
    """Mean and std of all training pixels on the [0, 1] scale, as metassl normalises (one grey channel)."""
    x = x_train.astype(np.float64) / 255
    return float(x.mean()), float(x.std())


# ----------------------------------------------------------------------------- the network

def conv_bn_lrelu(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.1))


class SmallCNN(nn.Module):
    """metassl's `cnn` (src/metassl/models/cnn.py), layer for layer: 32-32-pool-64-64-pool-128, global mean, fc."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_lrelu(in_channels, 32), conv_bn_lrelu(32, 32),   # (N,32,28,28)
            nn.MaxPool2d(2), nn.Dropout2d(0.25),                     # (N,32,14,14)
            conv_bn_lrelu(32, 64), conv_bn_lrelu(64, 64),
            nn.MaxPool2d(2), nn.Dropout2d(0.25),                     # (N,64,7,7)
            conv_bn_lrelu(64, 128),                                  # (N,128,7,7)
        )
        self.fc = nn.Linear(128, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mean(dim=(2, 3))                         # (N,128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))                             # (N,10)


@torch.no_grad()
def test_error(model: nn.Module, x_test: np.ndarray, y_test: np.ndarray, mean: float, std: float,
               batch: int = 1000) -> float:
    """Top-1 error (%) on the 10,000 test images, eval mode, the same normalisation as training."""
    model.eval()
    wrong = 0
    for i in range(0, len(x_test), batch):
        x = (torch.from_numpy(x_test[i:i + batch]).float()[:, None] / 255 - mean) / std
        out = model(x)
        logits = out["logits"] if isinstance(out, dict) else out
        wrong += int((logits.argmax(1).numpy() != y_test[i:i + batch]).sum())
    model.train()
    return 100.0 * wrong / len(x_test)


# ----------------------------------------------------------------------------- measuring

class Meter:
    """Wall and process-CPU seconds of the training loop only (evaluation and set-up excluded)."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> "Meter":
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall += time.perf_counter() - self._w
        self.cpu += time.process_time() - self._c


def peak_rss_mib() -> float:
    """Peak resident memory of this process (and of any DataLoader workers it has waited for), MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, kids) / 1024, 1)


def write_result(out: str | Path, **fields) -> dict:
    """One run's record: everything the harness tabulates, plus the machine."""
    rec = {**fields, "peak_rss_mib": peak_rss_mib(), "threads": torch.get_num_threads(),
           "machine": f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__}"}
    its = rec.get("iterations") or 0
    if its and rec.get("train_wall_s"):
        rec["s_per_it_wall"] = rec["train_wall_s"] / its
        rec["s_per_it_cpu"] = rec["train_cpu_s"] / its
        rec["images_per_s"] = rec["images"] / rec["train_wall_s"]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(rec, indent=1))
    return rec


def seed_all(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peer_args(algorithms: list[str], split_help: str = "a metassl run's split.json",
              extra: list[tuple[str, str]] = ()) -> argparse.Namespace:
    """The command line every peer script shares (algorithm, iterations, seed, split, setting, threads, out,
    plus `extra` optional (flag, help) pairs); sets the thread count and seeds every generator."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--algorithm", choices=algorithms, required=True)
    ap.add_argument("--iterations", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", required=True, help=split_help)
    ap.add_argument("--setting", choices=["matched", "defaults"], default="matched")
    ap.add_argument("--threads", type=int, default=2)
    for flag, text in extra:
        ap.add_argument(flag, help=text)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    seed_all(a.seed)
    return a
