"""Export a trained run as one `torch.export` file that needs only torch to run (no metassl):

    metassl export runs/mine --out mine.pt2

    info = {"metassl.json": ""}
    model = torch.export.load("mine.pt2", extra_files=info).module()    # anywhere torch >= 2.6 is installed
    logits = model(x)            # x: uint8 (N, C, H, W), as stored; logits (N, K) float32, any N
    json.loads(info["metassl.json"])     # {"classes": [...], "channels": C, "image_size": H, "input": ...}

The file holds the eval-mode network (the EMA weights when the run kept an EMA), exported on CPU with
the preprocessing inside: uint8 -> [0, 1] -> (x - mean) / std with the training images' per-channel
mean/std, the same arithmetic as `metassl predict`, so argmax(logits) is its predicted class. Images must
already have the run's channels and size; only the batch dimension is free.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from torch import Tensor, nn

from ..errors import UserError

INFO_FILE = "metassl.json"


class Preprocessed(nn.Module):
    """uint8 (N, C, H, W) images -> logits (N, K), float32: `net` behind the run's normalisation."""

    def __init__(self, net: nn.Module, mean: Tensor, std: Tensor):
        super().__init__()
        self.net = net
        self.register_buffer("mean", mean.float().reshape(1, -1, 1, 1))
        self.register_buffer("std", std.float().reshape(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x.to(torch.float32) / 255 - self.mean) / self.std)


def export_program(model: nn.Module, mean: Tensor, std: Tensor, classes: list[str], image_size: int,
                   out: str | Path, name: str = "") -> Path:
    """Write `model` (named `name` in errors) behind its normalisation (per-channel `mean`, `std`) as a
    torch.export program for uint8 images of `image_size` to `out`, with `classes` in its info; returns the path."""
    out = Path(out)
    net = copy.deepcopy(model).cpu().eval()               # the caller's model stays where it is
    net.requires_grad_(False)
    module = Preprocessed(net, mean.cpu(), std.cpu())
    c, s = mean.numel(), image_size
    example = torch.zeros(2, c, s, s, dtype=torch.uint8)
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except Exception as e:                              # a custom backbone torch.export cannot capture
        raise UserError(f"cannot export model {name!r} with torch.export: {e}") from None
    info = {"classes": classes, "channels": c, "image_size": s,
            "input": f"uint8 (N, {c}, {s}, {s}), as stored", "output": "logits (N, K) float32"}
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(program, out, extra_files={INFO_FILE: json.dumps(info)})
    return out
