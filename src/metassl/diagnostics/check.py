"""`metassl check`: does the first-order meta-gradient hold for a backbone?

Compares the `fd` (Eq. 15/16) and `jvp` meta-gradients with the `exact` second-order one (Eq. 5
unrolled) in float64 on random inputs of the backbone's natural shape, for Phi = MSE and KL; and the
head-only meta-gradient (`meta_params=head`: g_l and the virtual step on the classifier head only), which
is exact for the head, against the full one, i.e. how much of the full correction the head carries.
Users adding a backbone run this before trusting the approximation on it.
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from ..algorithms.meta_gradient import head_pseudo_labels, meta_gradient, resolve_method
from ..config import CHOICES
from ..models import build_model, natural_shape
from ..torch_utils import eval_mode, to_nchw


def agreement(approx: torch.Tensor, exact: torch.Tensor) -> dict[str, float]:
    """Cosine similarity and relative L2 error of two meta-gradients (flattened)."""
    a, e = approx.flatten().double(), exact.flatten().double()
    cos = F.cosine_similarity(a, e, dim=0).item()
    rel = (torch.linalg.vector_norm(a - e) / torch.linalg.vector_norm(e).clamp_min(1e-300)).item()
    return {"cosine": cos, "rel_error": rel}


@torch.no_grad()
def calibrate_bn(model: torch.nn.Module, x: torch.Tensor) -> None:
    """Set BN running statistics to the batch statistics of `x` (cumulative average, restored momentum).

    The meta pass runs in eval mode; with the init statistics (mean 0, var 1) a deep net's logits
    explode and the check would measure a saturated softmax no trained network has.
    """
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    model(x)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    model.eval()


def agreement_on(model: torch.nn.Module, x_lb: torch.Tensor, y_lb: torch.Tensor, x_ulb: torch.Tensor,
                 eps_scale: float) -> dict[str, Any]:
    """fd and jvp vs exact for a float64 model and batch, for each Phi (model left unchanged)."""
    with eval_mode(model), torch.no_grad():
        y_tilde = F.softmax(model(x_ulb), dim=1)
    out: dict[str, Any] = {"batch": len(x_lb), "dtype": "float64", "eps_scale": eps_scale}
    for phi in CHOICES["meta_phi"]:
        t = time.perf_counter()
        exact = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method="exact", phi=phi)
        grads = {m: meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, method=m, phi=phi, eps_scale=eps_scale)
                 for m in ("fd", "jvp")}
        grads["head"] = head_pseudo_labels(model, x_lb, y_lb, x_ulb, phi=phi)[1]
        out[phi] = {m: agreement(g, exact) for m, g in grads.items()}
        default = resolve_method(model, "auto")          # what meta_method=auto (the default) runs on this model
        out[phi]["default"] = {"method": default, **out[phi][default]}
        out[phi]["seconds"] = round(time.perf_counter() - t, 2)
    return out


def check_model(name: str, *, eps_scale: float, batch: int = 8, num_classes: int = 10,
                seed: int = 0) -> dict[str, Any]:
    """Agreement of fd and jvp with exact for backbone `name` at initialisation, on random inputs."""
    torch.manual_seed(seed)
    channels, size = natural_shape(name)
    model = build_model(name, num_classes, channels, size).double()
    x_lb = torch.randn(batch, channels, size, size, dtype=torch.float64)
    y_lb = torch.randint(0, num_classes, (batch,))
    x_ulb = torch.randn(batch, channels, size, size, dtype=torch.float64)
    calibrate_bn(model, torch.cat([x_lb, x_ulb]))
    return {"model": name, "state": "init, random inputs", **agreement_on(model, x_lb, y_lb, x_ulb, eps_scale)}


def check_run(run_dir: str, *, eps_scale: float, batch: int = 8, seed: int = 0) -> dict[str, Any]:
    """The same check at a trained state: a run's checkpoint, on its own test images (labels as the
    labeled batch), so the curvature is the one training actually meets."""
    from pathlib import Path

    import numpy as np

    from ..data import load_dataset
    from ..data.augment import normalize
    from ..inference.evaluate import load_run

    model, cfg, state = load_run(Path(run_dir), "cpu")
    data = load_dataset(cfg.dataset, cfg.data_dir or None, cfg.image_size or None)
    idx = np.random.default_rng(seed).choice(len(data.x_test), 2 * batch, replace=False)
    x = normalize(to_nchw(data.x_test[idx]), state["mean"], state["std"]).double()
    y = torch.from_numpy(data.y_test[idx].astype(np.int64))
    model = model.double().eval()
    return {"model": cfg.model, "state": f"{run_dir} at iteration {state['iteration']}",
            **agreement_on(model, x[:batch], y[:batch], x[batch:], eps_scale)}


def format_check(result: dict[str, Any]) -> str:
    lines = [f"{result['model']} ({result['state']}): meta-gradient agreement with `exact` "
             f"(float64, batch {result['batch']}+{result['batch']})"]
    for phi in CHOICES["meta_phi"]:
        for m in ("fd", "jvp", "head"):
            r = result[phi][m]
            lines.append(f"  phi={phi:3s} {m:4s} cosine {r['cosine']:.6f}  rel. error {r['rel_error']:.2e}"
                         + ("  (meta_params=head: the head's share of the full meta-gradient)" if m == "head" else ""))
        lines.append(f"  phi={phi:3s} default (meta_method=auto) is {result[phi]['default']['method']}")
    return "\n".join(lines)
