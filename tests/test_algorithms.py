"""Per-algorithm regression tests: the unlabeled loss moves the student, the teacher is an EMA, FixMatch's
mask follows its threshold, VAT's perturbation has its norm, MixMatch guesses labels right, and every
registered algorithm trains through `metassl.train.train`."""
from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metassl.algorithms import ALGORITHMS, Batch, StepContext, build_algorithm
from metassl.algorithms.common import frozen_bn_stats, hard_pseudo_labels, sharpen
from metassl.algorithms.fixmatch import FixMatch
from metassl.algorithms.meanteacher import MeanTeacher
from metassl.algorithms.metafixmatch import MetaFixMatch
from metassl.algorithms.mixmatch import MixMatch, guess_labels
from metassl.algorithms.vat import VAT, kl_div
from metassl.config import Config
from metassl.data import ImageData
from metassl.train import train

C = 4   # classes of the tiny problems
SSL = ["pimodel", "meanteacher", "vat", "pseudolabel", "mixmatch", "fixmatch", "metafixmatch",
       "neither", "meta", "mixup", "metamixup"]


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: two threads spin against other jobs


def tiny_net() -> nn.Module:
    """Conv + BN + dropout on 1x6x6 inputs: BN and dropout handling matter, and it runs in milliseconds."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.LeakyReLU(0.1), nn.Dropout(0.2),
                         nn.Flatten(), nn.Linear(4 * 6 * 6, C))


def tiny_batch(algo, n: int = 8, seed: int = 1) -> Batch:
    g = torch.Generator().manual_seed(seed)
    x_lb = torch.randn(n, 1, 6, 6, generator=g)
    y_lb = torch.randint(0, C, (n,), generator=g)
    base = torch.randn(n, 1, 6, 6, generator=g)
    x_ulb = [base + 0.1 * torch.randn(n, 1, 6, 6, generator=g) for _ in algo.views]
    return Batch(x_lb, y_lb, x_ulb, torch.randint(0, C, (n,), generator=g))


def ctx(weight: float = 1.0, beta: float = 0.05, iteration: int = 10) -> StepContext:
    return StepContext(iteration, lr=0.05, beta=beta, consistency_weight=weight, num_classes=C)


def build(name: str, **overrides) -> object:
    return build_algorithm(dataclasses.replace(Config(), algorithm=name, **overrides))


def grads(name: str, weight: float, **overrides) -> tuple[list[torch.Tensor], dict]:
    """Parameter gradients of one step's loss at consistency weight `weight` (same draws every call)."""
    model, algo = tiny_net().train(), build(name, **overrides)
    batch = tiny_batch(algo)
    torch.manual_seed(123)
    loss, metrics = algo.step(model, batch, ctx(weight))
    loss.backward()
    return [p.grad.clone() for p in model.parameters()], metrics


# --------------------------------------------------------------------------- the unlabeled loss moves the student

@pytest.mark.parametrize("name", SSL)
def test_unlabeled_loss_has_gradient_wrt_student(name):
    """grad(loss at w=1) - grad(loss at w=0) is the gradient of the unlabeled term: it must not vanish
    (USB's Mean Teacher took it from the no-grad teacher pass, so it did, issues #102/#226)."""
    thresholds = dict(fixmatch_threshold=0.0, pseudolabel_threshold=0.0)   # mask non-empty by construction
    g1, metrics = grads(name, 1.0, **thresholds)
    g0, _ = grads(name, 0.0, **thresholds)
    if "mask" in metrics:
        assert metrics["mask"] > 0
    diff = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(g1, g0)))
    assert diff > 1e-6, f"{name}: the unlabeled loss does not reach the student's parameters"


# --------------------------------------------------------------------------- Mean Teacher

def test_mean_teacher_is_an_ema_of_the_student_and_checkpoints():
    model = tiny_net().train()
    algo = MeanTeacher(meanteacher_weight=100.0, meanteacher_ema=0.999, rampup=5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for it, expected_decay in ((0, 0.99), (7, 0.999)):   # 0.99 during the ramp-up, then meanteacher_ema
        loss, _ = algo.step(model, tiny_batch(algo, seed=it), ctx(iteration=it))
        old = [p.clone() for p in algo.teacher.parameters()]
        opt.zero_grad()
        loss.backward()
        opt.step()
        algo.after_update(model)
        assert algo.decay() == expected_decay
        for t, o, s in zip(algo.teacher.parameters(), old, model.parameters()):
            torch.testing.assert_close(t, expected_decay * o + (1 - expected_decay) * s)
            assert not t.requires_grad
    diff = sum((t - s).abs().sum() for t, s in zip(algo.teacher.parameters(), model.parameters()))
    assert diff > 1e-4, "the teacher equals the student"
    # the teacher travels through checkpoints (state_dict before the new algorithm's first step)
    restored = MeanTeacher()
    restored.load_state_dict(copy.deepcopy(algo.state_dict()))
    restored.step(model, tiny_batch(restored), ctx())
    for a, b in zip(restored.teacher.state_dict().values(), algo.teacher.state_dict().values()):
        torch.testing.assert_close(a, b)


# --------------------------------------------------------------------------- FixMatch / Pseudo-Label masks

def test_hard_pseudo_labels_threshold():
    probs = torch.tensor([[0.96, 0.04], [0.05, 0.95], [0.3, 0.7], [0.9499, 0.0501]])
    labels, mask = hard_pseudo_labels(probs, 0.95)
    assert labels.tolist() == [0, 1, 1, 0] and mask.tolist() == [1.0, 1.0, 0.0, 0.0]


def identity_net() -> nn.Module:
    """logits = the input itself ((N, C, 1, 1) -> (N, C)): confidences are set by the test."""
    lin = nn.Linear(C, C)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(C))
        lin.bias.zero_()
    return nn.Sequential(nn.Flatten(), lin)


def logits_with_confidence(conf: list[float]) -> torch.Tensor:
    """(N, C, 1, 1) logits whose softmax puts `conf` on class i % C and the rest evenly."""
    rows = []
    for i, c in enumerate(conf):
        z = torch.zeros(C)
        z[i % C] = np.log(c * (C - 1) / (1 - c))
        rows.append(z)
    return torch.stack(rows)[:, :, None, None]


@pytest.mark.parametrize("threshold, expected", [(0.95, [1, 1, 0, 0, 0]), (0.85, [1, 1, 1, 0, 0]),
                                                 (0.5, [1, 1, 1, 1, 0]), (0.0, [1, 1, 1, 1, 1])])
def test_fixmatch_mask_follows_threshold(threshold, expected):
    conf = [0.99, 0.96, 0.9, 0.6, 0.3]
    x_w = logits_with_confidence(conf)
    x_s = torch.randn_like(x_w)
    batch = Batch(torch.randn(3, C, 1, 1), torch.tensor([0, 1, 2]), [x_w, x_s])
    algo = FixMatch(fixmatch_threshold=threshold)
    model = identity_net()
    loss, metrics = algo.step(model, batch, ctx())
    assert metrics["mask"].item() == pytest.approx(np.mean(expected))
    # the loss is the mean over all rows of mask * CE(strong logits, argmax weak)
    ce = F.cross_entropy(x_s.flatten(1), torch.arange(5) % C, reduction="none")
    expected_fm = (ce * torch.tensor(expected, dtype=torch.float)).mean()
    torch.testing.assert_close(metrics["loss_fm"], expected_fm)


def test_metafixmatch_is_fixmatch_at_beta_zero_and_corrects_otherwise():
    batch = tiny_batch(FixMatch())
    out = {}
    for name, algo, beta in (("fm", FixMatch(0.0), 0.0), ("meta0", MetaFixMatch(0.0), 0.0),
                             ("meta", MetaFixMatch(0.0), 0.5)):
        model = tiny_net().train()
        torch.manual_seed(7)
        loss, metrics = algo.step(model, batch, ctx(beta=beta))
        loss.backward()
        out[name] = (loss.detach(), [p.grad for p in model.parameters()], metrics, algo.last_pseudo_labels)
    torch.testing.assert_close(out["meta0"][0], out["fm"][0])
    for a, b in zip(out["meta0"][1], out["fm"][1]):
        torch.testing.assert_close(a, b)
    assert out["meta"][2]["correction_l1"] > 1e-4
    y_tilde, y_hat = out["meta"][3]
    torch.testing.assert_close(y_hat.sum(1), torch.ones(len(y_hat)))    # still distributions


# --------------------------------------------------------------------------- VAT

@pytest.mark.parametrize("eps", [0.5, 4.0])
def test_vat_perturbation_has_configured_norm_and_is_adversarial(eps):
    model = tiny_net().double().train()
    algo = VAT(vat_eps=eps)
    x = torch.randn(16, 1, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    model.eval()   # deterministic passes: the comparison below is about the direction only
    with torch.no_grad():
        p = F.softmax(model(x), 1)
    torch.manual_seed(0)
    r = algo.perturbation(model, x, p)
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((16,), eps, dtype=torch.float64))
    with torch.no_grad():
        kl_adv = kl_div(p, model(x + r))
        rand = torch.randn_like(x)
        rand = eps * rand / rand.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        kl_rand = kl_div(p, model(x + rand))
    assert kl_adv > kl_rand   # one power iteration already finds a much worse direction than chance


def test_vat_leaves_bn_statistics_to_the_labeled_pass():
    model, ref = tiny_net().train(), tiny_net().train()
    algo = VAT(vat_entmin=True)
    batch = tiny_batch(algo)
    _, metrics = algo.step(model, batch, ctx())
    with torch.no_grad():
        ref(batch.x_lb)
    torch.testing.assert_close(model[1].running_mean, ref[1].running_mean)
    assert "loss_ent" in metrics
    with frozen_bn_stats(model):
        model(batch.x_lb)
    torch.testing.assert_close(model[1].running_mean, ref[1].running_mean)
    assert model[1].track_running_stats


# --------------------------------------------------------------------------- MixMatch

def test_sharpen_and_label_guessing_hand_computed():
    torch.testing.assert_close(sharpen(torch.tensor([[0.7, 0.3]]), 0.5),
                               torch.tensor([[0.49 / 0.58, 0.09 / 0.58]]))
    # K = 2 views: mean [0.7, 0.2, 0.1], squared [0.49, 0.04, 0.01] / 0.54
    q = guess_labels([torch.tensor([[0.8, 0.1, 0.1]]), torch.tensor([[0.6, 0.3, 0.1]])], 0.5)
    torch.testing.assert_close(q, torch.tensor([[0.49 / 0.54, 0.04 / 0.54, 0.01 / 0.54]]))
    # T = 1 is the plain average; T -> 0 approaches one-hot
    p = [torch.tensor([[0.5, 0.3, 0.2]]), torch.tensor([[0.3, 0.5, 0.2]])]
    torch.testing.assert_close(guess_labels(p, 1.0), torch.tensor([[0.4, 0.4, 0.2]]))
    assert guess_labels([torch.tensor([[0.6, 0.4]])], 0.01)[0, 0] > 0.999


def test_mixmatch_step_guesses_from_the_k_views():
    """Through the step: the guessed labels are sharpen(mean of the K views' softmaxes)."""
    algo = MixMatch(mixmatch_k=2, mixmatch_t=0.5)
    v1, v2 = logits_with_confidence([0.8, 0.6]), logits_with_confidence([0.6, 0.3])
    batch = Batch(torch.randn(2, C, 1, 1), torch.tensor([0, 1]), [v1, v2])
    algo.step(identity_net().train(), batch, ctx())
    expected = guess_labels([F.softmax(v1.flatten(1), 1), F.softmax(v2.flatten(1), 1)], 0.5)
    torch.testing.assert_close(algo.last_pseudo_labels[0], expected)


# --------------------------------------------------------------------------- every algorithm through the trainer

def tiny_data(n: int = 96, classes: int = C, size: int = 8, seed: int = 0) -> ImageData:
    """Synthetic uint8 images whose class sets a bright quadrant: learnable, tiny."""
    rng = np.random.default_rng(seed)

    def make(m: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(m) % classes
        x = rng.integers(0, 60, (m, size, size, 1))
        h = size // 2
        for i, c in enumerate(y):
            x[i, (c // 2) * h:(c // 2 + 1) * h, (c % 2) * h:(c % 2 + 1) * h] += 150
        return x.astype(np.uint8), y.astype(np.int64)

    xtr, ytr = make(n)
    xte, yte = make(n // 4)
    return ImageData(xtr, ytr, xte, yte, [str(i) for i in range(classes)], flip=True, name="tiny")


def tiny_config(name: str, **overrides) -> Config:
    values = dict(dataset="tiny", algorithm=name, model="cnn", num_labels=16, batch_size=8, iterations=3,
                  warmup=1, consistency_rampup=2, eval_every=3, log_every=1, checkpoint_every=3, device="cpu",
                  eval_batch_size=64)
    return dataclasses.replace(Config(), **{**values, **overrides}).resolved()


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_trains_three_iterations(name, tmp_path):
    res = train(tiny_config(name), tmp_path / name, data=tiny_data(), quiet=True)
    assert res["iterations"] == 3 and np.isfinite(res["test_error"])
    expected_labels = 96 if name == "fully-supervised" else 16
    assert res["num_labels"] == expected_labels
    records = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records if r["kind"] == "train"] == [1, 2, 3]
