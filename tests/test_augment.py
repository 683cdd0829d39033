"""Augmentation tests: translate/flip exactness, RandAugment ops, Cutout, stats, RNG determinism."""
from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from metassl.data.augment import (OPS, channel_stats, normalize, random_cutout, random_flip,
                                  random_translate, strong_augment, to_float, weak_augment)


def _images(n: int, c: int = 3, h: int = 8, w: int = 8, seed: int = 0) -> torch.Tensor:
    """Random float images in [0, 1] that never contain exactly 0.5 (so Cutout pixels are recognisable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, h, w, generator=g)
    return torch.where(x == 0.5, torch.full_like(x, 0.25), x)


def _offsets(x: torch.Tensor, y: torch.Tensor, pad: int, mode: str) -> list[list[tuple[int, int]]]:
    """Per sample, every (dy, dx) in [-pad, pad]^2 for which y is x shifted by that offset (padded)."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad,) * 4, mode="reflect" if mode == "reflect" else "constant")
    found: list[list[tuple[int, int]]] = [[] for _ in range(len(x))]
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            match = (padded[..., dy:dy + h, dx:dx + w] == y).flatten(1).all(1)
            for i in match.nonzero().flatten().tolist():
                found[i].append((dy - pad, dx - pad))
    return found


# ----------------------------------------------------------------------------- stats

def test_channel_stats_and_normalize():
    torch.manual_seed(0)
    u = (torch.rand(200, 3, 8, 8) ** torch.tensor([1.0, 2.0, 0.5])[:, None, None] * 255).to(torch.uint8)
    mean, std = channel_stats(u)
    assert mean.dtype == std.dtype == torch.float32 and mean.shape == (3,)
    assert 0 < mean.min() and mean.max() < 1                    # on the 0..1 scale
    ref = u.double() / 255
    assert torch.allclose(mean.double(), ref.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), ref.std((0, 2, 3), unbiased=False), atol=1e-6)
    m2, s2 = channel_stats(to_float(u, torch.float64))           # float path agrees
    assert torch.allclose(mean, m2) and torch.allclose(std, s2)
    z = normalize(to_float(u), mean, std)
    assert z.dtype == torch.float32
    assert torch.allclose(z.mean((0, 2, 3)), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z.std((0, 2, 3)), torch.ones(3), atol=1e-2)
    assert torch.equal(normalize(u, mean, std), z)               # uint8 input accepted too


# ----------------------------------------------------------------------------- translate / flip

@pytest.mark.parametrize("mode", ["reflect", "zeros"])
def test_translate_is_an_integer_shift(mode):
    x = _images(32, h=8, w=10)
    torch.manual_seed(1)
    y = random_translate(x, 2, mode)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert all(found for found in _offsets(x, y, 2, mode))


def test_translate_pad_zero_identity_and_seeded():
    x = _images(16)
    assert torch.equal(random_translate(x, 0), x)
    torch.manual_seed(3)
    a = random_translate(x, 3)
    torch.manual_seed(3)
    assert torch.equal(random_translate(x, 3), a)
    with pytest.raises(ValueError):
        random_translate(x, 8)                                   # reflect needs pad < size
    with pytest.raises(ValueError):
        random_translate(x, 1, mode="wrap")


def test_translate_offsets_vary_across_samples():
    x = _images(256, c=1, h=12, w=12)
    torch.manual_seed(2)
    found = _offsets(x, random_translate(x, 2), 2, "reflect")
    offsets = [f[0] for f in found]
    assert len(set(offsets)) >= 20                               # of 25 possible
    assert {dy for dy, _ in offsets} == set(range(-2, 3)) == {dx for _, dx in offsets}


def test_flip_each_sample_unchanged_or_flipped():
    x = _images(1000, c=2, h=4, w=5)
    torch.manual_seed(0)
    y = random_flip(x)
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert bool((same ^ flipped).all())
    assert 0.42 < flipped.float().mean().item() < 0.58


def test_weak_augment():
    x = _images(64)
    assert torch.equal(weak_augment(x, 0, flip=False), x)
    torch.manual_seed(0)
    y = weak_augment(x, 0, flip=True)
    flipped = (y == x.flip(-1)).flatten(1).all(1)
    assert bool(((y == x).flatten(1).all(1) ^ flipped).all()) and flipped.any()
    y = weak_augment(x[:1], 2, flip=True)                        # batch of one
    assert y.shape == (1, 3, 8, 8)


# ----------------------------------------------------------------------------- RandAugment ops

@pytest.mark.parametrize("name", sorted(OPS))
@pytest.mark.parametrize("c", [1, 3])
def test_each_op_shape_range_and_zero_magnitude(name, c):
    x = _images(6, c=c, h=10, w=12)
    v, s = torch.rand(6), torch.randint(0, 2, (6,)).float() * 2 - 1
    y = OPS[name](x, v, s)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert 0 <= y.min() and y.max() <= 1
    if name not in ("autocontrast", "equalize"):                 # the two ops without a magnitude
        assert torch.allclose(OPS[name](x, torch.zeros(6), s), x, atol=1e-5)
    if name == "color" and c == 1:
        assert torch.allclose(y, x, atol=1e-6)


def test_translate_op_by_whole_pixels_fills_gray():
    x = _images(2, h=20, w=20)
    y = OPS["translate_x"](x, torch.full((2,), 0.25 / 0.3), torch.tensor([1.0, -1.0]))   # 5 pixels
    assert torch.allclose(y[0, :, :, :15], x[0, :, :, 5:], atol=1e-5)
    assert torch.allclose(y[1, :, :, 5:], x[1, :, :, :15], atol=1e-5)
    assert torch.allclose(y[0, :, :, 15:], torch.full_like(y[0, :, :, 15:], 0.5), atol=1e-5)


def test_pixel_ops_match_pil():
    np = pytest.importorskip("numpy")
    pil = pytest.importorskip("PIL.Image")
    ops = pytest.importorskip("PIL.ImageOps")
    enh = pytest.importorskip("PIL.ImageEnhance")
    torch.manual_seed(0)
    u = (torch.rand(3, 3, 32, 32) ** 2 * 200 + 20).to(torch.uint8)
    x, v, s = to_float(u), torch.full((3,), 0.5), torch.ones(3)
    refs = {"equalize": (ops.equalize, 0), "posterize": (lambda im: ops.posterize(im, 6), 0),
            "solarize": (lambda im: ops.solarize(im, 128), 0), "autocontrast": (ops.autocontrast, 1),
            "color": (lambda im: enh.Color(im).enhance(1.45), 2),
            "contrast": (lambda im: enh.Contrast(im).enhance(1.45), 2),
            "sharpness": (lambda im: enh.Sharpness(im).enhance(1.45), 2)}
    for name, (fn, tol) in refs.items():
        ref = [np.asarray(fn(pil.fromarray(u[i].permute(1, 2, 0).numpy()))) for i in range(3)]
        ref = torch.from_numpy(np.stack(ref)).permute(0, 3, 1, 2).float()
        assert (OPS[name](x, v, s) * 255 - ref).abs().max() <= tol + 1e-3, name


# ----------------------------------------------------------------------------- Cutout / strong

def test_cutout_is_a_clipped_gray_square():
    x = _images(200, h=16, w=16)
    torch.manual_seed(0)
    y = random_cutout(x, 0.5)
    gray = (y == 0.5).all(1)                                     # (N, H, W)
    assert torch.equal(y[~gray[:, None].expand_as(y)], x[~gray[:, None].expand_as(y)])
    rows, cols = gray.any(2), gray.any(1)
    nr, nc = rows.sum(1), cols.sum(1)
    assert torch.equal(gray.sum((1, 2)), nr * nc)                # the gray set is a full rectangle
    assert bool(((nr >= 4) & (nr <= 8) & (nc >= 4) & (nc <= 8)).all())
    inside = ~(rows[:, 0] | rows[:, -1] | cols[:, 0] | cols[:, -1])
    assert bool(((nr == 8) & (nc == 8))[inside].all()) and inside.sum() > 15   # ~19% expected
    assert torch.equal(random_cutout(x, 0.0), x)


@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_strong_augment_contract(c, dtype):
    x = _images(64, c=c, h=16, w=16).to(dtype)
    torch.manual_seed(0)
    y = strong_augment(x, 2, flip=True)
    assert y.shape == x.shape and y.dtype == dtype and y.device == x.device
    assert 0 <= y.min() and y.max() <= 1
    changed = (y != x).flatten(1).any(1).float().mean()
    assert changed > 0.9
    block = F.avg_pool2d((y == 0.5).all(1, keepdim=True).float(), 4, stride=1)
    assert bool((block.flatten(1).amax(1) == 1).all())           # every image has its Cutout
    assert strong_augment(x[:1], 2, flip=False, magnitude=5).shape == (1, c, 16, 16)


def test_strong_augment_seeded_and_rng_use_depends_on_shape_only():
    a, b = _images(32, seed=1), _images(32, seed=2)
    outs, nexts = [], []
    for x in (a, a, b):
        torch.manual_seed(7)
        outs.append(strong_augment(x, 2, flip=True, num_ops=3))
        nexts.append(torch.rand(4))
    assert torch.equal(outs[0], outs[1])
    assert torch.equal(nexts[0], nexts[1]) and torch.equal(nexts[0], nexts[2])


def test_strong_augment_options_and_errors():
    x = _images(16)
    torch.manual_seed(0)
    y = strong_augment(x, 0, flip=False, num_ops=0, cutout=0.0)
    assert torch.equal(y, x)
    for kwargs in ({"num_ops": -1}, {"magnitude": 11}, {"cutout": 1.5}):
        with pytest.raises(ValueError):
            strong_augment(x, 2, True, **kwargs)


def test_strong_augment_batch_512_is_fast():
    x = _images(512, h=32, w=32)
    strong_augment(x[:8], 4, True)                               # warm up kernels
    start = time.perf_counter()
    y = strong_augment(x, 4, True)
    assert y.shape == x.shape
    assert time.perf_counter() - start < 5.0
