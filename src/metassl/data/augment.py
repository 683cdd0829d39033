"""Batched, on-device image augmentation (airbench style): no per-sample Python loop, no private RNG.

Design: the data set lives on the training device as uint8 (N, C, H, W). Per batch the trainer calls
`to_float` (-> [0, 1]), then an augmentation (`weak_augment` / `strong_augment`, all of which take and
return float images in [0, 1]), then `normalize(x, mean, std)` with `channel_stats` of the train set.
All randomness is drawn from the global torch RNG of the tensor's device, in an order and amount that
depend only on the batch shape (never on the pixel values), so restoring torch RNG states reproduces
a run bit-identically. Outputs keep the input's shape, dtype and device.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["to_float", "channel_stats", "normalize", "random_translate", "random_flip", "random_cutout",
           "weak_augment", "strong_augment", "OPS"]

_GRAY = (0.299, 0.587, 0.114)   # ITU-R 601-2 luma, as PIL's convert("L")
_FILL = 0.5                     # gray used for Cutout and for pixels a geometric op brings in


# ----------------------------------------------------------------------------- conversion / stats

def to_float(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images -> float images in [0, 1] (the space every augmentation works in)."""
    return x.to(dtype) / 255


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of (N, C, H, W) images on the 0..1 scale, exact in float64, as float32.
    The std is floored at one grey level (1/255): a constant channel would otherwise normalise to NaN."""
    if x.dtype == torch.uint8:   # via per-channel 256-bin histograms: exact and needs no float copy
        levels = torch.arange(256, dtype=torch.float64, device=x.device) / 255
        hist = torch.stack([torch.bincount(x[:, c].reshape(-1), minlength=256)
                            for c in range(x.shape[1])]).to(torch.float64)
        total = hist.sum(1)
        mean = (hist * levels).sum(1) / total
        var = (hist * (levels - mean[:, None]) ** 2).sum(1) / total
    else:
        xd = x.to(torch.float64)
        mean, var = xd.mean(dim=(0, 2, 3)), xd.var(dim=(0, 2, 3), unbiased=False)
    return mean.to(torch.float32), var.sqrt().clamp_min(1 / 255).to(torch.float32)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(x - mean) / std per channel; uint8 input is first mapped to [0, 1] float32, float keeps dtype."""
    if x.dtype == torch.uint8:
        x = to_float(x)
    mean = mean.to(device=x.device, dtype=x.dtype)[:, None, None]
    std = std.to(device=x.device, dtype=x.dtype)[:, None, None]
    return (x - mean) / std


# ----------------------------------------------------------------------------- weak augmentation

def random_translate(x: Tensor, pad: int, mode: str = "reflect") -> Tensor:
    """Random crop with padding: pad each side by `pad`, crop HxW at a uniform offset in [0, 2*pad]^2."""
    if pad == 0:
        return x
    if mode not in ("reflect", "zeros"):
        raise ValueError(f"mode must be 'reflect' or 'zeros', got {mode!r}")
    n, c, h, w = x.shape
    if mode == "reflect" and pad >= min(h, w):
        raise ValueError(f"reflect padding needs pad < image size, got pad={pad} for {h}x{w}")
    padded = F.pad(x, (pad, pad, pad, pad), mode="reflect" if mode == "reflect" else "constant")
    dy = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), device=x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]   # (N,1,H,1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]   # (N,1,1,W)
    ni = torch.arange(n, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[ni, ci, rows, cols]


def random_flip(x: Tensor) -> Tensor:
    """Flip each sample horizontally with probability 0.5."""
    mask = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def weak_augment(x: Tensor, pad: int, flip: bool, pad_mode: str = "reflect") -> Tensor:
    """The standard weak augmentation: random translate (`pad_mode` padding: reflect, or zeros = black on the
    [0, 1] scale, i.e. before normalisation, as torchvision's RandomCrop(padding=pad)), then optional flip."""
    x = random_translate(x, pad, pad_mode)
    return random_flip(x) if flip else x


def random_cutout(x: Tensor, size: float) -> Tensor:
    """Cutout: gray square of side round(size*min(H,W)) at a uniform random centre, clipped at borders."""
    n, _, h, w = x.shape
    side = round(size * min(h, w))
    if side <= 0:
        return x
    y0 = torch.randint(0, h, (n,), device=x.device)[:, None] - side // 2
    x0 = torch.randint(0, w, (n,), device=x.device)[:, None] - side // 2
    r, c = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    in_r, in_c = (r >= y0) & (r < y0 + side), (c >= x0) & (c < x0 + side)
    return x.masked_fill((in_r[:, :, None] & in_c[:, None, :])[:, None], _FILL)


# ----------------------------------------------------------------------------- RandAugment ops
# Every op: (x (n,C,H,W) in [0,1], v (n,) magnitude in [0,1], s (n,) random sign +-1) -> same shape.

def _b(t: Tensor) -> Tensor:
    """(n,) -> (n,1,1,1) for broadcasting over images."""
    return t[:, None, None, None]


def _gray(x: Tensor) -> Tensor:
    """Luma (n,1,H,W); for C != 3 the channel mean (so C=1 is the image itself)."""
    if x.shape[1] == 3:
        return sum(k * x[:, i:i + 1] for i, k in enumerate(_GRAY))
    return x.mean(1, keepdim=True)


def _blend(degenerate: Tensor, x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """PIL ImageEnhance: degenerate + f*(x - degenerate) with factor f = 1 + s*0.9*v in [0.1, 1.9]."""
    f = _b(1 + s * 0.9 * v)
    return (degenerate + f * (x - degenerate)).clamp(0, 1)


def _warp(x: Tensor, m: Tensor, t: Tensor | None = None) -> Tensor:
    """Affine resample: m (n,2,2) pixel map output->input about the centre, t (n,2) shift in image sizes."""
    h, w = x.shape[-2:]
    if t is None:
        t = torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device)
    aspect = torch.tensor([[1, h / w], [w / h, 1]], dtype=x.dtype, device=x.device)
    theta = torch.cat([m * aspect, 2 * t[..., None]], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x - _FILL, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (out + _FILL).clamp(0, 1)   # shift so that out-of-image pixels come in as gray


def _linear(a: Tensor, b: Tensor, c: Tensor, d: Tensor) -> Tensor:
    """Stack per-sample entries into (n,2,2) matrices [[a, b], [c, d]]."""
    return torch.stack([torch.stack([a, b], -1), torch.stack([c, d], -1)], -2)


def _identity(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    return x


def _autocontrast(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """Stretch each channel to the full [0, 1] range (constant channels unchanged)."""
    lo, hi = x.amin((2, 3), keepdim=True), x.amax((2, 3), keepdim=True)
    return torch.where(hi > lo, (x - lo) / (hi - lo).clamp_min(1e-12), x)


def _brightness(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    return _blend(torch.zeros_like(x), x, v, s)


def _color(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """Saturation: blend with the grayscale image (identity for C=1)."""
    return _blend(_gray(x), x, v, s)


def _contrast(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    return _blend(_gray(x).mean((1, 2, 3), keepdim=True), x, v, s)


def _equalize(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """PIL ImageOps.equalize per sample and channel on 256 levels (integer histograms, exact)."""
    q = (x * 255).round().long().clamp(0, 255).flatten(2)          # (n, C, HW)
    hist = torch.zeros(*q.shape[:2], 256, dtype=torch.long, device=x.device)
    hist.scatter_add_(2, q, torch.ones_like(q))
    top = hist.gather(2, q.amax(2, keepdim=True))                   # count of the brightest level
    step = (q.shape[2] - top) // 255                                # 0 for (near-)constant channels
    lut = (hist.cumsum(2) - hist + step // 2) // step.clamp_min(1)
    out = lut.clamp(max=255).gather(2, q).view_as(x).to(x.dtype) / 255
    return torch.where((step > 0)[..., None], out, x)


def _posterize(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """Keep the top `bits` bits of each 8-bit value, bits = 8 - round(4v) in [4, 8]."""
    step = _b(2.0 ** torch.round(4 * v)).to(x.dtype)
    return torch.where(step > 1, torch.floor((x * 255).round() / step) * step / 255, x)


def _sharpness(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """PIL Sharpness: blend with the 3x3 SMOOTH-filtered image (borders kept)."""
    n, c, h, w = x.shape
    if h < 3 or w < 3:
        return x
    k = torch.tensor([[1, 1, 1], [1, 5, 1], [1, 1, 1]], dtype=x.dtype, device=x.device) / 13
    smooth = F.conv2d(x.reshape(n * c, 1, h, w), k[None, None]).view(n, c, h - 2, w - 2)
    degenerate = x.clone()
    degenerate[..., 1:-1, 1:-1] = smooth
    return _blend(degenerate, x, v, s)


def _solarize(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """Invert pixels >= threshold, threshold = (256 - 256v)/255 (v=0: none, v=1: all)."""
    return torch.where(x >= _b((256 - 256 * v) / 255), 1 - x, x)


def _rotate(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """Rotate by s*30v degrees about the centre."""
    a = torch.deg2rad(s * 30 * v)
    return _warp(x, _linear(a.cos(), -a.sin(), a.sin(), a.cos()))


def _shear_x(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _warp(x, _linear(one, s * 0.3 * v, zero, one))


def _shear_y(x: Tensor, v: Tensor, s: Tensor) -> Tensor:
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    return _warp(x, _linear(one, zero, s * 0.3 * v, one))


def _translate(x: Tensor, v: Tensor, s: Tensor, axis: int) -> Tensor:
    """Shift by up to 30% of the image size along `axis` (0: x, 1: y)."""
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    t = torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device)
    t[:, axis] = s * 0.3 * v
    return _warp(x, _linear(one, zero, zero, one), t)


OPS: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "identity": _identity, "autocontrast": _autocontrast, "brightness": _brightness,
    "color": _color, "contrast": _contrast, "equalize": _equalize, "posterize": _posterize,
    "rotate": _rotate, "sharpness": _sharpness, "shear_x": _shear_x, "shear_y": _shear_y,
    "solarize": _solarize, "translate_x": lambda x, v, s: _translate(x, v, s, 0),
    "translate_y": lambda x, v, s: _translate(x, v, s, 1),
}


def _apply_ops(x: Tensor, choice: Tensor, v: Tensor, s: Tensor) -> Tensor:
    """Apply op `choice[i]` to sample i: group samples by op (one sort), run each op once on its group.

    The group sizes cost one host sync per call (not one per op); empty groups are skipped.
    """
    perm = torch.argsort(choice, stable=True)
    counts = torch.bincount(choice, minlength=len(OPS)).tolist()
    groups = zip(OPS.values(), x[perm].split(counts), v[perm].split(counts), s[perm].split(counts))
    out = torch.empty_like(x)
    out[perm] = torch.cat([op(xg, vg, sg) if len(xg) else xg for op, xg, vg, sg in groups])
    return out


def strong_augment(x: Tensor, pad: int, flip: bool, num_ops: int = 2, magnitude: int | None = None,
                   cutout: float = 0.5, pad_mode: str = "reflect") -> Tensor:
    """FixMatch-style RandAugment: weak augment, `num_ops` uniformly drawn ops per sample, then Cutout.

    magnitude None draws a fresh magnitude in [0, 1] per sample and op (FixMatch's random-magnitude
    variant); an int m in [0, 10] uses m/10 for all. Works on [0, 1] images; computes in float32 for
    half / bfloat16 input and casts back.
    """
    if num_ops < 0 or (magnitude is not None and not 0 <= magnitude <= 10) or not 0 <= cutout <= 1:
        raise ValueError(f"need num_ops >= 0, magnitude in [0, 10] or None, cutout in [0, 1]; "
                         f"got {num_ops}, {magnitude}, {cutout}")
    dtype = x.dtype
    y = weak_augment(x if dtype in (torch.float32, torch.float64) else x.float(), pad, flip, pad_mode)
    n = y.shape[0]
    # draw everything up front with data-independent shapes, so the RNG stream depends on shapes only
    choice = torch.randint(0, len(OPS), (num_ops, n), device=y.device)
    v = torch.rand(num_ops, n, dtype=y.dtype, device=y.device)
    if magnitude is not None:
        v = torch.full_like(v, magnitude / 10)
    s = torch.randint(0, 2, (num_ops, n), device=y.device).to(y.dtype) * 2 - 1
    for k in range(num_ops):
        y = _apply_ops(y, choice[k], v[k], s[k])
    return random_cutout(y, cutout).to(dtype)
