"""What USB (semilearn 0.3.2) needs to import and train on a CPU-only torch; import before semilearn.

USB assumes CUDA throughout (`.cuda(self.gpu)` on every batch and model, CUDA-event timers, a launcher
that calls torch.cuda.set_device). None of this touches its algorithms' code:
- torchvision's compiled-operator registrations are skipped (torchvision_shim.py);
- torchaudio, wandb and aim are empty modules: imported at module level by its speech nets and its
  logging hooks, never used here (no audio, no wandb/aim logging);
- `torch.Tensor.cuda` and `nn.Module.cuda` return self, so its `.cuda(gpu)` calls keep everything on CPU;
- `drop_timer_hook(algorithm)` removes its TimerHook (it records torch.cuda.Event), and the harness calls
  `algorithm.train()` directly instead of its launcher.
"""
import importlib.machinery
import sys
import types

import torch

import torchvision_shim  # noqa: F401

for name in ("torchaudio", "wandb", "aim"):
    stub = types.ModuleType(name)
    stub.__spec__ = importlib.machinery.ModuleSpec(name, None)   # transformers probes find_spec("torchaudio")
    sys.modules.setdefault(name, stub)

torch.Tensor.cuda = lambda self, *args, **kwargs: self
torch.nn.Module.cuda = lambda self, *args, **kwargs: self


def drop_timer_hook(algorithm) -> None:
    """Remove USB's TimerHook (CUDA events) from an algorithm's hook list."""
    algorithm._hooks = [h for h in algorithm._hooks if type(h).__name__ != "TimerHook"]
    algorithm.hooks_dict.pop("TimerHook", None)
