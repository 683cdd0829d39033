"""The trainer: real Fashion-MNIST learning, exact resume, run-directory outputs, schedules."""
import json
import os
from pathlib import Path

import pytest
import torch

from metassl.run import checkpoint
from metassl.algorithms import build_config
from metassl.data.sources import DEBIAN_FASHION_MNIST
from metassl.schedule import consistency_weight_at, lr_at, meta_step_size_at
from metassl.train import train
from tests.conftest import train_killed_after

TINY = ["device=cpu", "batch_size=16", "iterations=12", "eval_every=4", "checkpoint_every=4", "log_every=2",
        "warmup=2", "consistency_rampup=4", "num_labels=40", "translate=1", "lr=0.05"]


def test_schedules_follow_warmup_cosine_step_and_beta_modes():
    cfg = build_config(None, None, ["lr=0.1", "warmup=10", "iterations=110"])
    assert lr_at(0, cfg) == pytest.approx(0.01) and lr_at(9, cfg) == pytest.approx(0.1)
    assert lr_at(60, cfg) == pytest.approx(0.05) and lr_at(110, cfg) == pytest.approx(0.0, abs=1e-12)
    step = build_config(None, None, ["lr=0.1", "warmup=0", "lr_schedule=step", "lr_steps=5,8"])
    assert [round(lr_at(i, step), 6) for i in (4, 5, 8)] == [0.1, 0.01, 0.001]
    assert meta_step_size_at(60, cfg) == lr_at(60, cfg)                            # authors: beta = lr
    const = build_config(None, None, ["algorithm=metamixup", "beta_schedule=constant", "beta=0.3"])
    assert meta_step_size_at(0, const) == 0.3 and meta_step_size_at(500, const) == 0.3
    assert consistency_weight_at(0, cfg) == 0 and consistency_weight_at(10**6, cfg) == cfg.consistency_weight


def test_run_directory_holds_config_split_metrics_checkpoint_and_results(tmp_path, tiny_data):
    res = train(build_config(None, None, TINY), tmp_path / "run", data=tiny_data, quiet=True)
    run = tmp_path / "run"
    for name in ("config.json", "split.json", "metrics.jsonl", "last.pt", "results.json"):
        assert (run / name).exists(), name
    on_disk = json.loads((run / "results.json").read_text())
    assert on_disk == res
    for key in ("test_error", "test_error_median_last5", "iterations", "wall_seconds", "images_per_second"):
        assert key in res
    split = json.loads((run / "split.json").read_text())
    assert len(split["labeled"]) == 40 and not set(split["labeled"]) & set(split["unlabeled"])
    evals = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if '"eval"' in l]
    assert [e["iteration"] for e in evals] == [4, 8, 12]


def test_a_run_without_a_directory_writes_no_file_and_matches_one_trained_into_a_directory(tmp_path, tiny_data,
                                                                                            monkeypatch):
    cfg = build_config(None, None, TINY + ["algorithm=metamixup", "ema=0.9"])
    on_disk = train(cfg, tmp_path / "run", data=tiny_data, quiet=True)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    in_memory = train(cfg, None, data=tiny_data, quiet=True)
    assert list(cwd.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "run"]
    assert in_memory["test_error"] == on_disk["test_error"] and in_memory["val_error"] == on_disk["val_error"]



@pytest.mark.parametrize("algorithm, extra", [("metamixup", []), ("meta", []),
                                              ("meanteacher", ["labeled_warmup=10"])])   # resumed inside the warm-up
def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, tiny_data, monkeypatch, algorithm, extra):
    cfg = build_config(None, None, TINY + [f"algorithm={algorithm}", "ema=0.9", *extra])
    full = train(cfg, tmp_path / "full", data=tiny_data, quiet=True)

    train_killed_after(cfg, tmp_path / "cut", tiny_data, monkeypatch, checkpoints=2)   # the one at iteration 8
    resumed = train(cfg, tmp_path / "cut", data=tiny_data, quiet=True, resume=True)

    a, b = checkpoint.load(tmp_path / "full"), checkpoint.load(tmp_path / "cut")
    for key in ("model", "ema"):
        for name, t in a[key].items():
            assert torch.equal(t, b[key][name]), f"{key}.{name}"
    untimed = lambda records: [{k: v for k, v in r.items() if k != "train_seconds"} for r in records]   # a clock
    assert untimed(a["history"]) == untimed(b["history"])
    assert full["test_error"] == resumed["test_error"]
    lines = lambda d: untimed(json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines())
    assert lines(tmp_path / "full") == lines(tmp_path / "cut")


def test_labeled_warmup_runs_the_supervised_step_first_then_ramps_the_algorithm_in(tmp_path, tiny_data):
    cfg = build_config(None, None, TINY + ["algorithm=metamixup", "labeled_warmup=6"])
    assert [consistency_weight_at(i, cfg) for i in (0, 5, 6, 8, 10, 11)] == [0, 0, 0, 0.5, 1, 1]   # ramp 4 after 6
    train(cfg, tmp_path / "run", data=tiny_data, quiet=True)
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = {r["iteration"]: r for r in records if r["kind"] == "train"}
    assert all("loss_cons" not in steps[n] and "correction_l1" not in steps[n] for n in (2, 4, 6))  # supervised step
    assert all("loss_cons" in steps[n] and "correction_l1" in steps[n] for n in (8, 10, 12))        # the algorithm's
    seen = {r["iteration"]: r["images_seen"] for r in records if r["kind"] == "eval"}
    assert seen == {4: 4 * 16, 8: 8 * 16 + 2 * 16, 12: 12 * 16 + 6 * 16}      # no unlabeled batch in the warm-up


def test_existing_run_directory_is_not_overwritten(tmp_path, tiny_data):
    from metassl.errors import UserError
    cfg = build_config(None, None, TINY + ["iterations=2"])
    train(cfg, tmp_path / "run", data=tiny_data, quiet=True)
    with pytest.raises(UserError, match="resume=True"):
        train(cfg, tmp_path / "run", data=tiny_data, quiet=True)
    train(cfg, tmp_path / "run", data=tiny_data, quiet=True, force=True)


@pytest.mark.skipif(not Path(DEBIAN_FASHION_MNIST).exists() and not os.environ.get("METASSL_DATA"),
                    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
def test_short_run_on_real_fashion_mnist_learns_far_below_chance(tmp_path):
    """The default preset on the real default data: 90% error is chance; 150 iterations get well under 40%. Its
    labeled-only warm-up (800) covers all 150, so this proves the data path and the trainer, not an SSL step
    (tests/test_algorithms.py and tests/test_selftrain.py do that, with no warm-up)."""
    cfg = build_config("fmnist-1000", None, ["device=cpu", "iterations=150", "batch_size=32", "warmup=20",
                                             "consistency_rampup=50", "eval_every=150", "log_every=50"])
    res = train(cfg, tmp_path / "run", quiet=True)
    assert res["test_error"] < 40.0, res
