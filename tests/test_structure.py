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
    mods = loaded_modules("import metassl.config; metassl.config.merge_config('fmnist-1000', None, ['seed=1'])")
    assert "metassl.config" in mods
    assert not [m for m in mods if m.startswith(("metassl.algorithms", "metassl.models"))], mods


def test_meta_gradient_names_the_module():
    import metassl.algorithms.meta_gradient as mg
    assert type(mg).__name__ == "module" and callable(mg.meta_gradient)
    import metassl
    assert metassl.meta_gradient is mg.meta_gradient      # the top-level convenience export is the function


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_each_declared_unlabeled_view_is_read_by_the_step(name):
    """`views` is what the trainer draws: a step must read every view it declares (changing one changes the
    loss), and an algorithm without unlabeled data must step on a batch that has none."""
    import copy

    open_gates = {k: 0.0 for k in ALGORITHMS[name].keys if k in ("pseudolabel_threshold", "fixmatch_threshold",
                  "flexmatch_threshold", "mpl_uda_threshold", "bank_threshold")}   # an untrained net passes none
    algo = build_algorithm(dataclasses.replace(Config(), algorithm=name, **open_gates))
    model = tiny_net().train()
    batch = tiny_batch(algo)

    def loss(b) -> torch.Tensor:
        torch.manual_seed(0)                                    # the same mixup / dropout draws each time
        return algo.step(copy.deepcopy(model), b, tiny_context()).loss.detach()

    if not algo.uses_unlabeled:
        assert torch.isfinite(loss(dataclasses.replace(batch, x_ulb=[])))
        return
    base = loss(batch)
    for i in range(len(algo.views)):
        views = list(batch.x_ulb)
        views[i] = torch.rand_like(views[i])
        assert not torch.equal(loss(dataclasses.replace(batch, x_ulb=views)), base), (name, algo.views[i])


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
    if name in ("supervised", "fully-supervised", "vat"):
        assert out.pseudo_labels is None
    else:
        plain, final = out.pseudo_labels
        assert plain.shape == final.shape == (len(batch.x_ulb[0]), 4)


@pytest.mark.parametrize("start_in_train", [True, False])
def test_evaluation_restores_the_models_mode(start_in_train):
    from metassl.inference.evaluate import penultimate, predict_logits
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
                              batch_size=8, iterations=4, warmup=1, consistency_rampup=2, labeled_warmup=0, eval_every=2,
                              log_every=2, checkpoint_every=2, device="cpu", eval_batch_size=64).resolved()
    res = train(cfg, tmp_path / "run", data=make_tiny_data(n_train=96, n_test=24, size=8), quiet=True)
    evals = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in evals if r["kind"] == "eval"]
    assert [r["iteration"] for r in evals] == [2, 4]
    assert [r["images_seen"] for r in evals] == [2 * 16, 4 * 16]          # 8 labeled + 8 unlabeled per iteration
    assert 0 < evals[0]["train_seconds"] <= evals[1]["train_seconds"] <= res["wall_seconds"]
    from metassl.run import checkpoint
    assert checkpoint.load(tmp_path / "run")["history"] == evals


def import_graph() -> dict[str, set[str]]:
    """metassl module -> the metassl modules it imports, function-level (lazy) imports included."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "src"
    files = {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p
             for p in (root / "metassl").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        edges = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in files}
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit(".", node.level - 1)[0] if node.level else ""
                target = ".".join(x for x in (base, node.module) if x)
                for a in node.names:
                    sub = f"{target}.{a.name}"
                    edges.add(sub if sub in files else target)
        edges &= set(files)
        edges.discard(mod)
    return graph


def test_the_import_graph_of_src_has_no_circle():
    graph = import_graph()
    assert "metassl.experiments.tune" in graph["metassl.experiments.bench"]   # the graph sees real edges
    state: dict[str, int] = {}                                            # 1: on the path, 2: done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for nxt in sorted(graph[mod]):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(path[path.index(nxt):] + [mod, nxt]) \
                if nxt in path else f"import circle through {mod} -> {nxt}"
            if nxt not in state:
                visit(nxt, path + [mod])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [])


def test_the_library_core_imports_no_experiment_or_diagnostic_tool():
    graph = import_graph()
    core = [m for m in graph if not m.startswith(("metassl.experiments", "metassl.diagnostics", "metassl.cli",
                                                  "metassl.__main__"))]
    for mod in core:
        assert not [t for t in graph[mod] if t.startswith(("metassl.experiments", "metassl.diagnostics"))], mod


def test_run_and_inference_import_no_layer_above_them():
    """run/ (a run's directory, checkpoints, logs, safety, torchrun, budget) sits under everything that trains or
    reads runs; inference/ (using a trained model) reads runs through run/, models/ and data/ alone."""
    graph = import_graph()
    tools = ("metassl.train", "metassl.cli", "metassl.experiments", "metassl.estimator", "metassl.diagnostics")
    above = {"metassl.run": ("metassl.inference", *tools), "metassl.inference": tools}
    for layer, higher in above.items():
        for mod in [m for m in graph if m == layer or m.startswith(layer + ".")]:
            bad = [t for t in graph[mod] if any(t == h or t.startswith(h + ".") for h in higher)]
            assert not bad, f"{mod} imports {bad}"
