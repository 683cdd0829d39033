"""The fast meta step computes what the authors' pass sequence computes; bench-step reports every variant."""
import copy

import pytest
import torch

from metassl.algorithms import Batch, StepContext
from metassl.algorithms.metamixup import MetaMixup
from metassl.experiments.step import ReferenceMetaMixup, bench_step, format_table
from metassl.config import Config
from metassl.models import build_model
from metassl.train import train_step

EPS = Config.eps_scale


def one_step(algo, model, batch, ctx, seed=0):
    """One SGD step (the trainer's own); returns the pseudo-labels and the new parameters."""
    model = copy.deepcopy(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    torch.manual_seed(seed)                     # same mixup lambdas and dropout masks for both
    out = train_step(model, opt, algo, batch, ctx)
    return out.pseudo_labels, [p.detach().clone() for p in model.parameters()]


def setup(channels_last=False):
    torch.manual_seed(0)
    model = build_model("cnn", 10, 1, 12)
    x_lb, x_ulb = torch.randn(16, 1, 12, 12), torch.randn(16, 1, 12, 12)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x_lb, x_ulb = (x.contiguous(memory_format=torch.channels_last) for x in (x_lb, x_ulb))
    batch = Batch(x_lb, torch.randint(0, 10, (16,)), [x_ulb])
    return model, batch, StepContext(50, 0.05, 0.5, 1.0, 10)


def test_fast_meta_step_matches_the_authors_pass_sequence():
    """Same corrected pseudo-labels (to 1e-5) and the same parameter update (to 1e-5) in float32."""
    model, batch, ctx = setup()
    (y_ref_plain, y_ref), p_ref = one_step(ReferenceMetaMixup(eps_scale=EPS, mixup_gamma=1.0), model, batch, ctx)
    (y_plain, y_fast), p_fast = one_step(MetaMixup(eps_scale=EPS, mixup_gamma=1.0, meta_fused=True), model, batch, ctx)
    assert (y_ref - y_ref_plain).abs().max() > 1e-3          # the correction is not vacuous
    torch.testing.assert_close(y_fast, y_ref, rtol=0, atol=1e-5)
    for a, b in zip(p_fast, p_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_channels_last_gives_the_same_update():
    model, batch, ctx = setup()
    model_cl, batch_cl, _ = setup(channels_last=True)
    (_, y), p = one_step(MetaMixup(eps_scale=EPS, mixup_gamma=1.0), model, batch, ctx)
    (_, y_cl), p_cl = one_step(MetaMixup(eps_scale=EPS, mixup_gamma=1.0), model_cl, batch_cl, ctx)
    torch.testing.assert_close(y_cl, y, rtol=0, atol=1e-5)
    for a, b in zip(p_cl, p):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_bench_step_runs_every_variant_and_tables_one_row_each():
    res = bench_step("mlp", batch=8, device="cpu", repeat=2, memory=False)
    assert set(res["variants"]) == {"supervised", "mixup", "reference", "metamixup", "metamixup-head", "metamixup-jvp",
                                    "metamixup-exact"}
    gflop = {v: r["gflop_per_step"] for v, r in res["variants"].items()}
    # the meta pass costs FLOPs on top of mixup's step; the head-only one less than the full one
    assert gflop["supervised"] < gflop["mixup"] < gflop["metamixup-head"] < gflop["metamixup"] < gflop["metamixup-exact"]
    rows = format_table(res).splitlines()[3:]
    assert [r.split(" | ")[0].lstrip("| ") for r in rows] == list(res["variants"])


def test_bench_step_reports_medians_quartiles_throughput_and_ratio_to_mixup(monkeypatch):
    """With the step times fixed, every reported number is the stated statistic of them; mixup is timed
    even when not asked for, since the ratios are relative to it."""
    times = {"mixup": [0.04, 0.02, 0.03], "supervised": [0.01, 0.015, 0.02], "metamixup": [0.09, 0.06, 0.075]}
    seen = []

    def fake_times(variants, *args, **kwargs):
        seen.append(list(variants))
        return {v: times[v] for v in variants}

    monkeypatch.setattr("metassl.experiments.step.time_variants", fake_times)
    res = bench_step("mlp", batch=8, device="cpu", repeat=3, variants=["supervised", "metamixup"], memory=False)
    assert seen == [["mixup", "supervised", "metamixup"]]
    v = res["variants"]
    assert v["mixup"]["ms_per_step"] == pytest.approx(30.0) and v["metamixup"]["ms_per_step"] == pytest.approx(75.0)
    assert v["supervised"]["ratio_to_mixup"] == pytest.approx(0.5)
    assert v["metamixup"]["ratio_to_mixup"] == pytest.approx(2.5)
    assert v["supervised"]["images_per_second"] == pytest.approx(8 / 0.015)     # labeled images only
    assert v["metamixup"]["images_per_second"] == pytest.approx(16 / 0.075)     # labeled + unlabeled
    lo, hi = v["mixup"]["spread_ms"]
    assert lo < 30.0 < hi and (lo, hi) == pytest.approx((20.0, 40.0))
