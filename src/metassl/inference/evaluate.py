"""Evaluation, in one place: eval-mode logits, penultimate features and error counts of a model, and a run
directory's model and test error from its checkpoint.

The trainer, `metassl eval`, `predict`, `features`, `check` and the estimator all go through these
functions. Every one runs an eval-mode copy of the model; the model itself (its train/eval flag) is untouched.
Images are uint8 (N, C, H, W) (float inputs are used as they are), normalised with the training set's
mean/std here, in chunks of `batch_size`.

The passes run `inference_copy(model)` (BatchNorm folded into the convs, activations in place) under
inference_mode, and on CPU in chunks of at most CPU_CHUNK images: a chunk's activations then stay in the
core's cache (256 ran 1.4x faster than 1000 at one thread; benchmarks/inference_speed.py). They stay fp32 under
amp=true: a reported error is a measurement, and bf16 flips predictions near a tie.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from ..run import checkpoint
from ..data import load_dataset
from ..data.augment import normalize
from ..models import build_model, inference_copy
from ..run.rundir import RunDir
from ..torch_utils import resolve_device, to_nchw


CPU_CHUNK = 256     # images per forward on CPU (fastest of 128/256/512/1000 at 1 and 2 threads, cnn and convlarge)


def chunk_size(batch_size: int, device: torch.device) -> int:
    """Images per inference forward: `batch_size` (the eval_batch_size key), at most CPU_CHUNK on CPU."""
    return min(batch_size, CPU_CHUNK) if device.type == "cpu" else batch_size


def _in_chunks(model: nn.Module, features: bool, x: Tensor, mean: Tensor, std: Tensor, batch_size: int) -> Tensor:
    """The folded copy's logits (or features) of x, chunk by chunk, into one float32 tensor made outside
    inference mode (so callers may use it as any other tensor)."""
    fast = inference_copy(model)
    fn = fast.features if features else fast
    step = chunk_size(batch_size, x.device)
    out = None
    for i in range(0, len(x), step):
        with torch.inference_mode():
            v = fn(normalize(x[i:i + step], mean, std)).float()
        if out is None:
            out = torch.empty((len(x), *v.shape[1:]), device=v.device)
        out[i:i + len(v)] = v
    if out is None:                                  # no images: the right (0, ...) shape
        with torch.no_grad():
            out = fn(normalize(x, mean, std)).float()
    return out


def predict_logits(model: nn.Module, x: Tensor, mean: Tensor, std: Tensor, batch_size: int) -> Tensor:
    """Eval-mode logits (N, K), float32, on the model's device."""
    return _in_chunks(model, False, x, mean, std, batch_size)


def penultimate(model: nn.Module, x: Tensor, mean: Tensor, std: Tensor, batch_size: int) -> Tensor:
    """Eval-mode `model.features(x)` (N, F), float32: the globally pooled features before `fc`."""
    return _in_chunks(model, True, x, mean, std, batch_size)


def error_percent(model: nn.Module, x: Tensor, y: Tensor, mean: Tensor, std: Tensor, batch_size: int) -> float:
    """Top-1 error in percent."""
    pred = predict_logits(model, x, mean, std, batch_size).argmax(1)
    return 100.0 * (pred != y).float().mean().item()


def error_counts(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], device: torch.device) -> Tensor:
    """(wrong, total) as a float64 tensor on `device` (no host sync) over (normalised images, labels) chunks,
    e.g. a data source's `eval_batches` shard; the trainer sums it over ranks."""
    fast = inference_copy(model)
    wrong = torch.zeros((), dtype=torch.float64, device=device)
    total = 0
    with torch.inference_mode():
        for x, y in batches:
            step = chunk_size(len(x), x.device)
            for xc, yc in zip(x.split(step), y.split(step)):
                wrong += (fast(xc).argmax(1) != yc).sum()
            total += len(y)
    return torch.stack([wrong, torch.tensor(float(total), dtype=torch.float64, device=device)])


def load_run(run_dir: Path, device: str = "auto") -> tuple[Any, Any, dict[str, Any]]:
    """(model with the evaluated weights loaded, config, checkpoint state) of a run directory."""
    run = RunDir(run_dir)
    cfg = run.read_config()
    state = checkpoint.load(run)
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
