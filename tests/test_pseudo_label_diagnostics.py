"""The unlabeled images' true labels are diagnostics only: they never reach a loss.

Benchmarks know the labels of the "unlabeled" images, and the trainer passes them along (Batch.y_ulb)
to log pseudo-label quality (pl_acc_plain, pl_acc_corrected, pl_ece_*, pl_changed*). Proof that no
algorithm trains on them: with a fixed split, training ends with bit-identical weights whether those
labels are the true ones, all wrong, or unknown (-1).
"""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from metassl import checkpoint
from metassl.algorithms import ALGORITHMS, build_algorithm
from metassl.algorithms.metamixup import MetaSSL
from metassl.config import Config, build_config
from metassl.data import Split
from metassl.train import train
from tests.conftest import make_tiny_data

K = 4
SPLIT = Split(labeled=np.arange(0, 16), unlabeled=np.arange(16, 64), val=np.zeros(0, np.int64))
SEMI_SUPERVISED = sorted(n for n in ALGORITHMS if build_algorithm(Config(algorithm=n).resolved()).uses_unlabeled
                         and not getattr(build_algorithm(Config(algorithm=n).resolved()), "all_labels", False))


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


def run(tmp_path, monkeypatch, algorithm, unlabeled_labels):
    """Train 6 iterations with the fixed SPLIT; the unlabeled images carry `unlabeled_labels`."""
    monkeypatch.setattr("metassl.train.labeled_split", lambda *args, **kwargs: SPLIT)
    data = make_tiny_data(n_train=64, n_test=8, size=8, classes=K)
    y_true = data.y_train.copy()
    data.y_train[SPLIT.unlabeled] = {"true": y_true, "wrong": (y_true + 1) % K,
                                     "unknown": np.full_like(y_true, -1)}[unlabeled_labels][SPLIT.unlabeled]
    cfg = build_config(None, None, [f"algorithm={algorithm}", "device=cpu", "model=cnn", "iterations=6",
                                    "batch_size=8", "log_every=2", "eval_every=6", "checkpoint_every=6", "warmup=1",
                                    "consistency_rampup=2", "translate=1", "num_labels=16"])
    run_dir = tmp_path / f"{algorithm}-{unlabeled_labels}"
    train(cfg, run_dir, data=data, quiet=True)
    records = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return checkpoint.load(run_dir)["model"], [r for r in records if r["kind"] == "train"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("algorithm", SEMI_SUPERVISED)
def test_training_is_bit_identical_whatever_the_unlabeled_labels(tmp_path, monkeypatch, algorithm):
    w_true, _ = run(tmp_path, monkeypatch, algorithm, "true")
    w_wrong, _ = run(tmp_path, monkeypatch, algorithm, "wrong")
    assert_same_weights(w_true, w_wrong)


def test_pseudo_label_quality_is_logged_when_labels_are_known_and_only_then(tmp_path, monkeypatch):
    w_true, rec_true = run(tmp_path, monkeypatch, "metamixup", "true")
    w_wrong, rec_wrong = run(tmp_path, monkeypatch, "metamixup", "wrong")
    w_unknown, rec_unknown = run(tmp_path, monkeypatch, "metamixup", "unknown")
    assert_same_weights(w_true, w_unknown)
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


def test_the_check_catches_a_loss_on_the_unlabeled_labels(tmp_path, monkeypatch):
    step = MetaSSL.step

    def leaky_step(self, model, batch, ctx):                            # a 1e-3-weighted label leak
        loss, metrics = step(self, model, batch, ctx)
        return loss + 1e-3 * F.cross_entropy(model(batch.x_ulb[0]), batch.y_ulb), metrics

    monkeypatch.setattr(MetaSSL, "step", leaky_step)
    w_true, _ = run(tmp_path, monkeypatch, "metamixup", "true")
    w_wrong, _ = run(tmp_path, monkeypatch, "metamixup", "wrong")
    with pytest.raises(AssertionError):
        assert_same_weights(w_true, w_wrong)
