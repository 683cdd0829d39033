"""Checkpoints that never tear: write a temporary file, fsync, keep the previous good one, rename.

`last.pt` is the newest checkpoint and `prev.pt` the one before it. Loading uses
`torch.load(weights_only=True)` (no arbitrary pickle execution) and falls back to `prev.pt`, with a
warning, when `last.pt` is missing, truncated or corrupt.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

LAST, PREV = "last.pt", "prev.pt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: Path, text: str) -> None:
    """Write `path.tmp`, fsync it, then rename over `path` (atomic on POSIX): readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save(state: dict[str, Any], run_dir: Path) -> None:
    """Write `state` as the new `last.pt`; the old `last.pt` becomes `prev.pt`. A kill at any point
    leaves at least one complete checkpoint on disk."""
    run_dir = Path(run_dir)
    tmp = run_dir / (LAST + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    last = run_dir / LAST
    if last.exists():
        os.replace(last, run_dir / PREV)
    os.replace(tmp, last)
    _fsync_dir(run_dir)


def _load_one(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def load(run_dir: Path) -> dict[str, Any]:
    """The newest readable checkpoint in `run_dir`; UserError if there is none."""
    run_dir = Path(run_dir)
    errors = []
    for name in (LAST, PREV):
        path = run_dir / name
        if not path.exists():
            continue
        try:
            state = _load_one(path)
            if not isinstance(state, dict) or "iteration" not in state:
                raise ValueError("not a metassl checkpoint")
            if name == PREV:
                print(f"metassl: warning: {LAST} in {run_dir} is unreadable ({errors[-1] if errors else 'missing'}); "
                      f"resuming from {PREV}", file=sys.stderr)
            return state
        except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous one
            errors.append(f"{name}: {type(e).__name__}")
    detail = "; ".join(errors) if errors else "no checkpoint file"
    raise UserError(f"no readable checkpoint in {run_dir} ({detail}); start a new run without --resume")
