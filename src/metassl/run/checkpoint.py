"""Checkpoints that never tear: write a temporary file, fsync, keep the previous good one, rename.

A run directory holds the newest checkpoint (`last`) and the one before it (`prev`); their paths come from
rundir.RunDir. Loading uses `torch.load(weights_only=True)` (no arbitrary pickle execution) and falls back
to `prev`, with a warning, when `last` is missing, truncated or corrupt.

torch's zip format does not check its CRCs on load, so a flipped bit inside a tensor would load
silently; every checkpoint therefore carries a digest of its whole content (`_digest`, BLAKE2b over
every tensor's bytes, dtype and shape and every other value), checked on load.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from .files import fsync_dir
from .rundir import RunDir

DIGEST_KEY = "_digest"


def _update(h: Any, obj: Any) -> None:
    """Feed `obj` (nested dicts/lists/tuples of tensors and plain values) into the hash, canonically."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for k, v in obj.items():
            _update(h, k)
            _update(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{type(obj).__name__[0]}{len(obj)};".encode())
        for v in obj:
            _update(h, v)
    else:
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def digest(state: dict[str, Any]) -> str:
    """Hex BLAKE2b of a checkpoint's content (without its own digest entry)."""
    h = hashlib.blake2b(digest_size=16)
    _update(h, {k: v for k, v in state.items() if k != DIGEST_KEY})
    return h.hexdigest()


def _paths(run_dir: RunDir | str | Path) -> RunDir:
    """The checkpoint paths of a run directory (a RunDir or its path)."""
    return run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)


def save(state: dict[str, Any], run_dir: RunDir | str | Path) -> None:
    """Write `state` as the new `last`; the old `last` becomes `prev`. A kill at any point
    leaves at least one complete checkpoint on disk: the new file is complete and fsynced before any
    rename, and between the two renames `prev` holds the previous one (load falls back to it).
    A failed write (disk full) removes the partial file and leaves both checkpoints as they were."""
    paths = _paths(run_dir)
    tmp = paths.last_tmp
    try:
        with open(tmp, "wb") as f:
            torch.save({**state, DIGEST_KEY: digest(state)}, f)
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UserError(f"cannot write checkpoint {tmp}: {e.strerror or e}; the previous checkpoint in "
                        f"{paths} is kept") from None
    if paths.last.exists():
        os.replace(paths.last, paths.prev)
    os.replace(tmp, paths.last)
    fsync_dir(paths.path)


def _load_one(path: Path) -> dict[str, Any]:
    """One checkpoint file, or an exception saying why it is not usable."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or "iteration" not in state or "model" not in state:
        raise ValueError("not a metassl checkpoint")
    expected = state.pop(DIGEST_KEY, None)
    if expected is not None and digest(state) != expected:   # files from before digests have none
        raise ValueError("content does not match its digest (corrupt)")
    return state


def load(run_dir: RunDir | str | Path) -> dict[str, Any]:
    """The newest readable checkpoint in `run_dir`; UserError if there is none."""
    paths = _paths(run_dir)
    errors = []
    for path in (paths.last, paths.prev):
        name = path.name
        if not path.exists():
            errors.append(f"{name}: missing")
            continue
        try:
            state = _load_one(path)
        except Exception as e:  # noqa: BLE001 - any failure to read means: try the previous one
            detail = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(e)).split())   # one line, no terminal colours
            errors.append(f"{name}: {type(e).__name__}: {detail[:160]}")
            continue
        if path == paths.prev:
            print(f"metassl: warning: {paths.last} is unusable ({errors[-1]}); resuming from {name} "
                  f"(iteration {state['iteration']})", file=sys.stderr)
        return state
    raise UserError.worded("no readable checkpoint in {dir} ({why}); start the run again with {force} (without "
                           "{resume})", dir=paths.path, why="; ".join(errors))
