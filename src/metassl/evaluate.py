"""Evaluate a finished or interrupted run from its checkpoint (the weights the run itself evaluated)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from . import checkpoint
from .config import load_saved
from .data import load_dataset
from .errors import UserError
from .models import build_model
from .train import error_percent, resolve_device


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
    import numpy as np
    import torch

    dev = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(data.x_test.transpose(0, 3, 1, 2))).to(dev)
    y = torch.from_numpy(data.y_test.astype(np.int64)).to(dev)
    err = error_percent(model, x, y, state["mean"].to(dev), state["std"].to(dev), cfg.eval_batch_size)
    return {"test_error": err, "iteration": state["iteration"], "evaluated": "ema" if state.get("ema") else "raw"}
