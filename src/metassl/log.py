"""Training logs: metrics.jsonl (written and read back), optional TensorBoard events, the progress line,
pseudo-label quality."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .errors import UserError
from .files import atomic_write_text


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


def parse_records(text: str) -> tuple[list[dict[str, Any]], list[int]]:
    """The whole records of a metrics.jsonl text (dicts with an iteration and a kind) and the numbers of the
    non-blank lines that are not one (a run killed mid-write tears its last line)."""
    records, torn = [], []
    for i, line in enumerate(text.splitlines(), 1):
        try:
            rec = json.loads(line)
            if isinstance(rec, dict) and isinstance(rec.get("iteration"), int) and "kind" in rec:
                records.append(rec)
                continue
        except ValueError:
            pass
        if line.strip():
            torn.append(i)
    return records, torn


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of run_dir/metrics.jsonl, warning once about lines that are not whole records."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"{run_dir} has no metrics.jsonl; pass a run directory written by `metassl train`")
    records, torn = parse_records(path.read_text(errors="replace"))
    if torn:
        print(f"metassl: warning: skipped {len(torn)} unreadable line(s) of {path}", file=sys.stderr)
    if not records:
        raise UserError(f"{path} holds no records yet; plot after the first logging step")
    return records


class Logger:
    """metrics.jsonl (always), TensorBoard events (when tensorboard is installed), a progress line."""

    def __init__(self, run_dir: Path, total: int, quiet: bool, enabled: bool = True) -> None:
        """`enabled=False` (torchrun ranks other than 0): log nothing, write nothing."""
        self.path, self.total, self.quiet, self.enabled = run_dir / "metrics.jsonl", total, quiet or not enabled, enabled
        self.tty = sys.stderr.isatty()
        self.tb = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(run_dir / "tb"))
        except Exception:  # noqa: BLE001 - tensorboard is optional
            pass

    def truncate_after(self, iteration: int) -> None:
        """On resume: drop records written after the checkpoint being resumed from, and any line that is not a
        whole record (a power loss can tear the last one mid-write), with a warning."""
        if not (self.enabled and self.path.exists()):
            return
        records, torn = parse_records(self.path.read_text(errors="replace"))
        if torn:
            many = len(torn) > 1
            print(f"metassl: warning: {self.path} line{'s' * many} {', '.join(map(str, torn))} "
                  f"{'are' if many else 'is'} not a whole record (torn by a crash mid-write?); dropped", file=sys.stderr)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records if r["iteration"] <= iteration))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
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
