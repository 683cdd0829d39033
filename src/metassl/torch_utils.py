"""Small torch helpers shared by the data, algorithm, training and evaluation code (which sit above this).

eval_mode    run a block in eval mode and restore every module's own training flag
ema_update   the exponential moving average of a model's weights (trainer's EMA, Mean Teacher's teacher)
to_nchw      uint8/float NHWC numpy images -> NCHW tensors (files store NHWC, models read NCHW)
resolve_device  a config's device string -> torch.device
keep_freed_memory  glibc keeps freed blocks for reuse (a CPU step reallocates the same sizes every iteration)
native_bf16  whether a device computes bfloat16 in hardware (amp=true autocasts only there)
rng_state, set_rng_state  this process's torch RNGs (CPU and every CUDA device), for checkpoints and throwaway timing
"""
from __future__ import annotations

import ctypes
import functools
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .errors import UserError


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run a block with the model in eval mode, then restore each module's own training flag."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema = decay * ema + (1 - decay) * model for parameters; buffers (BN statistics) are copied."""
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def to_nchw(x: np.ndarray, device: torch.device | str | None = None) -> Tensor:
    """(N, H, W, C) array -> contiguous (N, C, H, W) tensor of the same dtype, on `device`."""
    t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    return t if device is None else t.to(device)


@functools.lru_cache(maxsize=None)
def native_bf16(device: torch.device) -> bool:
    """Whether `device` has bfloat16 arithmetic units: a CUDA GPU that supports bf16, or a CPU with AVX512-BF16,
    AMX-BF16 or Arm's BF16 extension. Elsewhere oneDNN emulates bf16 and an autocast step is slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(" ".join(line.split(":", 1)[1] for line in f if line.startswith(("flags", "Features"))).split())
    except (OSError, IndexError):
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' picks CUDA when present (cuda:LOCAL_RANK under torchrun); CUDA without CUDA is a one-line error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={name!r} but CUDA is not available here; use device=cpu or device=auto")
    if name == "cuda":
        name = f"cuda:{local_rank}"
    try:
        return torch.device(name)
    except RuntimeError:
        raise UserError(f"device={name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks up to 32 MiB for reuse instead of returning them to the OS.

    PyTorch's CPU allocator is plain malloc: every training step frees and reallocates the same activation
    sizes, and a block glibc gave back comes back as fresh pages, one page fault per 4 KiB (about 7,500 per
    FixMatch step of the 5-conv net at batch 192, almost none after this). The process keeps its peak
    memory instead. Returns False where there is no glibc (the call is then a no-op)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3          # glibc's <malloc.h> parameter numbers
    return bool(mallopt(m_mmap_threshold, 32 << 20) and mallopt(m_trim_threshold, 1 << 30))   # 32 MiB: glibc's cap


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states: the CPU generator and, where CUDA is present, every device's."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what `rng_state` returned (a checkpoint from a CUDA machine restores its CPU state on one without)."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
