"""Which images iteration `it` sees: a pure function of (seed, it), so resuming needs no sampler state.

The index set is visited in shuffled passes ("epochs"); pass e uses the permutation drawn from
seed * 1_000_003 + e. Iteration `it` takes positions [it*B, (it+1)*B) of the concatenated passes.
Under DDP every rank computes the same global batch and keeps its own contiguous shard, so N ranks
with B/N images each see exactly what one process with B images sees.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=4)
def _perm(n: int, seed: int, epoch: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_indices(it: int, indices: Tensor, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                  first: int | None = None) -> Tensor:
    """Indices (into the data set) of iteration `it`'s global batch, or of this rank's shard of it: positions
    [first, first + batch_size) of the passes, `first` = it * batch_size unless given (a growing batch)."""
    n = len(indices)
    first = it * batch_size if first is None else first
    pos = torch.arange(first, first + batch_size)
    epochs = pos // n
    out = torch.empty(batch_size, dtype=torch.long)
    for e in epochs.unique().tolist():
        sel = epochs == e
        out[sel] = indices[_perm(n, seed, e)[pos[sel] % n]]
    if world > 1:
        per = batch_size // world
        out = out[rank * per:(rank + 1) * per]
    return out


@dataclass(frozen=True)
class UnlabeledSchedule:
    """How many unlabeled images iteration `it` draws, and from which position of the shuffled passes: `size`
    (global) throughout, or, with `start` > 0, a batch that grows linearly from `start` to `size` over the
    `rampup` iterations after `warm` (the labeled-only warm-up), rounded down to a multiple of `world`: Fast
    FixMatch's curriculum batch size (Chen et al., 2023), cheap early steps while the unlabeled loss is small."""

    size: int
    start: int = 0
    rampup: int = 0
    warm: int = 0
    world: int = 1

    def size_at(self, it: int) -> int:
        t = it - self.warm
        if not self.start or t >= self.rampup:
            return self.size
        grown = self.start + (self.size - self.start) * max(t, 0) / self.rampup
        return max(self.world, int(grown) // self.world * self.world)

    def first(self, it: int) -> int:
        """The position of iteration `it`'s first image in the passes (iterations before `warm` draw none
        with a curriculum; without one, it * size as for the labeled batch)."""
        if not self.start:
            return it * self.size
        t = max(0, it - self.warm)
        return self._ramp_starts[min(t, self.rampup)] + max(0, t - self.rampup) * self.size

    @cached_property
    def _ramp_starts(self) -> list[int]:
        """first() at each step 0..rampup of the growth, summed once (not again every iteration)."""
        out = [0]
        for s in range(self.rampup):
            out.append(out[-1] + self.size_at(self.warm + s))
        return out
