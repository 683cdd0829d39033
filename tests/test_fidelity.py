"""Fidelity to the authors: their behaviour is reachable and the meta-gradient plumbing is right.

Each test here failed on the code before its fix (see the commit that added it).
"""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metassl.algorithms import StepContext, build_algorithm
from metassl.algorithms.meta_gradient import meta_gradient
from metassl.algorithms import build_config


def pseudo_labels_of(algo, out):
    """(y~, y^) of one step: the step's output (StepOutput) or, before it existed, the algorithm's attribute."""
    return out.pseudo_labels if hasattr(out, "pseudo_labels") else algo.last_pseudo_labels


# --- `exact` unrolls the virtual step with the step's learning rate --------------------------------------
def _unrolled_reference(model, x_lb, y_lb, x_ulb, y, alpha, h=1e-6):
    """d CE(f(x_lb; theta~)) / d y by central differences, theta~ from one real torch.optim.SGD step of lr
    alpha on the MSE consistency to y: independent of meta_gradient's functional unrolling."""
    def outer(y):
        m = copy.deepcopy(model)
        opt = torch.optim.SGD(m.parameters(), lr=alpha)
        ((F.softmax(m(x_ulb), 1) - y) ** 2).sum(1).mean().backward()
        opt.step()
        with torch.no_grad():
            return F.cross_entropy(m(x_lb), y_lb)

    ref = torch.zeros_like(y)
    for i in range(y.shape[0]):
        for j in range(y.shape[1]):
            e = torch.zeros_like(y)
            e[i, j] = h
            ref[i, j] = (outer(y + e) - outer(y - e)) / (2 * h)
    return ref


def test_exact_meta_gradient_unrolls_with_the_given_alpha():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x_lb, y_lb = torch.randn(5, 1, 3, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1])
    x_ulb = torch.randn(4, 1, 3, 4, dtype=torch.float64)
    y = F.softmax(3 * torch.randn(4, 3, dtype=torch.float64), 1)      # not the model's own prediction
    alpha = 0.3
    expected = _unrolled_reference(model, x_lb, y_lb, x_ulb, y, alpha) * (len(x_ulb) / alpha)  # authors' scale
    got = meta_gradient(model, x_lb, y_lb, x_ulb, y, method="exact", phi="mse", alpha=alpha)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    at_one = meta_gradient(model, x_lb, y_lb, x_ulb, y, method="exact", phi="mse", alpha=1.0)
    assert (at_one - expected).abs().max() > 1e-3 * expected.abs().max()   # alpha matters here: not vacuous


def _tiny_batch(views: int, b: int = 6, classes: int = 3):
    from metassl.algorithms import Batch
    g = torch.Generator().manual_seed(1)
    return Batch(torch.randn(b, 1, 4, 4, generator=g), torch.arange(b) % classes,
                 [torch.randn(b, 1, 4, 4, generator=g) for _ in range(views)])


@pytest.mark.parametrize("algorithm", ["meta", "metamixup", "metafixmatch"])
def test_meta_algorithms_unroll_exact_with_the_step_lr(algorithm, monkeypatch):
    import importlib
    module = importlib.import_module(
        "metassl.algorithms." + ("metafixmatch" if algorithm == "metafixmatch" else "metamixup"))
    seen = []
    real = module.meta_gradient

    def spy(*args, **kwargs):
        seen.append(kwargs.get("alpha"))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "meta_gradient", spy)
    fused = [] if algorithm == "metafixmatch" else ["meta_fused=false"]     # metafixmatch has no fused pass
    cfg = build_config(overrides=[f"algorithm={algorithm}", "meta_method=exact", *fused, "model=mlp"])
    algo = build_algorithm(cfg)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    algo.step(model, _tiny_batch(len(algo.views)), StepContext(iteration=5, lr=0.037, meta_step_size=0.037,
                                                               consistency_weight=1.0, num_classes=3))
    assert seen == [0.037]


# --- metafixmatch uses the global g_l under torchrun (meta_scope=global) ----------------------------------
def _metafixmatch_y_hat(rank: int, world: int, init_file: str, out_dir: str) -> None:
    """One metafixmatch step on this rank's shard of a fixed batch of 8; saves its corrected y^ (B_u/world, C)."""
    from metassl.run import distributed
    from metassl.algorithms import Batch
    torch.set_num_threads(1)
    if world > 1:
        torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    d = distributed.Dist(rank, world)
    algo = build_algorithm(build_config(overrides=["algorithm=metafixmatch", "meta_method=fd"]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))    # per-sample: no batch statistics to share
    full = _tiny_batch(2, b=8)
    lo, hi = rank * 8 // world, (rank + 1) * 8 // world
    shard = Batch(full.x_lb[lo:hi], full.y_lb[lo:hi], [v[lo:hi] for v in full.x_ulb])
    reduce = (lambda g: distributed.average_dict(g, d)) if world > 1 else None   # the trainer's, meta_scope=global
    ctx = StepContext(iteration=0, lr=0.1, meta_step_size=1.0, consistency_weight=1.0, num_classes=3, reduce_grad=reduce)
    torch.save(pseudo_labels_of(algo, algo.step(model, shard, ctx))[1], f"{out_dir}/{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")
def test_metafixmatch_two_gloo_processes_correct_like_one_process_with_the_whole_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    _metafixmatch_y_hat(0, 1, "", str(one))
    torch.multiprocessing.spawn(_metafixmatch_y_hat, args=(2, str(tmp_path / "init"), str(two)), nprocs=2)
    y_hat_one = torch.load(one / "0.pt")
    y_hat_two = torch.cat([torch.load(two / f"{r}.pt") for r in range(2)])
    torch.testing.assert_close(y_hat_two, y_hat_one, rtol=1e-5, atol=1e-6)


# --- crop padding; the authors pad with zeros (black, before normalisation) -------------------------------
@pytest.mark.parametrize("pad_mode", ["zeros", "reflect"])
def test_pad_mode_zeros_pads_black_pixels_before_normalisation(pad_mode):
    import numpy as np

    from metassl.data import ImageData
    from metassl.train import build_data
    x = np.random.default_rng(0).integers(1, 256, (40, 12, 12, 3)).astype(np.uint8)   # no black pixel anywhere
    y = np.arange(40) % 4
    data = ImageData(x, y, x[:8], y[:8], ["a", "b", "c", "d"], flip=False)
    cfg = build_config(overrides=["translate=4", f"pad_mode={pad_mode}", "num_labels=8", "flip=false",
                                  "channels_last=false"])
    dd = build_data(cfg, build_algorithm(cfg), data, torch.device("cpu"))
    torch.manual_seed(0)
    v = dd.view(dd.x_train[:32], "weak") * dd.std[:, None, None] + dd.mean[:, None, None]   # back to [0, 1]
    black = (v.abs() < 1e-5).all(1)                                                         # (N, H, W)
    border = torch.ones(12, 12, dtype=torch.bool)
    border[4:-4, 4:-4] = False
    if pad_mode == "zeros":
        assert black.any() and not (black & ~border).any()   # padded pixels are 0 and only in the 4-pixel band
        assert (black.sum((1, 2)) > 0).float().mean() > 0.5  # most crops are off-centre
    else:
        assert not black.any()                               # reflect brings in image pixels


def test_the_authors_presets_pad_with_zeros_and_ours_reflect():
    for preset in ("svhn-1000", "cifar10-4000", "cifar100-10000"):
        assert build_config(preset).pad_mode == "zeros", preset
    assert build_config("fmnist-1000").pad_mode == "reflect"


# --- the authors' presets take their step: pass order and learning-rate schedule ------------------------
def _schedules():
    from metassl.schedule import meta_step_size_at, lr_at
    return lr_at, meta_step_size_at


@pytest.mark.parametrize("preset", ["svhn-1000", "cifar10-4000", "cifar100-10000"])
def test_the_authors_presets_use_their_warmup_decay_and_pass_order(preset):
    lr_at, meta_step_size_at = _schedules()
    cfg = build_config(preset)
    assert cfg.meta_fused is False                       # a separate plain pseudo-label forward, as theirs
    assert lr_at(0, cfg) == 0.0 and meta_step_size_at(0, cfg) == 0.0   # lr * step / warmup from step 0
    assert lr_at(1, cfg) == pytest.approx(0.1 / 4000)
    assert lr_at(2000, cfg) == pytest.approx(0.05)
    assert lr_at(4000, cfg) == pytest.approx(0.1)
    assert lr_at(300000, cfg) == pytest.approx(0.1)      # decay once step > milestone
    assert lr_at(300001, cfg) == pytest.approx(0.01)
    assert lr_at(350000, cfg) == pytest.approx(0.01)
    assert lr_at(350001, cfg) == pytest.approx(0.001)


def test_our_schedule_is_unchanged():
    import math
    lr_at, _ = _schedules()
    cfg = build_config("fmnist-1000")                    # warm-up 200, cosine over 2000
    assert cfg.meta_fused is True and cfg.iterations == 2000
    for it in (0, 1, 199):
        assert lr_at(it, cfg) == pytest.approx(0.05 * (it + 1) / 200)
    for it in (200, 700, 1999):
        assert lr_at(it, cfg) == pytest.approx(0.025 * (1 + math.cos(math.pi * (it - 200) / 1800)))
    step = build_config(overrides=["lr_schedule=step", "lr_steps=100,200", "warmup=10", "lr=0.1"])
    assert [lr_at(it, step) for it in (0, 9, 99, 100, 199, 200)] == pytest.approx(
        [0.01, 0.1, 0.1, 0.01, 0.01, 0.001])


# --- the ImageNet preset is the authors' run length, counted in unlabeled epochs -------------------------
def test_imagenet_preset_runs_the_authors_600_unlabeled_epochs_with_per_gpu_meta_gradient():
    import math
    cfg = build_config("imagenet-10pct")
    assert cfg.batch_size == cfg.unlabeled_batch_size == 8 * 64          # 8 GPUs x (64 + 64)
    epoch = math.ceil((1_281_167 - cfg.num_labels) / cfg.unlabeled_batch_size)   # the unlabeled loader's length
    assert epoch == 2253 == math.ceil((1_281_167 - 128_116) / 512)      # the same with the usual 10% files
    assert cfg.iterations == 600 * epoch == 1_351_800                   # "about 1.35M"
    assert cfg.warmup == 5 * epoch == 11_265                            # "about 11k"
    assert cfg.meta_scope == "local"                                    # their g_l and eps are per GPU
    assert cfg.meta_method == "fd" and cfg.meta_fused is False          # their meta pass, not auto's jvp
    assert (cfg.lr, cfg.lr_schedule, cfg.consistency_rampup, cfg.sync_bn) == (0.1, "cosine", 0, True)


# --- the consistency loss and the meta-gradient's Phi are one derivation --------------------------------
@pytest.mark.parametrize("algorithm", ["meta", "metamixup"])
@pytest.mark.parametrize("consistency,meta_phi", [("kl", "mse"), ("mse", "kl")])
def test_mixed_consistency_and_meta_phi_are_rejected_in_one_line(algorithm, consistency, meta_phi):
    from metassl.errors import UserError
    cfg = build_config(overrides=[f"algorithm={algorithm}", f"consistency={consistency}", f"meta_phi={meta_phi}"])
    with pytest.raises(UserError) as e:
        build_algorithm(cfg)
    line = str(e.value)
    assert "\n" not in line and f"consistency={consistency}" in line and f"meta_phi={meta_phi}" in line


@pytest.mark.parametrize("overrides,loss", [(["algorithm=metamixup", "consistency=kl", "meta_phi=kl"], "kl"),
                                            (["algorithm=metamixup", "consistency=mse", "meta_phi=mse"], "mse"),
                                            (["algorithm=mixup", "consistency=kl"], "kl"),
                                            (["algorithm=neither", "consistency=kl"], "kl")])
def test_matching_or_unused_keys_build_the_loss_they_name(overrides, loss):
    """Where Phi is used it is the named loss on both sides; rows without the correction read only `consistency`."""
    algo = build_algorithm(build_config(overrides=overrides))
    assert algo.consistency == loss
    if algo.meta:
        assert algo.meta_phi == loss


def test_metafixmatch_takes_meta_phi_into_its_correction():
    algo = build_algorithm(build_config(overrides=["algorithm=metafixmatch", "meta_phi=kl"]))
    assert algo.correction.meta_phi == "kl"


# --- the default meta-gradient is accurate on every registered backbone -----------------------------------
def _backbones():
    from metassl.models import model_names
    return model_names()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "wrn-28-8" else n
                                  for n in _backbones()])   # wrn-28-8: 36M parameters, second order in float64: ~25 s
def test_default_meta_gradient_agrees_with_exact_on_every_backbone(name):
    """What `metassl check --json` reports as `default`, at each backbone's natural shape (wrn-28-8 at 12 px),
    batch 2+2, float64, at init. resnet18 at 64 px (ImageNet stem) gave cosine 0.91 with fd at the default eps."""
    from metassl.diagnostics.check import agreement_on, calibrate_bn
    from metassl.config import Config
    from metassl.models import build_model, natural_shape
    channels, size = natural_shape(name)
    size = 12 if name == "wrn-28-8" else size
    torch.manual_seed(0)
    model = build_model(name, 10, channels, size).double()
    x = torch.randn(4, channels, size, size, dtype=torch.float64)
    calibrate_bn(model, x)
    res = agreement_on(model, x[:2], torch.tensor([3, 7]), x[2:], Config.eps_scale)
    for phi in ("mse", "kl"):
        assert res[phi]["default"]["method"] == ("jvp" if name == "resnet18" else "fd")   # fd stays for the others
        assert res[phi]["default"]["cosine"] > 0.99, (phi, res[phi])


def test_jvp_runs_under_autocast():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Flatten(),
                          nn.Linear(16, 3))
    x_lb, y_lb, x_ulb = torch.randn(2, 1, 4, 4), torch.tensor([0, 2]), torch.randn(3, 1, 4, 4)
    y = F.softmax(model(x_ulb), 1).detach()
    plain = meta_gradient(model, x_lb, y_lb, x_ulb, y, method="jvp", phi="mse")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = meta_gradient(model, x_lb, y_lb, x_ulb, y, method="jvp", phi="mse")
    torch.testing.assert_close(mixed, plain, rtol=0.05, atol=0.05)   # g_l is taken in bf16 there, jvp in float32
