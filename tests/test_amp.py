"""amp=true: bf16 autocast where the device has bf16 units, fp32 elsewhere; the meta-gradient's difference in fp32."""
import pytest
import torch
from torch import nn

import metassl.train as T
from metassl.algorithms import build_config
from metassl.algorithms.meta_gradient import meta_gradient
from metassl.torch_utils import native_bf16
from tests.test_train import TINY

BF16_CPU = native_bf16(torch.device("cpu"))


def test_native_bf16_is_a_yes_or_no_for_every_device():
    assert native_bf16(torch.device("cpu")) in (True, False)
    assert native_bf16(torch.device("meta")) is False


def test_amp_without_bf16_units_trains_exactly_the_fp32_run(tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(T, "native_bf16", lambda device: False)
    plain = T.train(build_config(None, None, TINY + ["algorithm=fixmatch", "labeled_warmup=0"]), None,
                    data=tiny_data, quiet=True)
    amp = T.train(build_config(None, None, TINY + ["algorithm=fixmatch", "labeled_warmup=0", "amp=true"]), None,
                  data=tiny_data)
    assert amp["precision"] == plain["precision"] == "fp32"
    assert amp["test_error"] == plain["test_error"] and amp["val_error"] == plain["val_error"]
    assert "no bf16 units" in capsys.readouterr().err


@pytest.mark.skipif(not BF16_CPU, reason="this CPU has no bf16 units")
def test_amp_on_a_bf16_cpu_trains_every_step_kind_in_bf16_and_learns(tiny_data):
    for algorithm, extra in (("fixmatch", []), ("metamixup", []), ("selftrain", ["bank_every=4"])):
        res = T.train(build_config(None, None, TINY + [f"algorithm={algorithm}", "labeled_warmup=0", "amp=true", *extra]),
                      None, data=tiny_data, quiet=True)
        assert res["precision"].startswith("bf16 autocast"), algorithm
        assert res["test_error"] < 90.0, algorithm          # ten classes: chance is 90 % error


@pytest.mark.skipif(not BF16_CPU, reason="this CPU has no bf16 units")
def test_the_meta_gradient_difference_is_computed_in_fp32_under_autocast():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 5))
    x_lb, x_ulb = torch.randn(6, 1, 8, 8), torch.randn(6, 1, 8, 8)
    y_lb, y_tilde = torch.randint(0, 5, (6,)), torch.full((6, 5), 0.2)
    g_l = {k: torch.randn_like(p) for k, p in model.named_parameters()}
    fp32 = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, eps_scale=0.01, g_l=g_l)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = meta_gradient(model, x_lb, y_lb, x_ulb, y_tilde, eps_scale=0.01, g_l=g_l)
    assert amp.dtype == torch.float32 and torch.equal(amp, fp32)


def test_a_time_limit_on_a_bf16_device_without_amp_says_amp_would_fit_more(tiny_data, monkeypatch, capsys):
    import metassl.run.budget as B
    monkeypatch.setattr(B, "native_bf16", lambda device: True)
    base = ["device=cpu", "threads=1", "model=mlp", "batch_size=16", "num_labels=40", "translate=1",
            "algorithm=supervised", "time_limit=3s"]
    T.train(build_config(None, None, base), None, data=tiny_data)
    assert "amp=true fits more" in capsys.readouterr().err
    monkeypatch.setattr(T, "native_bf16", lambda device: False)        # amp=true set: no hint (and fp32 here)
    T.train(build_config(None, None, [*base, "amp=true"]), None, data=tiny_data)
    assert "amp=true fits more" not in capsys.readouterr().err
