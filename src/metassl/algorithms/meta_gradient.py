"""The meta-gradient of the pseudo-labels (Zhang et al., AISTATS 2021, Eq. 2-16), as pure functions.

Notation (the paper's): theta_t the parameters, y~ = f(x_u; theta_t) the initial pseudo-labels (Eq. 2),
Phi the unlabeled loss (MSE or KL), alpha the inner learning rate, g_l the labeled-loss gradient (Eq. 14).

One virtual SGD step on the unlabeled loss (Eq. 3-4) and the labeled loss after it (Eq. 5) give

    dL_l(theta~_{t+1}) / dy~_ij  =  -(alpha / B_u) * <d/dtheta dPhi(f(x_u,i; theta), y~_i)/dy~_ij, g_l>   (Eq. 12-13)

For Phi = MSE = ||p - y||^2:  d/dy Phi = -2 (p - y)  so the inner product is -2 * (J_p g_l)_ij.
For Phi = KL(y || p):         d/dy Phi = log y - log p + 1  so it is -(J_logp g_l)_ij.
J g_l is a Jacobian-vector product of the unlabeled predictions along g_l; three ways to get it:

    fd     central finite difference at theta +/- eps*g_l (Eq. 15/16), eps = eps_scale / ||g_l||
    jvp    forward-mode autodiff (torch.func.jvp): the same quantity without truncation error
    exact  unroll the virtual step and differentiate through it (second order; the reference)

A cheaper variant restricts g_l and the virtual step to the classifier head (`meta_params=head`,
`head_pseudo_labels`): then J g_l is closed form in the body's features, exact, and costs two eval-mode
body forwards and no backward (the labeled gradient pass is ~40 % of the full meta pass's cost).

All of them return the meta-gradient in the authors' normalisation, i.e. Eq. 13 multiplied by B_u / alpha:

    MSE:  grad_y = 2 J_p g_l      (the authors' (p+ - p-) / eps)
    KL:   grad_y = J_logp g_l

so the result does not depend on the batch size or the inner learning rate (the authors fold alpha into
beta by setting beta = learning rate). The update is then y^ = y~ - beta * grad_y (Eq. 6), projected back
to the probability simplex.

Every pass runs in eval mode (BN running statistics, no dropout), as the authors do, and the model's
parameters, buffers, `.grad` fields and train/eval mode are left exactly as they were: the perturbed
parameters are passed functionally (torch.func.functional_call), never written into the model.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from ..batch import Batch
from ..config import CHOICES
from ..torch_utils import eval_mode

Method = str    # one of CHOICES["meta_method"]: the allowed values of every meta key live in config.CHOICES
Phi = str       # one of CHOICES["meta_phi"]
# The Config keys every algorithm with this correction reads (its `keys`, beside its own): Eq. 13-16's, Eq. 6's,
# beta_t or rho_t (schedule.meta_step_size_at), g_l's held-out labels (Batch.x_meta) and g_l's scope under torchrun.
CONFIG_KEYS = ("meta_method", "meta_phi", "eps_scale", "projection", "meta_step", "beta_schedule", "beta", "meta_rho",
               "meta_holdout", "meta_scope")


def resolve_method(model: nn.Module, method: str) -> str:
    """`auto` -> the backbone's own `meta_method` attribute if it has one, else fd (the authors', Eq. 15/16).

    Why a backbone may declare jvp: on a piecewise-linear net (ReLU, max-pool) the central difference is a
    secant across every kink crossed within +/- eps*g_l, so its error is O(eps), not O(eps^2), and grows with
    the share of units near a kink. ResNet-18 with its ImageNet stem at 64 px (4 positions left to pool)
    agrees with `exact` at cosine 0.912 at init (eps_scale 0.01), 0.9925 at 1e-3; with softplus instead of
    ReLU 0.99997, and float32 and float64 agree, so it is the kinks, not cancellation. At 224 px it is
    0.9974. jvp computes the same directional derivative with no eps, at about the cost of fd's two forwards.
    """
    return getattr(model, "meta_method", "fd") if method == "auto" else method


def meta_labeled(batch: Batch) -> tuple[Tensor, Tensor]:
    """The labeled images and labels of g_l (Eq. 14): the held-out batch (x_meta, y_meta) when the data
    source draws one (meta_holdout > 0), else the classification loss's own (x_lb, y_lb), as the paper."""
    return (batch.x_meta, batch.y_meta) if batch.x_meta is not None else (batch.x_lb, batch.y_lb)


def _params_buffers(model: nn.Module) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v for k, v in model.named_buffers()}
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    return params, {**buffers, **frozen}


def labeled_gradient(model: nn.Module, x_lb: Tensor, y_lb: Tensor, reduction: str = "mean") -> dict[str, Tensor]:
    """g_l (Eq. 14): gradient of the mean labeled cross-entropy w.r.t. every trainable parameter
    (reduction="sum": of the summed one, so that chunks add up to a whole data set's mean).

    Uses torch.autograd.grad, so no `.grad` field is touched. Call inside `eval_mode`.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    names = [k for k, p in model.named_parameters() if p.requires_grad]
    loss = F.cross_entropy(model(x_lb), y_lb, reduction=reduction)
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return {k: (torch.zeros_like(p) if g is None else g) for k, p, g in zip(names, params, grads)}


def _hp(t: Tensor) -> Tensor:
    """At least float32 (half-precision values are upcast; float64 stays float64)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def grad_norm(grads: dict[str, Tensor]) -> Tensor:
    """||g||_2 over all tensors, as a 0-dim tensor (no host sync)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(_hp(g)) for g in grads.values()]))


def _unlabeled_out(logits: Tensor, phi: Phi) -> Tensor:
    """The prediction whose directional derivative Eq. 13 needs: p for MSE, log p for KL (>= float32)."""
    logits = _hp(logits)
    return F.softmax(logits, dim=1) if phi == "mse" else F.log_softmax(logits, dim=1)


def _phi_scale(phi: Phi) -> float:
    """Factor from -d/dy Phi: 2 for MSE (d/dy ||p-y||^2 = -2(p-y)), 1 for KL."""
    return 2.0 if phi == "mse" else 1.0


def perturbed_logits(model: nn.Module, x_ulb: Tensor, g_l: dict[str, Tensor], *, eps_scale: float,
                     batched: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Logits at theta + eps g_l and theta - eps g_l (Eq. 15), eps = eps_scale / ||g_l|| (a 0-dim tensor).

    The perturbation has L2 norm exactly eps_scale (0.01 as the authors). Parameters are passed
    functionally, never written into the model. `batched` runs both forwards as one vmapped call.
    """
    params, buffers = _params_buffers(model)
    eps = eps_scale / (grad_norm(g_l) + 1e-12)  # 0-dim tensor: no .item(), no host sync
    # fp32 even under amp: the two logits differ by ~eps J g_l, below bf16's resolution of the logits themselves
    with torch.no_grad(), torch.autocast(x_ulb.device.type, enabled=False):
        if batched:
            sign = torch.tensor([1.0, -1.0], device=eps.device, dtype=eps.dtype)
            both = {k: p + (sign * eps).view(2, *[1] * p.ndim) * g_l[k] for k, p in params.items()}  # (2, *p.shape)
            logits = vmap(lambda prm: functional_call(model, (prm, buffers), (x_ulb,)))(both)       # (2, B_u, C)
            return logits[0], logits[1], eps
        plus = {k: p + eps * g_l[k] for k, p in params.items()}
        minus = {k: p - eps * g_l[k] for k, p in params.items()}
        return (functional_call(model, (plus, buffers), (x_ulb,)),
                functional_call(model, (minus, buffers), (x_ulb,)), eps)


def fd_from_logits(logits_plus: Tensor, logits_minus: Tensor, eps: Tensor, phi: Phi = "mse") -> Tensor:
    """Eq. 15/16: phi_scale * (out(theta + eps g_l) - out(theta - eps g_l)) / (2 eps); for MSE the
    authors' (p+ - p-) / eps. Returns (B_u, C)."""
    return (_unlabeled_out(logits_plus, phi) - _unlabeled_out(logits_minus, phi)) / (2 * eps) * _phi_scale(phi)


def meta_gradient_fd(model: nn.Module, x_ulb: Tensor, g_l: dict[str, Tensor], phi: Phi = "mse",
                     *, eps_scale: float, batched: bool = False) -> Tensor:
    """The central finite-difference meta-gradient (Eq. 15/16). Returns (B_u, C)."""
    return fd_from_logits(*perturbed_logits(model, x_ulb, g_l, eps_scale=eps_scale, batched=batched), phi)


def fd_pseudo_labels(model: nn.Module, x_lb: Tensor, y_lb: Tensor, x_ulb: Tensor, *, phi: Phi = "mse",
                     eps_scale: float, batched: bool = False,
                     reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None) -> tuple[Tensor, Tensor]:
    """(y~, grad_y) from two forwards instead of three: y~ = softmax of the mean of the perturbed logits.

    logits(theta +/- eps g) = logits(theta) +/- eps J g + O(eps^2), so their mean is logits(theta) up to
    O(eps^2) (eps = 0.01 / ||g_l||): the plain pseudo-label forward of Eq. 2 is not needed. Eval mode,
    no side effects, like `meta_gradient`.
    """
    with eval_mode(model):
        g_l = labeled_gradient(model, x_lb, y_lb)
        if reduce is not None:
            g_l = reduce(g_l)
        lp, lm, eps = perturbed_logits(model, x_ulb, g_l, eps_scale=eps_scale, batched=batched)
    return fused_y_tilde(lp, lm), fd_from_logits(lp, lm, eps, phi)


def fused_y_tilde(logits_plus: Tensor, logits_minus: Tensor) -> Tensor:
    """y~ (Eq. 2) from the two perturbed forwards: the softmax of their mean, O(eps^2) from the plain forward's."""
    return F.softmax(_hp((logits_plus + logits_minus) / 2), dim=1)


def head_logits(h: Tensor, fc: nn.Linear) -> Tensor:
    """z = h W^T + b: the head's logits on body features h (B, D), in at least float32. Returns (B, C)."""
    return h @ _hp(fc.weight).T + (_hp(fc.bias) if fc.bias is not None else 0)


def head_gradient(h: Tensor, y: Tensor, fc: nn.Linear, reduction: str = "mean") -> dict[str, Tensor]:
    """g_l restricted to the head (Eq. 14 with theta = (W, b)), closed form in the body features h (B, D):

        g_W = delta^T h,   g_b = sum_b delta,   delta = (softmax(z) - onehot(y)) / B

    the mean CE's gradient (reduction="sum": the summed CE's, no 1/B, so chunks add up to a data set's mean)."""
    z = head_logits(h, fc)
    delta = F.softmax(z, dim=1) - F.one_hot(y, z.shape[1]).to(z.dtype)                     # dCE/dz per image
    if reduction == "mean":
        delta = delta / len(y)
    return {"weight": delta.T @ h, **({"bias": delta.sum(0)} if fc.bias is not None else {})}


def head_direction(h: Tensor, g_l: dict[str, Tensor]) -> Tensor:
    """J_z g_l = h g_W^T + g_b: the head's logits' derivative along a head gradient g_l, exact. Returns (B, C)."""
    return h @ g_l["weight"].T + g_l.get("bias", 0)


def grad_from_direction(p: Tensor, dz: Tensor, phi: Phi) -> Tensor:
    """Eq. 13 in the authors' normalisation from dz = J_z g_l (the logits' derivative along g_l), p = softmax(z):

        J_logp g_l = dz - <p, dz>,   J_p g_l = p * J_logp g_l,   grad_y = phi_scale * J_out g_l   (B, C)
    """
    dlogp = dz - (p * dz).sum(1, keepdim=True)
    return (p * dlogp if phi == "mse" else dlogp) * _phi_scale(phi)


def head_pseudo_labels(model: nn.Module, x_lb: Tensor, y_lb: Tensor, x_ulb: Tensor, *, phi: Phi,
                       reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None) -> tuple[Tensor, Tensor]:
    """(y~, grad_y) with g_l and the virtual step restricted to the classifier head `fc` (meta_params=head).

    With z = h W^T + b the head's logits on body features h (eval mode), everything is closed form:
        g_W = (softmax(z_l) - onehot(y_l))^T h_l / B_l,   g_b = mean_b (softmax(z_l) - onehot(y_l))    (Eq. 14)
        J_z g_l = h_u g_W^T + g_b                          (B_u, C): the logits' derivative along g_l
        J_p g_l = p * (J_z g_l - <p, J_z g_l>),   J_logp g_l = J_z g_l - <p, J_z g_l>
    so grad_y = phi_scale * J_out g_l (Eq. 13 in the authors' normalisation) is exact (no eps) and costs
    two eval-mode body forwards, no backward: the two perturbed forwards of Eq. 15 reuse the body's features.
    """
    with eval_mode(model), torch.no_grad():
        h_l, h_u = _hp(model.features(x_lb)), _hp(model.features(x_ulb))           # (B_l, D), (B_u, D)
        g_l = head_gradient(h_l, y_lb, model.fc)                                    # Eq. 14
        if reduce is not None:
            g_l = reduce(g_l)
        p = F.softmax(head_logits(h_u, model.fc), dim=1)                            # (B_u, C)
        grad_y = grad_from_direction(p, head_direction(h_u, g_l), phi)              # Eq. 13
    return p, grad_y


def meta_gradient_jvp(model: nn.Module, x_ulb: Tensor, g_l: dict[str, Tensor], phi: Phi = "mse") -> Tensor:
    """Eq. 13 by forward-mode autodiff: phi_scale * J_out(theta) g_l, exactly (no eps). Returns (B_u, C)."""
    params, buffers = _params_buffers(model)

    def out(p: dict[str, Tensor]) -> Tensor:
        return _unlabeled_out(functional_call(model, (p, buffers), (x_ulb,)), phi)

    tangents = {k: g_l[k].to(p.dtype) for k, p in params.items()}
    with torch.autocast(x_ulb.device.type, enabled=False):   # forward-mode AD does not mix autocast's dtypes
        _, directional = jvp(out, (params,), (tangents,))
    return directional.detach() * _phi_scale(phi)


def unlabeled_loss(logits: Tensor, y: Tensor, phi: Phi) -> Tensor:
    """Phi averaged over the batch (Eq. 3), also metamixup's consistency loss: MSE summed over classes (the
    authors', no 1/C), or KL(y || p). logits (B, C), y (B, C) distributions -> ()."""
    if phi == "mse":
        return ((F.softmax(logits, dim=1) - y) ** 2).sum(1).mean()
    return (torch.xlogy(y, y) - y * F.log_softmax(logits, dim=1)).sum(1).mean()


def meta_gradient_exact(model: nn.Module, x_lb: Tensor, y_lb: Tensor, x_ulb: Tensor, y_tilde: Tensor,
                        phi: Phi = "mse", alpha: float = 1.0) -> Tensor:
    """Eq. 3-5 unrolled: theta~ = theta - alpha * grad Phi(f(x_u), y~); d CE(f(x_l; theta~)) / d y~.

    Second order (create_graph). Rescaled by B_u / alpha to the common normalisation. Returns (B_u, C).
    """
    params, buffers = _params_buffers(model)
    params = {k: p.clone().requires_grad_(True) for k, p in params.items()}
    y = y_tilde.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        inner = unlabeled_loss(functional_call(model, (params, buffers), (x_ulb,)), y, phi)      # Eq. 3
        grads = torch.autograd.grad(inner, list(params.values()), create_graph=True, allow_unused=True)
        stepped = {k: p if g is None else p - alpha * g for (k, p), g in zip(params.items(), grads)}  # Eq. 4
        outer = F.cross_entropy(functional_call(model, (stepped, buffers), (x_lb,)), y_lb)      # Eq. 5
        (grad_y,) = torch.autograd.grad(outer, y)
    return grad_y.detach() * (x_ulb.shape[0] / alpha)


def meta_gradient(model: nn.Module, x_lb: Tensor, y_lb: Tensor, x_ulb: Tensor, y_tilde: Tensor, *,
                  method: Method = "fd", phi: Phi = "mse", eps_scale: float | None = None, alpha: float = 1.0,
                  g_l: dict[str, Tensor] | None = None,
                  reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None) -> Tensor:
    """The meta-gradient of the labeled loss w.r.t. the pseudo-labels y~ (B_u, C), in the authors' scale.

    Runs in eval mode and leaves parameters, buffers, `.grad` and the training flag untouched. `g_l` may
    be passed when the caller already has it; `reduce` maps the local g_l to the global one (the
    mean over processes under torchrun, so eps and y^ are what one process with the whole batch gets).
    `alpha` is the inner learning rate of the virtual step (Eq. 4): the step's lr. Only `exact` depends
    on it; fd and jvp are its alpha -> 0 limit (equal to it whenever y~ is the model's own eval-mode
    prediction, where grad Phi = 0 and the virtual step does not move theta).
    """
    method = resolve_method(model, method)
    with eval_mode(model):
        if method == "exact":
            return meta_gradient_exact(model, x_lb, y_lb, x_ulb, y_tilde, phi, alpha)
        if g_l is None:
            g_l = labeled_gradient(model, x_lb, y_lb)
            if reduce is not None:
                g_l = reduce(g_l)
        if method == "fd":
            if eps_scale is None:
                raise ValueError("method='fd' needs eps_scale (Config.eps_scale)")
            return meta_gradient_fd(model, x_ulb, g_l, phi, eps_scale=eps_scale)
        if method == "jvp":
            return meta_gradient_jvp(model, x_ulb, g_l, phi)
    raise ValueError(f"unknown meta-gradient method {method!r}; allowed: {', '.join(CHOICES['meta_method'])}")


def project_to_simplex(y: Tensor, how: str = "relu") -> Tensor:
    """Map corrected pseudo-labels back to distributions over classes (rows of (B, C)).

    relu     the authors': clamp at 0 and renormalise each row; an all-zero row is left as is.
    simplex  the Euclidean projection onto the simplex (Duchi et al. 2008): the nearest distribution.
    """
    if how == "relu":
        y = y.clamp_min(0)
        s = y.sum(1, keepdim=True)
        return torch.where(s > 0, y / s.clamp_min(1e-12), y)
    if how == "simplex":
        u, _ = torch.sort(y, dim=1, descending=True)
        css = u.cumsum(1) - 1
        k = torch.arange(1, y.shape[1] + 1, device=y.device, dtype=y.dtype)
        rho = ((u - css / k) > 0).sum(1, keepdim=True).clamp_min(1)   # >= 1 for finite rows; NaN rows stay NaN
        tau = css.gather(1, rho - 1) / rho.to(y.dtype)
        return (y - tau).clamp_min(0)
    raise ValueError(f"unknown projection {how!r}; allowed: {', '.join(CHOICES['projection'])}")


def correct_pseudo_labels(y_tilde: Tensor, grad_y: Tensor, beta: Tensor | float, projection: str = "relu",
                          step: str = "lr") -> Tensor:
    """Eq. 6 and the projection: y^ = proj(y~ - beta * d), d = grad_y (step=lr, the paper) or (step=normalised)

        d = grad_y / rms_b ||grad_y_b||,   rms_b ||grad_y_b|| = sqrt(mean_b sum_c grad_y_bc^2)     (B_u, C)

    so the step has RMS row length exactly beta (= rho_t) before the projection, whatever ||g_l||.
    Why per batch, not per row: the rows keep their relative sizes (a row whose labels barely move the
    labeled loss is barely corrected; per-row normalising would give its noise the full length rho) and
    only the overall scale, which fades with ||g_l|| and the lr, is fixed. Under torchrun the RMS is
    the process's own shard's.
    """
    if step == "normalised":
        grad_y = grad_y / (_hp(grad_y).pow(2).sum(1).mean().sqrt() + 1e-12).to(grad_y.dtype)
    elif step != "lr":
        raise ValueError(f"unknown meta step {step!r}; allowed: {', '.join(CHOICES['meta_step'])}")
    return project_to_simplex(y_tilde - beta * grad_y, projection)
