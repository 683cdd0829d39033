"""Training logs: the metrics records (kept by the run directory, or in memory), optional TensorBoard events,
the progress line, pseudo-label quality."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .rundir import InMemory, RunDir


def pseudo_label_quality(y_tilde: Tensor, y_hat: Tensor, y_true: Tensor) -> dict[str, Tensor]:
    """Diagnostics only (benchmarks know the unlabeled labels): accuracy and calibration error (ECE,
    15 bins) of the plain and corrected pseudo-labels, and how often the correction flips the argmax
    and whether for the better. Rows with unknown labels (-1) are ignored."""
    known = y_true >= 0
    y_tilde, y_hat, y_true = y_tilde[known], y_hat[known], y_true[known]
    out: dict[str, Tensor] = {}
    for name, p in (("plain", y_tilde), ("corrected", y_hat)):
        conf, pred = p.max(1)
        correct = (pred == y_true).float()
        bins = (conf * 15).long().clamp(max=14)
        gap = torch.zeros(15, device=p.device).index_add_(0, bins, conf - correct).abs().sum() / max(1, len(p))
        out[f"pl_acc_{name}"], out[f"pl_ece_{name}"] = correct.mean(), gap
    changed = y_tilde.argmax(1) != y_hat.argmax(1)
    out["pl_changed"] = changed.float().mean()
    out["pl_changed_better"] = (changed & (y_hat.argmax(1) == y_true)).float().mean()
    out["pl_changed_worse"] = (changed & (y_tilde.argmax(1) == y_true)).float().mean()
    return out


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The metrics records of a run directory (RunDir.read_metrics)."""
    return RunDir(run_dir).read_metrics()


class Logger:
    """Records into the run's store (a RunDir, or InMemory), TensorBoard events (when tensorboard is installed
    and the run has a directory), a progress line."""

    def __init__(self, store: RunDir | InMemory, total: int, quiet: bool, enabled: bool = True) -> None:
        """`enabled=False` (torchrun ranks other than 0): log nothing, write nothing."""
        self.store, self.total, self.quiet, self.enabled = store, total, quiet or not enabled, enabled
        self.tty = sys.stderr.isatty()
        self.tb = None
        if not enabled or store.tensorboard is None:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(store.tensorboard))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            pass

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop the records written after the checkpoint being resumed from."""
        if self.enabled:
            self.store.truncate_metrics(iteration)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.store.append_metrics(record)
        if self.tb is not None:
            for k, v in record.items():
                if k not in ("iteration", "kind") and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["iteration"])

    def progress(self, it: int, rate: float, losses: dict[str, float], err: float | None, left: float = 0.0) -> None:
        """One line: bar, iteration, speed, the time left at this speed (evaluations excluded), losses, test error."""
        if self.quiet:
            return
        width = 24
        done = int(width * it / self.total)
        bar = "#" * done + "." * (width - done)
        parts = " ".join(f"{k}={v:.4f}" for k, v in losses.items() if k.startswith("loss"))
        eta = f"{int(left) // 60}m{int(left) % 60:02d}s left"
        line = (f"[{bar}] {it}/{self.total} {rate:.1f} it/s {eta} {parts}"
                + (f" test_err={err:.2f}%" if err is not None else ""))
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty and not self.quiet:
            print(file=sys.stderr)
        if self.tb is not None:
            self.tb.close()
