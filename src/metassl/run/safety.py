"""Run safety: stop cleanly on SIGINT/SIGTERM, catch divergence (a run directory's own rules: rundir.py).

Used by the trainer (train.py); see docs/RELIABILITY.md for what is promised and how it is tested.
"""
from __future__ import annotations

import functools
import signal
import threading
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import Interrupted


class DivergenceWatch:
    """NaN/Inf in a loss term or in the pseudo-labels, tracked on the device with no host sync per step: it
    keeps the first iteration at which a watched term stopped being finite, and which terms those were.
    `check` syncs once (the trainer calls it on logging, evaluation and checkpoint steps)."""

    def __init__(self) -> None:
        self.names: tuple[str, ...] = ()
        self.first: Tensor | None = None   # 0-dim int64: first bad iteration (1-based), -1 while all finite
        self.flags: Tensor | None = None   # bool (len(names),): which terms were not finite then

    def update(self, n: int, terms: dict[str, Tensor]) -> None:
        terms = {k: v.detach() for k, v in terms.items() if isinstance(v, Tensor) and v.is_floating_point()}
        if not terms:
            return
        # one fused norm per term: NaN/Inf anywhere in a term makes its norm NaN/Inf (~0.1 ms a step on CPU)
        finite = torch.isfinite(torch.stack(torch._foreach_norm(list(terms.values()))))
        if tuple(terms) != self.names:          # the first step, or an algorithm whose terms vary
            if self.check() is not None:
                return                          # keep the first divergence
            self.names = tuple(terms)
            self.first = torch.full((), -1, dtype=torch.long, device=finite.device)
            self.flags = torch.zeros_like(finite)
        newly = (self.first < 0) & ~finite.all()
        self.first = self.first.masked_fill(newly, n)
        self.flags = torch.where(newly, ~finite, self.flags)

    def check(self) -> tuple[int, list[str]] | None:
        """(first bad iteration, the terms that were NaN/Inf there), or None while everything is finite."""
        if self.first is None or int(self.first) < 0:
            return None
        return int(self.first), [k for k, bad in zip(self.names, self.flags.tolist()) if bad]


def nonfinite_weights(*modules: nn.Module | None) -> list[str]:
    """Names of floating-point parameters/buffers holding NaN or Inf (one host sync)."""
    named = [(k, v) for m in modules if m is not None for k, v in m.state_dict().items() if v.is_floating_point()]
    if not named:
        return []
    ok = torch.stack([torch.isfinite(v).all() for _, v in named]).tolist()
    return [k for (k, _), good in zip(named, ok) if not good]


class StopSignals:
    """SIGINT/SIGTERM during training: finish the current iteration, write a checkpoint, stop with
    `Interrupted` (exit status 128 + signal). Before the run is armed (its directory not yet written) or on
    a second signal it stops at once: nothing half-written is left either way, checkpoints being atomic.
    Installed only from the main thread; the previous handlers are restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.armed = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.armed and self.signum is None:
            self.signum = signum                # the loop checks it after each iteration
            return
        why = ("(a second signal): stopped at once, the newest checkpoint on disk is kept" if self.signum is not None
               else "before the run started; nothing was written")
        raise Interrupted(f"interrupted by {name} {why}", 128 + signum)


_STOP: StopSignals | None = None   # the handlers of the train() call in progress (see stoppable)


def current_stop() -> StopSignals:
    """The StopSignals of the train() call in progress (a detached one outside `stoppable`)."""
    return _STOP or StopSignals()


def stoppable(fn):
    """Run `fn` (train) with StopSignals installed and reachable as _STOP; restore everything afterwards."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        global _STOP
        outer, _STOP = _STOP, StopSignals()
        try:
            with _STOP:
                return fn(*args, **kwargs)
        finally:
            _STOP = outer
    return wrapper
