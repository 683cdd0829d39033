"""Inference copies (models/fold.py): BatchNorm folded into the conv before it gives the eval-mode model's logits and
features, leaves the model itself alone, and evaluation's passes use it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from metassl.inference.evaluate import error_counts, penultimate, predict_logits
from metassl.models import build_model, inference_copy, model_names, natural_shape


def shape(name: str) -> tuple[int, int]:
    c, s = natural_shape(name)
    return c, min(s, 32)                                 # resnet18's CIFAR stem: the test stays fast


def trained(name: str) -> nn.Module:
    """A backbone after a few SGD steps on shifted, scaled inputs: BN statistics and affines far from their init."""
    torch.manual_seed(0)
    c, s = shape(name)
    model = build_model(name, 10, c, s)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.5
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(2):
        loss = nn.functional.cross_entropy(model(3 * torch.randn(4, c, s, s) + 1), torch.arange(4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model


def bn_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@pytest.mark.parametrize("name", model_names())
def test_folded_copy_matches_eval_mode_model_and_leaves_it_alone(name):
    model = trained(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    c, s = shape(name)
    x = 3 * torch.randn(5, c, s, s) + 1

    fast = inference_copy(model)

    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.requires_grad and torch.equal(p.grad, grads[k]) for k, p in model.named_parameters())
    assert not fast.training and not any(p.requires_grad for p in fast.parameters())
    assert bn_count(fast) < bn_count(model)          # something was folded in every registered backbone
    model.eval()
    with torch.no_grad():
        ref_z, ref_h = model(x), model.features(x)
    z, h = fast(x), fast.features(x)
    assert torch.allclose(z, ref_z, rtol=1e-4, atol=1e-4 * ref_z.abs().max().item())
    assert torch.allclose(h, ref_h, rtol=1e-4, atol=1e-4 * ref_h.abs().max().item())


def test_conv_nets_lose_every_batchnorm_and_keep_channels_last():
    model = trained("cnn").to(memory_format=torch.channels_last)
    fast = inference_copy(model)
    assert bn_count(fast) == 0
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert all(m.bias is not None and m.weight.is_contiguous(memory_format=torch.channels_last) for m in convs)
    assert all(m.inplace for m in fast.modules() if isinstance(m, nn.LeakyReLU))


class Shared(nn.Module):
    """A conv whose output feeds a BN and a skip, an activation on the model's input, one on a view of a tensor
    read again later: none may be folded or written in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.act = nn.Conv2d(2, 2, 3, padding=1, bias=False), nn.BatchNorm2d(2), nn.ReLU()
        self.conv2, self.bn2, self.act2 = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.ReLU()
        self.fc = nn.Linear(8, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(self.act(x))
        z = self.bn(y) + y                                   # conv output read twice
        w = self.bn2(self.conv2(z))                          # foldable
        v = self.act2(w.flatten(2))                          # an activation on a view of w ...
        return torch.cat([v.mean(2), w.mean(dim=(2, 3))], 1).repeat(1, 2)   # ... and w read again

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def test_folding_follows_the_data_flow_not_the_module_order():
    torch.manual_seed(1)
    model = Shared()
    model(torch.randn(8, 2, 5, 5) + 2)                   # train-mode forward: running statistics move
    model.eval()
    fast = inference_copy(model)
    assert isinstance(fast.bn, nn.BatchNorm2d) and isinstance(fast.bn2, nn.Identity)
    assert not fast.act.inplace and not fast.act2.inplace
    x = torch.randn(4, 2, 5, 5)
    x0 = x.clone()
    with torch.no_grad():
        assert torch.allclose(fast(x), model(x), atol=1e-5)
    assert torch.equal(x, x0)


class Branchy(nn.Module):
    """Data-dependent control flow: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        return (h if h.sum() > 0 else -h).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def test_untraceable_model_is_copied_unfolded_and_still_right():
    model = Branchy().eval()
    fast = inference_copy(model)
    assert isinstance(fast.bn, nn.BatchNorm2d)
    x = torch.randn(3, 1, 6, 6)
    with torch.no_grad():
        assert torch.equal(fast(x), model(x))


def test_evaluation_passes_equal_the_eval_mode_model_and_keep_its_flag():
    model = trained("cnn")
    x = torch.randint(0, 256, (300, 1, 28, 28), dtype=torch.uint8)
    mean, std = torch.tensor([0.3]), torch.tensor([0.35])
    z = predict_logits(model, x, mean, std, 1000)
    h = penultimate(model, x, mean, std, 128)
    xn = (x.float() / 255 - 0.3) / 0.35
    counts = error_counts(model, [(xn[:200], torch.zeros(200, dtype=torch.long)), (xn[200:], torch.ones(100).long())],
                          torch.device("cpu"))
    assert model.training
    model.eval()
    with torch.no_grad():
        ref_z, ref_h = model(xn), model.features(xn)
    assert torch.allclose(z, ref_z, atol=1e-4 * ref_z.abs().max().item())
    assert torch.allclose(h, ref_h, atol=1e-4 * ref_h.abs().max().item())
    pred = ref_z.argmax(1)
    assert counts.tolist() == [float((pred[:200] != 0).sum() + (pred[200:] != 1).sum()), 300.0]
    z += 1                                               # an ordinary tensor, not an inference tensor
