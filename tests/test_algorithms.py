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

from metassl.algorithms import ALGORITHMS, Batch, build_algorithm
from metassl.algorithms.common import frozen_bn_stats, hard_pseudo_labels, sharpen
from metassl.algorithms.fixmatch import FixMatch
from metassl.algorithms.flexmatch import FlexMatch
from metassl.algorithms.meanteacher import MeanTeacher
from metassl.algorithms.metafixmatch import MetaFixMatch
from metassl.algorithms.metaflexmatch import MetaFlexMatch
from metassl.algorithms.mixmatch import MixMatch, guess_labels
from metassl.algorithms.vat import VAT, kl_div
from metassl.config import Config
from metassl.train import train
from tests.conftest import TINY_CLASSES, identity_net, make_tiny_data, run_step, tiny_batch, tiny_net
from tests.conftest import tiny_context as ctx

C = TINY_CLASSES   # classes of the tiny problems (conftest.tiny_net, tiny_batch)
SSL = ["pimodel", "meanteacher", "vat", "pseudolabel", "mixmatch", "fixmatch", "flexmatch", "freematch", "softmatch",
       "metafixmatch", "metaflexmatch", "neither", "meta", "mixup", "metamixup"]


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: two threads spin against other jobs


def build(name: str, **overrides) -> object:
    return build_algorithm(dataclasses.replace(Config(), algorithm=name, **overrides))


def grads(name: str, weight: float, **overrides) -> tuple[list[torch.Tensor], dict]:
    """Parameter gradients of one step's loss at consistency weight `weight` (same draws every call)."""
    model, algo = tiny_net().train(), build(name, **overrides)
    batch = tiny_batch(algo)
    torch.manual_seed(123)
    out = algo.step(model, batch, ctx(weight))
    out.loss.backward()
    return [p.grad.clone() for p in model.parameters()], out.metrics


# --------------------------------------------------------------------------- the unlabeled loss moves the student

@pytest.mark.parametrize("name", SSL)
def test_unlabeled_loss_has_gradient_wrt_student(name):
    """grad(loss at w=1) - grad(loss at w=0) is the gradient of the unlabeled term: it must not vanish
    (USB's Mean Teacher took it from the no-grad teacher pass, so its unlabeled loss gave the student
    no gradient at all)."""
    own = ALGORITHMS[name].keys                                          # zero thresholds: the mask is non-empty
    thresholds = {k: 0.0 for k in ("fixmatch_threshold", "pseudolabel_threshold", "bank_threshold") if k in own}
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
        loss = algo.step(model, tiny_batch(algo, seed=it), ctx(iteration=it)).loss
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
    model = identity_net(C)
    metrics = algo.step(model, batch, ctx()).metrics
    assert metrics["mask"].item() == pytest.approx(np.mean(expected))
    # the loss is the mean over all rows of mask * CE(strong logits, argmax weak)
    ce = F.cross_entropy(x_s.flatten(1), torch.arange(5) % C, reduction="none")
    expected_fm = (ce * torch.tensor(expected, dtype=torch.float)).mean()
    torch.testing.assert_close(metrics["loss_fm"], expected_fm)


@pytest.mark.parametrize("base, meta", [(lambda: FixMatch(0.0), lambda: MetaFixMatch(0.0, eps_scale=Config.eps_scale)),
                                        (lambda: FlexMatch(0.0), lambda: MetaFlexMatch(0.0, eps_scale=Config.eps_scale))])
def test_meta_threshold_methods_are_their_base_at_beta_zero_and_correct_otherwise(base, meta):
    """metafixmatch / metaflexmatch: the same loss and gradients as FixMatch / FlexMatch at beta = 0; y^ moves at beta > 0."""
    batch = tiny_batch(base())
    out = {}
    for name, algo, beta in (("base", base(), 0.0), ("meta0", meta(), 0.0), ("meta", meta(), 0.5)):
        model = tiny_net().train()
        torch.manual_seed(7)
        step = algo.step(model, batch, ctx(beta=beta))
        step.loss.backward()
        out[name] = (step.loss.detach(), [p.grad for p in model.parameters()], step.metrics, step.pseudo_labels)
    torch.testing.assert_close(out["meta0"][0], out["base"][0])
    for a, b in zip(out["meta0"][1], out["base"][1]):
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
    metrics = algo.step(model, batch, ctx()).metrics
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
    out = algo.step(identity_net(C).train(), batch, ctx())
    expected = guess_labels([F.softmax(v1.flatten(1), 1), F.softmax(v2.flatten(1), 1)], 0.5)
    torch.testing.assert_close(out.pseudo_labels[0], expected)


# --------------------------------------------------------------------------- every algorithm learns

@pytest.mark.parametrize("name", sorted(set(ALGORITHMS) - {"mpl"}))   # MPL's student never sees a label
def test_every_algorithm_lowers_the_labeled_loss_on_a_fixed_batch(name):
    """20 SGD steps of the algorithm's own loss on one hand-made batch fit its labeled images: the
    eval-mode cross-entropy drops below 60% of its start (measured: 8-45%), and so does the step's loss.
    Meta Pseudo Labels is left out by design: its student learns only from the teacher's pseudo-labels (the
    labeled images reach it through the teacher), so 20 steps need not fit them; tests/test_meta_variants.py
    proves its mechanism instead."""
    algo, model = build(name), tiny_net().train()
    batch = tiny_batch(algo)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def labeled_ce() -> float:
        model.eval()
        with torch.no_grad():
            value = F.cross_entropy(model(batch.x_lb), batch.y_lb).item()
        model.train()
        return value

    before, losses = labeled_ce(), []
    torch.manual_seed(0)
    for it in range(20):
        loss, _ = run_step(algo, model, batch, ctx(iteration=it + 10))
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
        algo.after_update(model)
    assert labeled_ce() < 0.6 * before
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])


# --------------------------------------------------------------------------- every algorithm through the trainer

def tiny_config(name: str, **overrides) -> Config:
    values = dict(dataset="tiny", algorithm=name, model="cnn", num_labels=16, batch_size=8, iterations=3,
                  warmup=1, consistency_rampup=2, eval_every=3, log_every=1, checkpoint_every=3, device="cpu",
                  eval_batch_size=64)
    return dataclasses.replace(Config(), **{**values, **overrides}).resolved()


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_runs_in_the_trainer_on_its_labeled_pool(name, tmp_path):
    """A smoke run (3 iterations) through `train`: the trainer feeds each algorithm the views it asks for
    without error, logs a finite loss per step, and fully-supervised alone trains on every label."""
    data = make_tiny_data(n_train=96, n_test=24, size=8, classes=C)
    res = train(tiny_config(name), tmp_path / name, data=data, quiet=True)
    split = json.loads((tmp_path / name / "split.json").read_text())
    expected_labels = 96 if name == "fully-supervised" else 16
    assert res["num_labels"] == len(split["labeled"]) == expected_labels
    records = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    train_losses = [r["loss"] for r in records if r["kind"] == "train"]
    assert len(train_losses) == 3 and np.isfinite(train_losses).all()
