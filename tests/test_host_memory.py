"""The trainer's CPU allocator setting: freed activation blocks are reused instead of faulted in again."""
from __future__ import annotations

import subprocess
import sys

import pytest

from metassl.torch_utils import keep_freed_memory

CYCLES = """
import resource, sys, torch
from metassl.torch_utils import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def step():   # a training step's pattern: large activations allocated, some freed early, smaller ones after
    ts = [torch.ones(4_800_000 + 1000 * i) for i in range(6)]
    del ts[::2]
    ts += [torch.ones(2_400_000) for _ in range(3)]
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


def faults_per_step(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def test_kept_blocks_cut_the_page_faults_of_repeated_steps() -> None:
    if not keep_freed_memory():
        pytest.skip("no glibc malloc here")
    plain, kept = faults_per_step("plain"), faults_per_step("keep")
    assert kept < plain / 3, (plain, kept)
