"""Predict classes of new images with a trained run, from Python (`metassl.load`) or as a CSV (`metassl predict`).

    metassl predict runs/fmnist-metamixup new_images.npz --out predictions.csv
    metassl predict runs/fmnist-metamixup photos/            # CSV to stdout

    model = metassl.load("runs/fmnist-metamixup")
    model.predict(x)            # x: uint8 (N, H, W) or (N, H, W, C), as in an .npz -> class indices (N,)
    model.predict_proba("photos/")                            # (N, K) probabilities, columns = model.classes

INPUT is an .npz with key `x` (uint8, (N, H, W) or (N, H, W, C)), a folder of images (flat, or with class
subfolders one level deep; the folder names are not used), or in Python also a list of image files, a uint8
numpy array or torch tensor (any device) shaped like an .npz's `x`, or a list of equal-shape uint8 arrays.
Image files are converted to the run's channels (grayscale or RGB) and resized to its image size with
Pillow; arrays must already match (channels last). No images give an empty result: (0,), or (0, K).
Images are normalised with the mean/std saved in the checkpoint, and the class names travel with it.
CSV columns: file_or_index, predicted_class, p_<class name> for every class (rows sum to 1).
"""
from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..data import formats
from ..errors import UserError
from ..torch_utils import to_nchw

Images = Union[np.ndarray, Tensor, str, Path, Sequence[Union[str, Path, np.ndarray, Tensor]]]
ACCEPTED = ("a uint8 array or torch tensor (N, H, W[, C]), a list of equal-shape uint8 arrays, an .npz path, "
            "an image folder or a list of image files")


def _numpy(x: np.ndarray | Tensor) -> np.ndarray:
    """A tensor (any device) as a numpy array; an array as it is."""
    if not isinstance(x, Tensor):
        return x
    x = x.detach().cpu()
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()


def _checked(x: np.ndarray, what: str, channels: int, size: int, torch_style: bool = False) -> np.ndarray:
    """uint8 (N, H, W[, C]) images as NHWC, or a one-line error saying how they differ from what the run takes
    (`what`: the images, as the message names them; `torch_style`: give the fixes in torch's words)."""
    if x.dtype != np.uint8:
        raise UserError(f"{what} must be uint8, got {x.dtype}{formats.uint8_advice(x, 'x', torch_style)}")
    want = (size, size, channels)
    nhwc = x[..., None] if x.ndim == 3 else x
    if nhwc.ndim == 4 and nhwc.shape[1:] == want:
        return nhwc
    if x.shape in (want, want[:2]):
        raise UserError(f"{what} have shape {x.shape}, one image; pass a batch of one: x[None]")
    if x.ndim == 4 and (x.shape[1] <= 4 < x.shape[3] or x.shape[1:] == (channels, size, size)):
        flip = "x.permute(0, 2, 3, 1)" if torch_style else "x.transpose(0, 2, 3, 1)"
        raise UserError(f"{what} have shape {x.shape}, which is channels-first (N, C, H, W); the run takes "
                        f"channels-last (N, {size}, {size}, {channels}): convert with {flip}")
    if nhwc.ndim != 4:
        raise UserError(f"{what} must have shape (N, H, W) or (N, H, W, C), got {x.shape}")
    raise UserError(f"{what} are {nhwc.shape[1]}x{nhwc.shape[2]} with {nhwc.shape[3]} channel(s) but the run "
                    f"expects {size}x{size} with {channels}; resize/convert them first")


def _read_files(files: list[Path], channels: int, size: int) -> np.ndarray:
    """Image files as uint8 (N, size, size, channels): converted to the run's channels and resized."""
    if not files:
        return np.zeros((0, size, size, channels), np.uint8)
    if channels not in (1, 3):
        raise UserError(f"the run expects {channels}-channel images; image files give grayscale or RGB, "
                        f"so pass an .npz with key x of shape (N, {size}, {size}, {channels})")
    x = formats.read_images(files, size)                                         # RGB (N, size, size, 3)
    if channels == 1:                                                            # ITU-R 601-2 luma, as PIL's "L"
        from PIL import Image
        x = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in x])[..., None]
    return x


def read_input(path: Path, channels: int, size: int, arg: str = "images") -> tuple[list[str], np.ndarray]:
    """(names, uint8 (N, H, W, C) images) of an .npz or an image folder, checked against the run's shape;
    `arg` is the Python argument that named `path` (the command line's INPUT)."""
    if path.is_dir():
        files = formats.list_images(path) + [f for d in sorted(p for p in path.iterdir() if p.is_dir()
                                                               and not p.name.startswith("."))
                                             for f in formats.list_images(d)]
        if not files:
            raise UserError(f"{path} holds no images (allowed: {', '.join(formats.IMAGE_EXTENSIONS)}), "
                            f"neither directly nor in subfolders")
        return [f.relative_to(path).as_posix() for f in files], _read_files(files, channels, size)
    named = (f"{arg}={str(path)!r}", f"INPUT {path}")
    if not path.exists():
        raise UserError.worded("{input} does not exist; pass an .npz file or a folder of images", input=named)
    if path.suffix.lower() != ".npz" or not path.is_file():
        raise UserError.worded("{input} is neither an image folder nor an .npz file", input=named)
    arrays = formats.read_npz(path, expected="x (uint8 images)")
    if "x" not in arrays:
        raise UserError(f"npz file {path} has no key 'x' (has {sorted(arrays)}); expected x: uint8 (N, H, W[, C])")
    x = _checked(arrays["x"], f"the images (x) in npz file {path}", channels, size)
    return [str(i) for i in range(len(x))], x


@dataclass
class TrainedModel:
    """A trained run's model with its class names and preprocessing: what `metassl.load` returns."""

    model: nn.Module          # eval mode; the EMA weights when the run kept an EMA, else the raw ones
    classes: list[str]        # class k's name; predict() returns k
    mean: Tensor              # (C,) per-channel mean of the training images on the 0..1 scale
    std: Tensor               # (C,) per-channel std, same scale
    channels: int
    image_size: int
    config: Any               # the run's resolved Config
    batch_size: int = 256     # images per forward pass

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto") -> "TrainedModel":
        """The run's checkpoint (last.pt, or prev.pt if last.pt is damaged) on `device`."""
        from .evaluate import load_run

        model, cfg, state = load_run(Path(run_dir), device)
        channels, size = (int(v) for v in state["shape"])
        return cls(model, list(state["classes"]), state["mean"], state["std"], channels, size, cfg,
                   cfg.eval_batch_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def read(self, images: Images) -> tuple[list[str], np.ndarray]:
        """(names, uint8 (N, H, W, C)) of an array or tensor, a list of arrays, an .npz, an image folder or a
        list of image files."""
        c, size = self.channels, self.image_size
        if isinstance(images, (str, Path)):
            return read_input(Path(images), c, size)
        if isinstance(images, (np.ndarray, Tensor)):
            x = _checked(_numpy(images), "images", c, size, isinstance(images, Tensor))
            return [str(i) for i in range(len(x))], x
        if not isinstance(images, (list, tuple)):
            raise UserError(f"images of type {type(images).__name__} are not accepted; pass {ACCEPTED}")
        if all(isinstance(f, (str, Path)) for f in images):
            files = [Path(f) for f in images]
            return [str(f) for f in files], _read_files(files, c, size)
        if not all(isinstance(a, (np.ndarray, Tensor)) for a in images):
            kinds = sorted({type(a).__name__ for a in images})
            raise UserError(f"images: a list must hold only image file paths or only arrays, got {kinds}; "
                            f"pass {ACCEPTED}")
        shapes = sorted({tuple(a.shape) for a in images})
        if len(shapes) > 1:
            raise UserError(f"images: the arrays in the list differ in shape ({shapes[0]}, {shapes[1]}, ...); "
                            f"give them one shape, or pass their image files to be resized")
        x = _checked(np.stack([_numpy(a) for a in images]), "images", c, size, isinstance(images[0], Tensor))
        return [str(i) for i in range(len(x))], x

    def logits(self, images: Images) -> np.ndarray:
        """Eval-mode logits (N, K), float32; (0, K) for no images."""
        from .evaluate import predict_logits

        x = self.read(images)[1]
        if not len(x):
            return np.zeros((0, len(self.classes)), np.float32)
        dev = self.device
        x = to_nchw(x, dev)
        return predict_logits(self.model, x, self.mean.to(dev), self.std.to(dev), self.batch_size).cpu().numpy()

    def predict_proba(self, images: Images) -> np.ndarray:
        """Class probabilities (N, K), float64, columns in the order of `classes`."""
        return torch.softmax(torch.from_numpy(self.logits(images)).double(), dim=1).numpy()

    def predict(self, images: Images) -> np.ndarray:
        """Predicted class indices (N,), int64; `classes[i]` names class i."""
        return self.logits(images).argmax(1).astype(np.int64)

    def export(self, out: str | Path) -> Path:
        """A torch.export file that needs only torch: uint8 (N, C, H, W) images in, logits out (see export.py)."""
        from .export import export_program
        return export_program(self.model, self.mean, self.std, self.classes, self.image_size, out,
                              name=self.config.model)


def load(run_dir: str | Path, device: str = "auto") -> TrainedModel:
    """A trained run ready to predict: `metassl.load("runs/mine").predict(x)`."""
    return TrainedModel.load(run_dir, device)


def predict(run_dir: str | Path, input_path: str | Path,
            device: str = "auto") -> tuple[list[str], np.ndarray, list[str]]:
    """(names, probabilities (N, K) float64, class names) for the images at input_path."""
    model = load(run_dir, device)
    names, x = read_input(Path(input_path), model.channels, model.image_size, "input_path")
    return names, model.predict_proba(x), model.classes


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
