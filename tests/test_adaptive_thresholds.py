"""FlexMatch, FreeMatch and SoftMatch: their adaptive thresholds and weights follow the papers' equations
on hand-made confidences, and the state behind them survives a checkpoint (step level and trainer level)."""
from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metassl.run import checkpoint
from metassl.algorithms import Batch, StepContext
from metassl.algorithms.flexmatch import FlexMatch
from metassl.algorithms.freematch import FreeMatch, fairness_loss
from metassl.algorithms.softmatch import SoftMatch
from metassl.algorithms import build_config
from metassl.train import train
from tests.conftest import identity_net, make_tiny_data, tiny_batch, tiny_net, train_killed_after

C = 4
pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


def logits_for(conf: list[float], classes: list[int]) -> torch.Tensor:
    """(N, C, 1, 1) logits whose softmax puts conf[i] on classes[i] and the rest evenly."""
    z = torch.zeros(len(conf), C)
    for i, (c, k) in enumerate(zip(conf, classes)):
        z[i, k] = math.log(c * (C - 1) / (1 - c))
    return z[:, :, None, None]


def batch_of(conf: list[float], classes: list[int], idx: list[int] | None = None) -> Batch:
    x_w = logits_for(conf, classes)
    return Batch(torch.zeros(2, C, 1, 1), torch.tensor([0, 1]), [x_w, torch.randn_like(x_w)], None,
                 torch.tensor(idx if idx is not None else range(len(conf))))


def ctx(n: int = 20, weight: float = 1.0) -> StepContext:
    return StepContext(5, lr=0.05, meta_step_size=0.0, consistency_weight=weight, num_classes=C, num_unlabeled=n)


# --------------------------------------------------------------------------- FlexMatch

def test_flexmatch_class_thresholds_follow_the_learning_status_with_and_without_warmup():
    status = torch.tensor([0] * 6 + [1] * 3 + [-1] * 11)                 # sigma = [6, 3, 0, 0], N = 20
    plain, warm = FlexMatch(0.9, flexmatch_warmup=False), FlexMatch(0.9, flexmatch_warmup=True)
    plain.selected, warm.selected = status.clone(), status.clone()
    beta_plain = torch.tensor([1, 0.5, 0, 0])                            # sigma / max sigma (Eq. 7)
    beta_warm = torch.tensor([6, 3, 0, 0]) / 11                          # sigma / max(max sigma, 11 unused) (Eq. 11)
    torch.testing.assert_close(plain.learning_effect(C), beta_plain)
    torch.testing.assert_close(warm.learning_effect(C), beta_warm)
    torch.testing.assert_close(plain.class_thresholds(C), 0.9 * beta_plain / (2 - beta_plain))   # M(x) = x/(2-x)
    torch.testing.assert_close(warm.class_thresholds(C), 0.9 * beta_warm / (2 - beta_warm))
    # once the unused images are fewer than the best-learned class, the warm-up variant equals the plain one
    warm.selected = torch.tensor([0] * 10 + [1] * 5 + [2] * 2 + [-1] * 3)
    torch.testing.assert_close(warm.learning_effect(C), torch.tensor([1, 0.5, 0.2, 0]))


@pytest.mark.parametrize("warmup", [True, False])
def test_flexmatch_step_masks_with_the_previous_status_then_records_confident_predictions(warmup):
    algo, model = FlexMatch(0.9, flexmatch_warmup=warmup), identity_net(C)
    # step 1: nothing learned yet, every threshold is M(0) tau = 0, so every row passes
    out = algo.step(model, batch_of([0.95, 0.92, 0.5, 0.3], [0, 0, 1, 2], [3, 7, 8, 9]), ctx())
    assert out.metrics["mask"].item() == 1.0
    expected = torch.full((20,), -1)
    expected[[3, 7]] = 0                                                 # only conf >= tau = 0.9 enter the status
    assert torch.equal(algo.selected, expected)
    # step 2: class 0 learned (sigma = [2, 0, 0, 0]); with the warm-up 18 unused images dominate
    beta0 = 2 / 18 if warmup else 1.0
    t0 = 0.9 * beta0 / (2 - beta0)                                       # 0.0947 with warm-up, 0.9 without
    out = algo.step(model, batch_of([0.91, 0.5, 0.3, 0.26], [0, 0, 1, 3], [3, 10, 11, 12]), ctx())
    torch.testing.assert_close(algo.class_thresholds(C)[1:], torch.zeros(3))   # image 3 re-predicted class 0
    expected_mask = [1.0, float(0.5 >= t0), 1.0, 1.0]                    # classes 1 and 3 are still at 0
    assert out.metrics["mask"].item() == pytest.approx(np.mean(expected_mask))
    assert out.metrics["threshold_mean"].item() == pytest.approx(t0 / C)
    assert (algo.selected >= 0).sum() == 2                               # image 3 re-confirmed, 10-12 not confident


def test_flexmatch_status_changes_when_an_image_is_predicted_as_another_class():
    algo, model = FlexMatch(0.9, flexmatch_warmup=False), identity_net(C)
    algo.step(model, batch_of([0.95, 0.95, 0.95], [0, 0, 1], [0, 1, 2]), ctx())
    torch.testing.assert_close(algo.learning_effect(C), torch.tensor([1, 0.5, 0, 0]))
    algo.step(model, batch_of([0.97, 0.2, 0.2], [1, 0, 0], [0, 5, 6]), ctx())   # image 0 now says class 1
    torch.testing.assert_close(algo.learning_effect(C), torch.tensor([0.5, 1, 0, 0]))


# --------------------------------------------------------------------------- FreeMatch

def test_freematch_global_and_local_thresholds_move_with_the_ema_of_confidence():
    m = 0.5
    algo, model = FreeMatch(freematch_ema=m, freematch_fairness_weight=0.0), identity_net(C)
    conf, cls = [0.9, 0.8, 0.7, 0.4], [0, 0, 1, 2]
    q = F.softmax(logits_for(conf, cls).flatten(1), 1)
    out = algo.step(model, batch_of(conf, cls), ctx())
    tau = m / C + (1 - m) * np.mean(conf)                                # Eq. 5 from tau_0 = 1/C
    p_model = m / C + (1 - m) * q.mean(0)                                # Eq. 6
    hist = m / C + (1 - m) * torch.tensor([2, 1, 1, 0]) / 4              # Eq. 11
    assert algo.time_p.item() == pytest.approx(tau)
    torch.testing.assert_close(algo.p_model, p_model)
    torch.testing.assert_close(algo.label_hist, hist)
    thresholds = tau * p_model / p_model.max()                           # Eq. 7: the local threshold
    torch.testing.assert_close(algo.class_thresholds(), thresholds)
    t = thresholds.tolist()
    assert t[3] < t[2] < t[1] < t[0] and t[0] == pytest.approx(tau)    # a rarer class gets a lower threshold
    expected_mask = [float(c >= thresholds[k]) for c, k in zip(conf, cls)]
    assert out.metrics["mask"].item() == pytest.approx(np.mean(expected_mask))
    # a confident batch raises the global threshold, a hesitant one lowers it
    before = algo.time_p.item()
    algo.step(model, batch_of([0.99] * 4, [0, 1, 2, 3]), ctx())
    assert algo.time_p.item() == pytest.approx(m * before + (1 - m) * 0.99) and algo.time_p.item() > before
    before = algo.time_p.item()
    algo.step(model, batch_of([0.3] * 4, [0, 1, 2, 3]), ctx())
    assert algo.time_p.item() < before


def reference_fairness(mask, logits_s, p_model, label_hist):
    """Eq. 12 written with boolean indexing over the kept rows, as the authors' code does."""
    probs = F.softmax(logits_s[mask.bool()], 1)
    hist = torch.bincount(probs.argmax(1), minlength=C).float()
    hist = hist / hist.sum()
    target = (p_model / label_hist) / (p_model / label_hist).sum()
    inv = torch.where(hist > 0, 1 / hist, torch.zeros_like(hist))
    mean = probs.mean(0) * inv
    mean = mean / mean.sum()
    return (target * torch.log(mean + 1e-12)).sum()


def test_freematch_fairness_term_is_eq12_over_the_kept_rows_and_zero_without_them():
    g = torch.Generator().manual_seed(0)
    logits_s = torch.randn(6, C, generator=g, requires_grad=True)
    p_model, label_hist = torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0.5, 0.2, 0.2, 0.1])
    mask = torch.tensor([1.0, 0, 1, 1, 0, 1])
    loss = fairness_loss(mask, logits_s, p_model, label_hist)
    torch.testing.assert_close(loss, reference_fairness(mask, logits_s, p_model, label_hist))
    loss.backward()
    assert logits_s.grad[mask.bool()].abs().sum() > 0 and logits_s.grad[~mask.bool()].abs().sum() == 0
    none = fairness_loss(torch.zeros(6), logits_s, p_model, label_hist)
    assert none.item() == 0.0 and torch.isfinite(none)
    # the step adds w(t) * w_f * loss_f
    algo = FreeMatch(freematch_fairness_weight=0.5)
    out = algo.step(identity_net(C), batch_of([0.9, 0.8, 0.7, 0.6], [0, 1, 2, 3]), ctx(weight=0.7))
    m = out.metrics
    torch.testing.assert_close(m["loss"], m["loss_cls"] + 0.7 * (m["loss_fm"] + 0.5 * m["loss_fair"]))


# --------------------------------------------------------------------------- SoftMatch

def test_softmatch_weights_follow_the_truncated_gaussian_with_ema_mean_and_variance():
    m, n = 0.5, 2.0
    algo, model = SoftMatch(softmatch_ema=m, softmatch_n_sigma=n, softmatch_align=False), identity_net(C)
    conf, cls = [0.95, 0.8, 0.4, 0.3], [0, 1, 2, 3]
    out = algo.step(model, batch_of(conf, cls), ctx())
    mu = m / C + (1 - m) * np.mean(conf)                                 # Eq. 7 from mu_0 = 1/C
    var = m * 1.0 + (1 - m) * np.var(conf, ddof=1)                       # from s2_0 = 1, unbiased batch variance
    assert algo.mu.item() == pytest.approx(mu) and algo.var.item() == pytest.approx(var)
    w = [1.0 if c >= mu else math.exp(-(c - mu) ** 2 / (2 * var / n ** 2)) for c in conf]   # Eq. 6
    assert w[0] == w[1] == 1.0 and w[3] < w[2] < 1.0
    assert out.metrics["mask"].item() == pytest.approx(np.mean(w), rel=1e-5)
    # the weights follow the moving mean: after confident batches mu rises and the same row weighs less
    for _ in range(3):
        algo.step(model, batch_of([0.99] * 4, cls), ctx())
    assert algo.mu.item() > mu
    mu2, var2 = algo.mu.item(), algo.var.item()
    assert math.exp(-(0.4 - mu2) ** 2 / (2 * var2 / n ** 2)) < w[2]


def test_softmatch_loss_is_weighted_ce_to_raw_argmax_and_weights_use_uniformly_aligned_probs():
    m = 0.9
    algo = SoftMatch(softmatch_ema=m, softmatch_align=True)
    conf, cls = [0.9, 0.85, 0.8, 0.4], [0, 0, 0, 1]                      # the batch leans to class 0
    batch = batch_of(conf, cls)
    q = F.softmax(batch.x_ulb[0].flatten(1), 1)
    out = algo.step(identity_net(C), batch, ctx())
    p_model = q.mean(0)                                                  # the first batch's mean (USB)
    torch.testing.assert_close(algo.p_model, p_model)
    aligned = q * (1 / C + 1e-6) / (p_model + 1e-6)
    aligned = aligned / aligned.sum(1, keepdim=True)
    assert (aligned[:, 0] < q[:, 0]).all()                               # the over-predicted class is damped
    c = aligned.max(1).values
    mu = m / C + (1 - m) * c.mean()
    var = m + (1 - m) * c.var(unbiased=True)
    w = torch.exp(-(c - mu).clamp(max=0) ** 2 / (2 * var / 4))
    ce = F.cross_entropy(batch.x_ulb[1].flatten(1), q.argmax(1), reduction="none")   # raw argmax labels
    torch.testing.assert_close(out.metrics["loss_sm"], (w * ce).mean())
    torch.testing.assert_close(algo.mu, mu)


# --------------------------------------------------------------------------- state survives a checkpoint

ALGOS = {"flexmatch": lambda: FlexMatch(0.5), "freematch": lambda: FreeMatch(freematch_ema=0.9),
         "softmatch": lambda: SoftMatch(softmatch_ema=0.9)}


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_state_dict_round_trip_continues_the_same_steps(name, tmp_path):
    """Three steps, save the algorithm's state through torch.save (weights_only, as checkpoints load), load
    it into a fresh algorithm: the next steps equal the original's; a fresh algorithm's do not."""
    algo, model = ALGOS[name](), tiny_net().train()
    for s in range(3):
        algo.step(model, tiny_batch(algo, seed=s), ctx(n=32))
    torch.save(algo.state_dict(), tmp_path / "algo.pt")
    restored, fresh = ALGOS[name](), ALGOS[name]()
    restored.load_state_dict(torch.load(tmp_path / "algo.pt", weights_only=True))
    batch = tiny_batch(algo, seed=9)
    losses = {}
    for key, a in (("orig", algo), ("restored", restored), ("fresh", fresh)):
        torch.manual_seed(0)
        losses[key] = a.step(copy.deepcopy(model), batch, ctx(n=32)).metrics
    for k in losses["orig"]:
        torch.testing.assert_close(losses["restored"][k], losses["orig"][k])
    assert any(not torch.equal(losses["fresh"][k], losses["orig"][k]) for k in losses["orig"])
    for k, v in algo.state_dict().items():
        torch.testing.assert_close(restored.state_dict()[k], v)



OWN_KEY = {"flexmatch": "flexmatch_threshold=0.3", "freematch": "freematch_ema=0.9", "softmatch": "softmatch_ema=0.9"}


@pytest.mark.parametrize("name", sorted(ALGOS))
def test_trainer_resume_is_identical_for_the_adaptive_algorithms(name, tmp_path, monkeypatch):
    """Killed after the checkpoint at iteration 4 and resumed: the same weights and algorithm state as an
    uninterrupted run of 8 iterations (their EMAs and learning status came back from the checkpoint)."""
    data = make_tiny_data(n_train=96, n_test=24, size=8, classes=C)
    cfg = build_config(None, None, [f"algorithm={name}", "device=cpu", "model=cnn", "num_labels=16", "batch_size=8",
                                    "iterations=8", "eval_every=4", "checkpoint_every=4", "log_every=4", "warmup=1",
                                    "consistency_rampup=2", OWN_KEY[name]])
    train(cfg, tmp_path / "full", data=data, quiet=True)
    train_killed_after(cfg, tmp_path / "cut", data, monkeypatch)
    train(cfg, tmp_path / "cut", data=data, quiet=True, resume=True)
    a, b = checkpoint.load(tmp_path / "full"), checkpoint.load(tmp_path / "cut")
    assert a["algorithm"] and a["algorithm"].keys() == b["algorithm"].keys()
    for k, v in a["algorithm"].items():
        assert torch.equal(v, b["algorithm"][k]), k
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
