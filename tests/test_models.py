"""Backbone tests: shapes, the features/fc contract, the released ConvLarge structure, sizes, registry, torch.func."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call, jvp

from metassl.errors import UserError
from metassl.models import MODELS, build_model, model_names, register

# torch's forward-AD decompositions still load through torch.jit.script; that warning is torch's, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

# (name, num_classes, in_channels, image_size, input shape without batch)
CASES = [
    ("cnn", 10, 1, 28, (1, 28, 28)),
    ("convlarge", 10, 3, 32, (3, 32, 32)),
    ("convlarge", 10, 1, 28, (1, 28, 28)),
    ("wrn-28-2", 10, 3, 32, (3, 32, 32)),
    ("wrn-28-8", 100, 3, 32, (3, 32, 32)),
    ("resnet18", 7, 3, 64, (3, 64, 64)),
    ("resnet18", 10, 3, 32, (3, 32, 32)),
    ("mlp", 5, 64, 1, (64,)),
]
IDS = [f"{c[0]}-{'x'.join(map(str, c[4]))}" for c in CASES]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_registered_model_is_covered():
    assert {c[0] for c in CASES} == set(model_names())


@pytest.mark.parametrize("name,k,c,s,shape", CASES, ids=IDS)
def test_logits_and_features_contract(name, k, c, s, shape):
    torch.manual_seed(0)
    model = build_model(name, num_classes=k, in_channels=c, image_size=s)
    x = torch.randn(2, *shape)
    model.train()
    assert model(x).shape == (2, k)
    model.eval()
    with torch.no_grad():
        logits, feats = model(x), model.features(x)
    assert isinstance(model.fc, nn.Linear) and feats.shape == (2, model.fc.in_features)
    torch.testing.assert_close(model.fc(feats), logits)
    assert not any(getattr(m, "inplace", False) for m in model.modules())


def test_convlarge_matches_release():
    model = build_model("convlarge", num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 9 and all(m.bias is None for m in convs)
    assert [m.out_channels for m in convs] == [128, 128, 128, 256, 256, 256, 512, 256, 128]
    assert [m.kernel_size[0] for m in convs] == [3] * 7 + [1, 1]
    assert [m.padding[0] for m in convs] == [1] * 6 + [0, 0, 0]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 9
    slopes = [m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(slopes) == 9 and all(s == 0.1 for s in slopes)
    drops = [m.p for m in model.modules() if isinstance(m, nn.Dropout2d)]
    assert drops == [0.5, 0.5]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert linears == [model.fc] and (model.fc.in_features, model.fc.out_features) == (128, 10)
    # Hand count: conv weights + BN (weight, bias) + fc, from the layer shapes.
    chans = [3, 128, 128, 128, 256, 256, 256, 512, 256, 128]
    kernels = [3] * 7 + [1, 1]
    conv = sum(ci * co * kk * kk for ci, co, kk in zip(chans, chans[1:], kernels))  # 3,116,416
    bn = 2 * sum(chans[1:])                                                        # 4,096
    fc = 128 * 10 + 10                                                             # 1,290
    assert conv + bn + fc == 3_121_802 == n_params(model)


def test_parameter_counts():
    assert 1_400_000 <= n_params(build_model("wrn-28-2", 10)) <= 1_550_000      # 1,467,610
    assert 11_600_000 <= n_params(build_model("resnet18", 1000, image_size=224)) <= 11_800_000  # 11,689,512


def test_wrn_uses_fixmatch_batchnorm_momentum():
    model = build_model("wrn-28-2", 10)
    assert all(m.momentum == 0.001 for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_resnet18_stem_depends_on_image_size():
    assert build_model("resnet18", 10, image_size=224).conv1.kernel_size == (7, 7)
    small = build_model("resnet18", 10, image_size=32)
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, nn.Identity)


def test_unknown_name_lists_known_names():
    with pytest.raises(UserError) as err:
        build_model("vgg16", 10)
    assert "vgg16" in str(err.value) and all(n in str(err.value) for n in model_names())


@pytest.mark.parametrize("kwargs", [dict(num_classes=0), dict(num_classes=10, in_channels=0),
                                    dict(num_classes=10, image_size=8)])
def test_impossible_configurations_raise_user_error(kwargs):
    with pytest.raises(UserError):
        build_model("convlarge", **kwargs)


def test_register_adds_a_model():
    @register("test-linear")
    class Linear(nn.Module):
        def __init__(self, num_classes: int, in_channels: int, image_size: int):
            super().__init__()
            self.fc = nn.Linear(in_channels * image_size * image_size, num_classes)

        def features(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x))

    try:
        assert "test-linear" in model_names()
        model = build_model("test-linear", num_classes=3, in_channels=1, image_size=4)
        assert model(torch.randn(2, 1, 4, 4)).shape == (2, 3)
        with pytest.raises(UserError):
            register("test-linear")(Linear)
    finally:
        MODELS.pop("test-linear")


@pytest.mark.parametrize("name,k,c,s,shape", CASES, ids=IDS)
def test_functional_call_and_jvp(name, k, c, s, shape):
    torch.manual_seed(0)
    model = build_model(name, num_classes=k, in_channels=c, image_size=s).eval()
    x = torch.randn(2, *shape)
    params = {n: p.detach() for n, p in model.named_parameters()}
    tangents = {n: torch.randn_like(p) for n, p in params.items()}

    def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, p, (x,))

    with torch.no_grad():
        expected = model(x)
    out, dout = jvp(f, (params,), (tangents,))
    torch.testing.assert_close(out, expected)
    assert dout.shape == (2, k) and torch.isfinite(dout).all()

    # Train mode: BatchNorm updates its buffers in place, so hand it copies made inside the transform.
    model.train()
    buffers = {n: b.clone() for n, b in model.named_buffers()}

    def f_train(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(model, (p, {n: b.clone() for n, b in buffers.items()}), (x,))

    _, dout = jvp(f_train, (params,), (tangents,))
    assert dout.shape == (2, k) and torch.isfinite(dout).all()
