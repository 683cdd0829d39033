"""Which images iteration `it` sees: a pure function of (seed, it), so resuming needs no sampler state.

The index set is visited in shuffled passes ("epochs"); pass e uses the permutation drawn from
seed * 1_000_003 + e. Iteration `it` takes positions [it*B, (it+1)*B) of the concatenated passes.
Under DDP every rank computes the same global batch and keeps its own contiguous shard, so N ranks
with B/N images each see exactly what one process with B images sees.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor


@lru_cache(maxsize=4)
def _perm(n: int, seed: int, epoch: int) -> Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_indices(it: int, indices: Tensor, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> Tensor:
    """Indices (into the data set) of iteration `it`'s global batch, or of this rank's shard of it."""
    n = len(indices)
    pos = torch.arange(it * batch_size, (it + 1) * batch_size)
    epochs = pos // n
    out = torch.empty(batch_size, dtype=torch.long)
    for e in epochs.unique().tolist():
        sel = epochs == e
        out[sel] = indices[_perm(n, seed, e)[pos[sel] % n]]
    if world > 1:
        per = batch_size // world
        out = out[rank * per:(rank + 1) * per]
    return out
