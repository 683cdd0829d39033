"""The layering the code relies on: data and config load without the algorithms, algorithms declare their
facts on the class, a step returns everything the trainer reads, evaluation leaves the model's mode alone,
and every evaluation record says how much training it took."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from metassl.algorithms import ALGORITHMS, StepOutput, build_algorithm
from metassl.config import Config
from metassl.errors import UserError
from tests.conftest import make_tiny_data, tiny_batch, tiny_context, tiny_net


def loaded_modules(statement: str) -> set[str]:
    """The metassl modules a fresh interpreter has loaded after `statement`."""
    code = f"import sys; {statement}; print(' '.join(m for m in sys.modules if m.startswith('metassl')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_data_imports_nothing_from_algorithms():
    mods = loaded_modules("import metassl.data, metassl.data.resident, metassl.data.augment")
    assert "metassl.data.resident" in mods
    assert not [m for m in mods if m.startswith("metassl.algorithms")], mods


def test_config_imports_neither_algorithms_nor_models():
    mods = loaded_modules("import metassl.config; metassl.config.build_config('fmnist-1000', None, ['seed=1'])")
    assert "metassl.config" in mods
    assert not [m for m in mods if m.startswith(("metassl.algorithms", "metassl.models"))], mods


def test_meta_gradient_names_the_module():
    import metassl.algorithms.meta_gradient as mg
    assert type(mg).__name__ == "module" and callable(mg.meta_gradient)
    import metassl
    assert metassl.meta_gradient is mg.meta_gradient      # the top-level convenience export is the function


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_facts_are_on_the_class_and_match_the_instance(name):
    cls = ALGORITHMS[name]
    algo = build_algorithm(dataclasses.replace(Config(), algorithm=name))
    for fact in ("views", "uses_unlabeled", "all_labels", "mixup"):
        assert getattr(algo, fact) == getattr(cls, fact), fact
    assert cls.mixup == (name in ("mixup", "metamixup"))
    assert cls.all_labels == (name == "fully-supervised")


def test_names_and_batches_are_checked_where_the_algorithm_is_built():
    with pytest.raises(UserError, match="algorithm='nope' is unknown; choose one of: .*metamixup"):
        build_algorithm(dataclasses.replace(Config(), algorithm="nope"))
    with pytest.raises(UserError, match="unlabeled_batch_size=32 must equal batch_size=64"):
        build_algorithm(dataclasses.replace(Config(), algorithm="metamixup", unlabeled_batch_size=32))
    build_algorithm(dataclasses.replace(Config(), algorithm="fixmatch", unlabeled_batch_size=32))   # no mixup


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_step_returns_loss_metrics_and_pseudo_labels(name):
    algo, model = build_algorithm(dataclasses.replace(Config(), algorithm=name)), tiny_net().train()
    batch = tiny_batch(algo)
    out = algo.step(model, batch, tiny_context())
    assert isinstance(out, StepOutput) and out.loss.requires_grad and out.loss.dim() == 0
    assert all(v.dim() == 0 and not v.requires_grad for v in out.metrics.values())
    assert not hasattr(algo, "last_pseudo_labels")
    if name in ("supervised", "fully-supervised", "vat"):
        assert out.pseudo_labels is None
    else:
        plain, final = out.pseudo_labels
        assert plain.shape == final.shape == (len(batch.x_ulb[0]), 4)


@pytest.mark.parametrize("start_in_train", [True, False])
def test_evaluation_restores_the_models_mode(start_in_train):
    from metassl.evaluate import penultimate, predict_logits
    from metassl.models import build_model

    model = build_model("cnn", 4, 1, 12).train(start_in_train)
    model.features_dropout = nn.Dropout(0.5).train(not start_in_train)     # a submodule in the other mode
    x = torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8)
    mean, std = torch.tensor([0.5]), torch.tensor([0.25])
    f = penultimate(model, x, mean, std, batch_size=2)
    logits = predict_logits(model, x, mean, std, batch_size=2)
    assert f.shape[0] == logits.shape[0] == 5 and logits.shape[1] == 4
    assert model.training == start_in_train and model.features_dropout.training == (not start_in_train)
    model.eval()
    torch.testing.assert_close(logits, model(((x.float() / 255) - 0.5) / 0.25).float())   # eval-mode logits


def test_eval_records_carry_training_seconds_and_images_seen(tmp_path):
    from metassl.train import train

    torch.set_num_threads(1)
    cfg = dataclasses.replace(Config(), dataset="tiny", algorithm="metamixup", model="cnn", num_labels=16,
                              batch_size=8, iterations=4, warmup=1, consistency_rampup=2, eval_every=2, log_every=2,
                              checkpoint_every=2, device="cpu", eval_batch_size=64).resolved()
    res = train(cfg, tmp_path / "run", data=make_tiny_data(n_train=96, n_test=24, size=8), quiet=True)
    evals = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert [r["iteration"] for r in evals] == [2, 4]
    assert [r["images_seen"] for r in evals] == [2 * 16, 4 * 16]          # 8 labeled + 8 unlabeled per iteration
    assert 0 < evals[0]["train_seconds"] <= evals[1]["train_seconds"] <= res["wall_seconds"]
    from metassl import checkpoint
    assert checkpoint.load(tmp_path / "run")["history"] == evals
