"""Files that never tear: text written to a temporary, fsynced, then renamed over the target (POSIX atomic).

Used for every small file a run or a bench writes (config.json, results.json, metrics.jsonl on resume,
bench summaries); checkpoint.py writes its tensors the same way.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (best effort: some file systems refuse directory fsync)."""
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
    """Write a temporary file, fsync it, then rename over `path` (atomic on POSIX): readers never see half a
    file, and concurrent writers (several bench processes sharing one directory) never share the temporary."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:                 # a unique name is never overwritten later: remove it now
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
