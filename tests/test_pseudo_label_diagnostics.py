"""The unlabeled images' true labels are diagnostics only: they never reach a loss.

Benchmarks know the labels of the "unlabeled" images, and the trainer passes them along (Batch.y_ulb)
to log pseudo-label quality (pl_acc_plain, pl_acc_corrected, pl_ece_*, pl_changed*). Proof that no
algorithm trains on them, at step level: every registered algorithm's step gives a bit-identical loss
and bit-identical gradients whether y_ulb holds the true labels, all-wrong labels, unknown (-1) or
nothing; a step with a 1e-3-weighted label term fails that check. One short training run then shows
the trainer's part: the same weights and losses whatever the labels, and the diagnostics logged only
when labels are known.
"""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metassl.run import checkpoint
from metassl.algorithms import ALGORITHMS, build_algorithm
from metassl.config import Config
from metassl.algorithms import build_config
from metassl.data import Split
from metassl.train import train
from tests.conftest import TINY_CLASSES, make_tiny_data, run_step, tiny_batch, tiny_context, tiny_net

K = 4
SPLIT = Split(labeled=np.arange(0, 16), unlabeled=np.arange(16, 64), val=np.zeros(0, np.int64))
THRESHOLDS = dict(fixmatch_threshold=0.0, pseudolabel_threshold=0.0, bank_threshold=0.0)   # every unlabeled row in the loss


def zero_thresholds(name: str) -> dict[str, float]:
    """THRESHOLDS that `name` reads (build_algorithm refuses the others)."""
    return {k: v for k, v in THRESHOLDS.items() if k in ALGORITHMS[name].keys}


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


def loss_and_grads(algo, y_ulb):
    """One step of `algo` on the fixed tiny batch whose y_ulb is replaced; its loss and parameter gradients."""
    batch = tiny_batch(algo)
    batch.y_ulb = y_ulb(batch.y_ulb)
    model = tiny_net().train()
    torch.manual_seed(123)                          # the same dropout masks, mixup draws, VAT directions
    loss, _ = run_step(algo, model, batch, tiny_context())
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()]


LABELINGS = {"wrong": lambda y: (y + 1) % TINY_CLASSES, "unknown": lambda y: torch.full_like(y, -1),
             "absent": lambda y: None}


def labels_reach_the_loss(make_algo) -> bool:
    """Whether changing y_ulb changes a bit of the step's loss or gradients."""
    loss, grads = loss_and_grads(make_algo(), lambda y: y)
    for change in LABELINGS.values():
        loss2, grads2 = loss_and_grads(make_algo(), change)
        if not torch.equal(loss, loss2) or not all(
                (a is None and b is None) or torch.equal(a, b) for a, b in zip(grads, grads2)):
            return True
    return False


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_no_algorithm_step_reads_the_unlabeled_labels(name):
    assert not labels_reach_the_loss(lambda: build_algorithm(Config(algorithm=name, **zero_thresholds(name)).resolved()))


class Leaky:
    """An algorithm plus a 1e-3-weighted cross-entropy on the unlabeled images' labels, where known."""

    def __init__(self, inner):
        self.inner, self.views = inner, inner.views

    def step(self, model, batch, ctx):
        loss, metrics = run_step(self.inner, model, batch, ctx)
        if batch.y_ulb is not None and bool((batch.y_ulb >= 0).all()):
            loss = loss + 1e-3 * F.cross_entropy(model(batch.x_ulb[0]), batch.y_ulb)
        return loss, metrics


def test_the_check_catches_a_step_with_a_tiny_loss_on_the_unlabeled_labels():
    assert labels_reach_the_loss(lambda: Leaky(build_algorithm(Config(algorithm="metamixup").resolved())))


def run(tmp_path, monkeypatch, algorithm, unlabeled_labels):
    """Train 6 iterations with the fixed SPLIT; the unlabeled images carry `unlabeled_labels`."""
    monkeypatch.setattr("metassl.train.labeled_split", lambda *args, **kwargs: SPLIT)
    data = make_tiny_data(n_train=64, n_test=8, size=8, classes=K)
    y_true = data.y_train.copy()
    data.y_train[SPLIT.unlabeled] = {"true": y_true, "wrong": (y_true + 1) % K,
                                     "unknown": np.full_like(y_true, -1)}[unlabeled_labels][SPLIT.unlabeled]
    cfg = build_config(None, None, [f"algorithm={algorithm}", "device=cpu", "model=cnn", "iterations=6",
                                    "labeled_warmup=0", "batch_size=8", "log_every=2", "eval_every=6", "checkpoint_every=6", "warmup=1",
                                    "consistency_rampup=2", "translate=1", "num_labels=16"])
    run_dir = tmp_path / f"{algorithm}-{unlabeled_labels}"
    train(cfg, run_dir, data=data, quiet=True)
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return checkpoint.load(run_dir)["model"], [r for r in records if r["kind"] == "train"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_training_ignores_the_unlabeled_labels_and_logs_their_quality_only_when_known(tmp_path, monkeypatch):
    w_true, rec_true = run(tmp_path, monkeypatch, "metamixup", "true")
    w_wrong, rec_wrong = run(tmp_path, monkeypatch, "metamixup", "wrong")
    w_unknown, rec_unknown = run(tmp_path, monkeypatch, "metamixup", "unknown")
    assert_same_weights(w_true, w_unknown)
    assert_same_weights(w_true, w_wrong)
    pl = {"pl_acc_plain", "pl_acc_corrected", "pl_ece_plain", "pl_ece_corrected", "pl_changed",
          "pl_changed_better", "pl_changed_worse"}
    assert len(rec_true) == 3 and all(pl <= set(r) for r in rec_true)
    assert all(0 <= r[k] <= 1 for r in rec_true for k in pl)
    assert all(r["pl_changed_better"] + r["pl_changed_worse"] <= r["pl_changed"] + 1e-6 for r in rec_true)
    assert not any(pl & set(r) for r in rec_unknown)
    for a, b, c in zip(rec_true, rec_wrong, rec_unknown):                # the losses are identical ...
        assert {k: v for k, v in a.items() if k not in pl} == {k: v for k, v in c.items()} == \
               {k: v for k, v in b.items() if k not in pl}
    # ... while the diagnostics saw different labels: all-wrong labels make every plain pseudo-label that
    # is right under the true labels wrong, and vice versa
    assert [r["pl_acc_plain"] for r in rec_true] != [r["pl_acc_plain"] for r in rec_wrong]
