"""Inference copies of a model: eval mode, BatchNorm folded into the conv or linear layer it follows, activations
in place, no parameter gradients. Evaluation, `predict` and the label bank's pool passes run these.

In eval mode a BatchNorm after a conv is an affine map per output channel, so it folds into the conv:

    s  = gamma / sqrt(running_var + eps)
    W' = s * W  (per output channel),    b' = s * (b - running_mean) + beta

which removes one pass over every activation map. Which BN follows which layer, and which activation may
overwrite its input, is read from the data flow (torch.fx traces of forward and features), never from the
order modules were registered in; a model fx cannot trace is copied unfolded (still correct, just slower).
Pre-activation BNs (WRN's bn1, the last bn) see a residual sum, not a conv output, and stay.
"""
from __future__ import annotations

import copy
import operator

import torch
from torch import fx, nn

FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)      # output channels on dim 0 of the weight
ACTIVATIONS = (nn.ReLU, nn.LeakyReLU, nn.ReLU6, nn.ELU, nn.SiLU, nn.Hardswish, nn.Hardtanh)


class _Features(nn.Module):
    """Wraps a model so that fx traces its `features(x)` (submodule names gain the prefix `m.`)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m.features(x)


def _graphs(model: nn.Module) -> list[tuple[fx.Graph, str]] | None:
    """fx graphs of forward (and features, where the model has it) with the prefix its module names carry;
    None if either cannot be traced."""
    try:
        graphs = [(fx.Tracer().trace(model), "")]
        if callable(getattr(model, "features", None)):
            graphs.append((fx.Tracer().trace(_Features(model)), "m."))
    except Exception:      # data-dependent control flow, unsupported ops: fold nothing rather than guess
        return None
    return graphs


def _calls(graph: fx.Graph, prefix: str) -> dict[str, list[fx.Node]]:
    """Module name (without prefix) -> its call sites in the graph."""
    out: dict[str, list[fx.Node]] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            out.setdefault(str(node.target)[len(prefix):], []).append(node)
    return out


def _bn_pairs(model: nn.Module, graphs: list[tuple[fx.Graph, str]]) -> list[tuple[str, str]]:
    """(layer, bn) names where the BN, in eval mode with running statistics, is called once, on the output of
    that layer, which is called once and feeds nothing else: so in forward, and in features unless features
    calls neither (it runs a part of forward)."""
    modules = dict(model.named_modules())
    pairs: set[tuple[str, str]] | None = None
    for graph, prefix in graphs:
        calls = _calls(graph, prefix)
        found = set()
        for name, nodes in calls.items():
            bn, src = modules[name], nodes[0].args[0] if nodes[0].args else None
            if (isinstance(bn, nn.modules.batchnorm._BatchNorm) and bn.running_mean is not None and len(nodes) == 1
                    and isinstance(src, fx.Node) and src.op == "call_module" and len(src.users) == 1):
                layer = str(src.target)[len(prefix):]
                if isinstance(modules[layer], FOLDABLE) and len(calls[layer]) == 1:
                    found.add((layer, name))
        pairs = found if pairs is None else {p for p in pairs if p in found or not (p[0] in calls or p[1] in calls)}
    return sorted(pairs or ())


def _fresh(node: object, modules: dict[str, nn.Module], prefix: str, folded: set[str]) -> bool:
    """Whether an fx node's value is a new tensor that only the next node reads: a conv/linear/BN output or a
    sum/product (not a view, a dropout's pass-through or the model's input, which writing would corrupt)."""
    if not (isinstance(node, fx.Node) and len(node.users) == 1):
        return False
    if node.op == "call_function":
        return node.target in (operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.sub)
    if node.op != "call_module":
        return False
    name = str(node.target)[len(prefix):]
    if name in folded:                                # now Identity: its input is the value
        return _fresh(node.args[0], modules, prefix, folded)
    return isinstance(modules[name], FOLDABLE + (nn.modules.batchnorm._BatchNorm,))


def _inplace_ok(model: nn.Module, graphs: list[tuple[fx.Graph, str]], folded: set[str]) -> list[str]:
    """Activation modules whose input is fresh (see _fresh) at every call site in every graph."""
    modules = dict(model.named_modules())
    ok: dict[str, bool] = {}
    for graph, prefix in graphs:
        for name, nodes in _calls(graph, prefix).items():
            if isinstance(modules[name], ACTIVATIONS) and hasattr(modules[name], "inplace"):
                ok[name] = ok.get(name, True) and all(_fresh(n.args[0] if n.args else None, modules, prefix, folded)
                                                      for n in nodes)
    return [name for name, good in ok.items() if good]


@torch.no_grad()
def fold_bn(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """Fold an eval-mode BatchNorm into the conv/linear layer before it, in place (float64 arithmetic, the
    weight's dtype, device and memory format kept)."""
    w = layer.weight
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        scale, shift = scale * bn.weight.double(), shift * bn.weight.double() + bn.bias.double()
    bias = shift if layer.bias is None else layer.bias.double() * scale + shift
    w.copy_(w.double() * scale.view(-1, *[1] * (w.dim() - 1)))
    if layer.bias is None:
        layer.bias = nn.Parameter(bias.to(w.dtype), requires_grad=False)
    else:
        layer.bias.copy_(bias)


def inference_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` for no-grad passes: eval mode, every BN that directly follows a conv/linear folded
    into it (the BN becomes Identity), safe activations in place, requires_grad False; device, dtype and
    memory format as the model's. `model` itself is untouched; `features()` and `fc` work on the copy."""
    fast = copy.deepcopy(model).eval().requires_grad_(False)
    graphs = _graphs(fast)
    if graphs is None:
        return fast
    pairs = _bn_pairs(fast, graphs)
    modules = dict(fast.named_modules())
    for layer, bn in pairs:
        fold_bn(modules[layer], modules[bn])
    for name in _inplace_ok(fast, graphs, {bn for _, bn in pairs}):
        modules[name].inplace = True
    for _, bn in pairs:
        parent, _, child = bn.rpartition(".")
        setattr(fast.get_submodule(parent) if parent else fast, child, nn.Identity())
    return fast
