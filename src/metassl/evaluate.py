"""Evaluation, in one place: eval-mode logits, penultimate features and error counts of a model, and a run
directory's model and test error from its checkpoint.

The trainer, `metassl eval`, `predict`, `features`, `check` and the estimator all go through these
functions. Every one runs the model in eval mode and restores each module's own train/eval flag.
Images are uint8 (N, C, H, W) (float inputs are used as they are), normalised with the training set's
mean/std here, in chunks of `batch_size`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import Tensor, nn

from . import checkpoint
from .config import load_saved
from .data import load_dataset
from .data.augment import normalize
from .errors import UserError
from .models import build_model
from .torch_utils import eval_mode, resolve_device, to_nchw


@torch.no_grad()
def _in_chunks(model: nn.Module, fn: Callable[[Tensor], Tensor], x: Tensor, mean: Tensor, std: Tensor,
               batch_size: int) -> Tensor:
    with eval_mode(model):
        return torch.cat([fn(normalize(x[i:i + batch_size], mean, std)).float() for i in range(0, len(x), batch_size)])


def predict_logits(model: nn.Module, x: Tensor, mean: Tensor, std: Tensor, batch_size: int) -> Tensor:
    """Eval-mode logits (N, K), float32, on the model's device."""
    return _in_chunks(model, model, x, mean, std, batch_size)


def penultimate(model: nn.Module, x: Tensor, mean: Tensor, std: Tensor, batch_size: int) -> Tensor:
    """Eval-mode `model.features(x)` (N, F), float32: the globally pooled features before `fc`."""
    return _in_chunks(model, model.features, x, mean, std, batch_size)


def error_percent(model: nn.Module, x: Tensor, y: Tensor, mean: Tensor, std: Tensor, batch_size: int) -> float:
    """Top-1 error in percent."""
    pred = predict_logits(model, x, mean, std, batch_size).argmax(1)
    return 100.0 * (pred != y).float().mean().item()


@torch.no_grad()
def error_counts(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device) -> Tensor:
    """(wrong, total) as a float64 tensor on `device` (no host sync) over (normalised images, labels) chunks,
    e.g. a data source's `eval_batches` shard; the trainer sums it over ranks."""
    wrong = torch.zeros((), dtype=torch.float64, device=device)
    total = 0
    with eval_mode(model):
        for x, y in batches:
            wrong += (model(x).argmax(1) != y).sum()
            total += len(y)
    return torch.stack([wrong, torch.tensor(float(total), dtype=torch.float64, device=device)])


def load_run(run_dir: Path, device: str = "auto") -> tuple[Any, Any, dict[str, Any]]:
    """(model with the evaluated weights loaded, config, checkpoint state) of a run directory."""
    if not (run_dir / "config.json").exists():
        raise UserError(f"{run_dir} holds no metassl run (no config.json)")
    cfg = load_saved(run_dir / "config.json")
    state = checkpoint.load(run_dir)
    dev = resolve_device(device)
    weights = state["ema"] if state.get("ema") else state["model"]
    in_channels, image_size = state["shape"]
    model = build_model(cfg.model, len(state["classes"]), int(in_channels), int(image_size))
    model.load_state_dict(weights)
    return model.to(dev).eval(), cfg, state


def evaluate_run(run_dir: Path, device: str = "auto") -> dict[str, Any]:
    """Test error (%) of the run's checkpoint on its data set's test split."""
    model, cfg, state = load_run(run_dir, device)
    data = load_dataset(cfg.dataset, cfg.data_dir or None, cfg.image_size or None)
    dev = next(model.parameters()).device
    x, y = to_nchw(data.x_test, dev), torch.from_numpy(data.y_test.astype("int64")).to(dev)
    err = error_percent(model, x, y, state["mean"].to(dev), state["std"].to(dev), cfg.eval_batch_size)
    return {"test_error": err, "iteration": state["iteration"], "evaluated": "ema" if state.get("ema") else "raw"}
