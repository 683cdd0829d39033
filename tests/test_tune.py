"""`metassl tune` on tiny data: successive halving keeps the trials with the lowest validation error and
never looks at the test error, a re-run resumes, the choice file records the budget, and `bench --tuned`
applies it."""
from __future__ import annotations

import json

import pytest

from metassl import train as train_module
from metassl.experiments import suites
from metassl.algorithms import build_algorithm
from metassl.experiments.bench import run_bench
from metassl.cli import main
from metassl.errors import UserError
from metassl.experiments.tune import SPACES, bench_values, load_tuned, points, resolve, rungs, run_tune, space_of
from tests.conftest import make_tiny_data

TINY = dict(num_labels=16, batch_size=8, device="cpu", eval_batch_size=64, log_every=2)
pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


def tiny_data():
    return make_tiny_data(n_train=96, n_test=24, size=8)


@pytest.fixture
def rigged(monkeypatch):
    """Evaluations report val error = 100 x lr and test error = 100 - 100 x lr: validation prefers the
    smallest lr, the test set the largest; every split evaluated is recorded."""
    seen = []

    def error_on(run, split):
        seen.append(split)
        return 100 * run.cfg.lr if split == "val" else 100 - 100 * run.cfg.lr

    monkeypatch.setattr(train_module, "error_on", error_on)
    return seen


def tune_tiny(tmp_path, logs=None, **kw):
    return run_tune("fmnist-1000", "fixmatch", trials=4, eta=2, iterations=4, num_val=8, out=tmp_path / "runs",
                    tuned_dir=tmp_path / "tuned", overrides=TINY, data=tiny_data(),
                    log=(logs.append if logs is not None else lambda s: None), **kw)


def test_rungs_halve_the_trials_and_double_the_iterations():
    assert rungs(8, 2, 400) == [(8, 100), (4, 200), (2, 400)]
    assert rungs(4, 2, 4) == [(4, 2), (2, 4)]
    assert rungs(9, 3, 90) == [(9, 30), (3, 90)]
    assert rungs(1, 2, 400) == [(1, 400)]


def test_tune_picks_the_lowest_validation_error_never_the_test_error(tmp_path, rigged):
    res = tune_tiny(tmp_path)
    lrs = {r["trial"]: r["values"]["lr"] for r in res["trials"] if r["rung"] == 0}
    assert len(lrs) == 4 and len(set(lrs.values())) == 4
    best_on_val, best_on_test = min(lrs, key=lrs.get), max(lrs, key=lrs.get)
    assert res["chosen_trial"] == best_on_val != best_on_test
    # successive halving: the two lowest validation errors of rung 0 go on to rung 1 at twice the length
    assert sorted(r["trial"] for r in res["trials"] if r["rung"] == 1) == sorted(sorted(lrs, key=lrs.get)[:2])
    assert {r["iterations"] for r in res["trials"]} == {2, 4}
    assert res["val_error"] == pytest.approx(100 * lrs[best_on_val])
    # the file: budget, every trial's validation error, the chosen values (ramp in iterations and as a fraction)
    entry = load_tuned("fmnist-1000", "fixmatch", tmp_path / "tuned")
    assert entry["budget"]["rungs"] == [[4, 2], [2, 4]] and entry["budget"]["iterations_total"] == 16
    assert entry["budget"]["num_val"] == 8 and len(entry["trials"]) == 6
    assert set(entry["values"]) == set(SPACES["fixmatch"]) and entry["values"]["lr"] == lrs[best_on_val]
    assert entry["fractions"]["consistency_rampup"] == points("fixmatch", "fmnist-1000", 4, 0,
                                                             suites.run_config("fmnist-1000", "fixmatch", 0, TINY)
                                                             )[best_on_val]["consistency_rampup"]
    assert "test" not in json.dumps(entry["trials"]) and "test_error" not in json.dumps(entry)
    # every trial was scored on its own validation split, held out of the training set
    for d in (tmp_path / "runs").iterdir():
        cfg = json.loads((d / "config.json").read_text())
        split = json.loads((d / "split.json").read_text())
        assert cfg["num_val"] == 8 and len(split["val"]) == 8
        assert not set(split["val"]) & (set(split["labeled"]) | set(split["unlabeled"]))
    assert "val" in rigged


def test_trial_zero_is_the_entry_defaults_and_every_space_builds():
    base = suites.run_config("fmnist-1000", "fixmatch", 0, {})
    p0 = points("fixmatch", "fmnist-1000", 3, 0, base)[0]
    assert p0["lr"] == base.lr and p0["fixmatch_weight"] == 1.0 and p0["consistency_rampup"] == pytest.approx(0.1)
    assert points("fixmatch", "fmnist-1000", 3, 0, base) == points("fixmatch", "fmnist-1000", 3, 0, base)
    for name in suites.DEFAULT_ALGORITHMS + ["mpl", *suites.ENTRIES]:   # the meta variants too
        base = suites.run_config("fmnist-100", name, 1, {})
        for p in points(name, "fmnist-100", 4, 1, base):
            cfg = suites.run_config("fmnist-100", name, 1, resolve(p, space_of(name, base), 400))
            build_algorithm(cfg)


def test_a_bench_variant_searches_its_algorithms_space_with_its_option_on():
    norm = space_of("metamixup-norm", suites.run_config("fmnist-100", "metamixup-norm", 0, {}))
    assert "meta_rho" in norm and "beta" not in norm and "consistency_weight" in norm
    plain = space_of("metamixup", suites.run_config("fmnist-100", "metamixup", 0, {}))
    assert "beta" in plain and "meta_rho" not in plain


def test_tune_resumes_skips_finished_trials_and_refuses_fixed_keys(tmp_path, rigged):
    first = tune_tiny(tmp_path)
    (tmp_path / "runs" / "r1-t{}".format(first["chosen_trial"]) / "results.json").unlink()   # as if interrupted
    logs: list[str] = []
    again = tune_tiny(tmp_path, logs)
    trial_logs = [l for l in logs if "trial" in l and "chose" not in l]
    assert len(trial_logs) == 6 and sum("skipped" in l for l in trial_logs) == 5
    assert sum("resumed" in l for l in trial_logs) == 1
    assert {k: v for k, v in again.items() if k != "date"} == {k: v for k, v in first.items() if k != "date"}
    with pytest.raises(UserError, match="lr is set by the search"):
        run_tune("fmnist-1000", "fixmatch", overrides={"lr": 0.1}, tuned_dir=tmp_path / "t", out=tmp_path / "o")
    with pytest.raises(UserError, match="no search space"):
        run_tune("fmnist-1000", "nope", tuned_dir=tmp_path / "t", out=tmp_path / "o")


def test_bench_tuned_applies_the_file_and_states_the_budget(tmp_path, rigged):
    tune_tiny(tmp_path)
    entry = load_tuned("fmnist-1000", "fixmatch", tmp_path / "tuned")
    run_bench("fmnist-1000", seeds=[0], algorithms=["fixmatch"], out=tmp_path / "bench",
              overrides={**TINY, "iterations": 8, "eval_every": 4, "checkpoint_every": 4, "warmup": 1},
              data=tiny_data(), log=lambda s: None, tuned_dir=tmp_path / "tuned")
    cfg = json.loads((tmp_path / "bench" / "fixmatch-s0" / "config.json").read_text())
    for k, v in entry["values"].items():
        if k != "consistency_rampup":
            assert cfg[k] == v, k
    assert cfg["consistency_rampup"] == round(entry["fractions"]["consistency_rampup"] * 8)   # rescaled to the run
    assert cfg["num_val"] == 0                                           # the bench trains on the whole training set
    assert bench_values(entry, 8) == {k: cfg[k] for k in entry["values"]}
    md = (tmp_path / "bench" / "summary.md").read_text()
    assert "## Tuning" in md and "4 x 2, 2 x 4" in md and f"`lr={entry['values']['lr']}`" in md and "--tuned" in md
    with pytest.raises(UserError, match="no tuned settings for supervised"):
        run_bench("fmnist-1000", seeds=[0], algorithms=["supervised"], out=tmp_path / "b2", overrides=TINY,
                  data=tiny_data(), tuned_dir=tmp_path / "tuned")


def test_cli_tune_and_bench_tuned_reject_bad_input(tmp_path, capsys):
    assert main(["tune", "fmnist-1000", "--algorithm", "fixmatch", "lr=0.1", "--tuned-dir", str(tmp_path)]) == 2
    assert "lr is set by the search" in capsys.readouterr().err
    assert main(["tune", "nope", "--algorithm", "fixmatch"]) == 2
    assert main(["bench", "fmnist-1000", "--algorithms", "fixmatch", "--tuned-dir", str(tmp_path)]) == 2
    assert "no tuned settings for fixmatch" in capsys.readouterr().err


def test_every_committed_tuned_file_loads_and_builds_its_entry():
    from metassl.experiments.tune import TUNED_DIR

    files = sorted(TUNED_DIR.glob("*/*.yaml"))
    assert files, "no committed tuned settings"
    for path in files:
        suite, name = path.parent.name, path.stem
        entry = load_tuned(suite, name)
        assert entry["budget"]["num_val"] > 0 and entry["chosen_trial"] in {t["trial"] for t in entry["trials"]}
        cfg = suites.run_config(suite, name, 0, tuned=bench_values(entry, suites.FULL["iterations"]))
        build_algorithm(cfg)
