"""Predict classes of new images with a trained run: a CSV of the predicted class and its probabilities.

    metassl predict runs/fmnist-metamixup new_images.npz --out predictions.csv
    metassl predict runs/fmnist-metamixup photos/            # CSV to stdout

INPUT is an .npz with key `x` (uint8, (N, H, W) or (N, H, W, C)), or a folder of images: flat, or with
class subfolders (one level; the folder names are not used). Folder images are converted to the run's
channels (grayscale or RGB) and resized to its image size with Pillow; an .npz must already match.
Images are normalised with the mean/std saved in the checkpoint, and the class names travel with it.
CSV columns: file_or_index, predicted_class, p_<class name> for every class (rows sum to 1).
"""
from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import torch

from .data import formats
from .errors import UserError
from .torch_utils import to_nchw


def read_input(path: Path, channels: int, size: int) -> tuple[list[str], np.ndarray]:
    """(names, uint8 (N, H, W, C) images) of an .npz or an image folder, checked against the run's shape."""
    if path.is_dir():
        if channels not in (1, 3):
            raise UserError(f"the run expects {channels}-channel images; image folders give grayscale or RGB, "
                            f"so pass an .npz with key x of shape (N, {size}, {size}, {channels})")
        files = formats.list_images(path) + [f for d in sorted(p for p in path.iterdir() if p.is_dir()
                                                               and not p.name.startswith("."))
                                             for f in formats.list_images(d)]
        if not files:
            raise UserError(f"{path} holds no images (allowed: {', '.join(formats.IMAGE_EXTENSIONS)}), "
                            f"neither directly nor in subfolders")
        x = formats.read_images(files, size)                                     # RGB (N, size, size, 3)
        if channels == 1:                                                        # ITU-R 601-2 luma, as PIL's "L"
            from PIL import Image
            x = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in x])[..., None]
        return [f.relative_to(path).as_posix() for f in files], x
    if not path.exists():
        raise UserError(f"INPUT {path} does not exist; pass an .npz file or a folder of images")
    if path.suffix.lower() != ".npz" or not path.is_file():
        raise UserError(f"INPUT {path} is neither an image folder nor an .npz file")
    arrays = formats.read_npz(path)
    if "x" not in arrays:
        raise UserError(f"npz file {path} has no key 'x' (has {sorted(arrays)}); expected x: uint8 (N, H, W[, C])")
    x = formats.as_nhwc(arrays["x"], "x", path)
    if x.shape[1:] != (size, size, channels):
        raise UserError(f"npz file {path}: images are {x.shape[1]}x{x.shape[2]} with {x.shape[3]} channel(s) but "
                        f"the run expects {size}x{size} with {channels}; resize/convert them first")
    return [str(i) for i in range(len(x))], x


def predict(run_dir: str | Path, input_path: str | Path,
            device: str = "auto") -> tuple[list[str], np.ndarray, list[str]]:
    """(names, probabilities (N, K) float64, class names) for the images at input_path."""
    from .evaluate import load_run, predict_logits

    model, cfg, state = load_run(Path(run_dir), device)
    channels, size = (int(v) for v in state["shape"])
    names, x = read_input(Path(input_path), channels, size)
    dev = next(model.parameters()).device
    logits = predict_logits(model, to_nchw(x, dev), state["mean"].to(dev), state["std"].to(dev), cfg.eval_batch_size)
    return names, torch.softmax(logits.double(), dim=1).cpu().numpy(), list(state["classes"])


def write_csv(names: list[str], probs: np.ndarray, classes: list[str], out: str | Path | None) -> None:
    """The CSV to `out`, or to stdout when out is None."""
    f = open(out, "w", newline="") if out else sys.stdout
    try:
        w = csv.writer(f)
        w.writerow(["file_or_index", "predicted_class"] + [f"p_{c}" for c in classes])
        for name, p in zip(names, probs):
            w.writerow([name, classes[int(p.argmax())]] + [f"{v:.6g}" for v in p])
    finally:
        if out:
            f.close()
