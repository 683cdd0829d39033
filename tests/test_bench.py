"""The bench on a tiny synthetic data set: rows, tables, skipping finished runs, resuming, refusing to mix
protocols, and the CLI entry point."""
from __future__ import annotations

import csv
import json
import statistics

import pytest

from metassl.experiments import bench, report, suites
from metassl.experiments.bench import run_bench
from metassl.experiments.suites import run_config
from metassl.cli import main
from metassl.config import Config
from metassl.errors import UserError

from tests.conftest import make_tiny_data

TINY = dict(num_labels=16, batch_size=8, iterations=4, eval_every=2, checkpoint_every=2, warmup=1,
            consistency_rampup=2, device="cpu", eval_batch_size=64, log_every=2)


def tiny_data():
    return make_tiny_data(n_train=96, n_test=24, size=8)


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py: two threads spin against other jobs


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_bench_writes_tables_and_skips_finished_runs(tmp_path):
    logs: list[str] = []
    rows = run_bench("fmnist-1000", seeds=[0, 1], algorithms=["supervised", "metamixup"], out=tmp_path,
                     overrides=TINY, data=tiny_data(), log=logs.append)
    assert [(r["algorithm"], r["seed"]) for r in rows] == [("supervised", 0), ("metamixup", 0),
                                                          ("supervised", 1), ("metamixup", 1)]
    table = read_csv(tmp_path / "summary.csv")
    assert list(table[0]) == list(report.CSV_COLUMNS)
    assert {(r["algorithm"], r["seed"]) for r in table} == {(a, s) for a in ("supervised", "metamixup") for s in "01"}
    assert all(r["num_labels"] == "16" for r in table)
    for name in ("supervised", "metamixup"):
        for seed in (0, 1):
            res = json.loads((tmp_path / f"{name}-s{seed}" / "results.json").read_text())
            assert res["seed"] == seed and res["split_seed"] == seed and res["iterations"] == 4
    md = (tmp_path / "summary.md").read_text()
    assert "| Supervised (labeled images only) |" in md and "| Meta-gradient SSL (ours: `metamixup`) |" in md
    assert "| yes | yes | `metamixup` |" in md and "`neither`" not in md
    assert " ± " in md and "## Cost per run" in md and md.count("| `supervised` |") == 2
    assert all("trained" in line for line in logs)
    assert "## Curves (first seed)" in md and (tmp_path / "plots" / "test_error.png").read_bytes()[:4] == b"\x89PNG"
    # time-to-accuracy: training seconds per row, the seconds to the suite's target read off metrics.jsonl
    assert all(float(r["train_seconds"]) > 0 for r in table)
    for r in table:
        evals = [json.loads(l) for l in (tmp_path / f"{r['algorithm']}-s{r['seed']}" / "metrics.jsonl").read_text()
                 .splitlines() if '"eval"' in l]
        hit = [e["train_seconds"] for e in evals if e["test_error"] <= suites.TARGET_ERROR["fmnist-1000"]]
        assert r["seconds_to_target"] == (str(round(hit[0], 1)) if hit else "")
    assert "training s to 15 % test error" in md and "time_to_error.png" in md
    # convergence: the change over the last 20 % of the run (evaluations at 2 and 4 of 4: only 4 is in it)
    assert all(r["tail_change"] == "" for r in table) and "change over the last 20% of the run" in md

    before = (tmp_path / "supervised-s0" / "results.json").read_text()
    logs.clear()
    again = run_bench("fmnist-1000", seeds=[0, 1], algorithms=["supervised", "metamixup"], out=tmp_path,
                      overrides={**TINY, "threads": 1}, data=tiny_data(), log=logs.append)   # speed: no protocol change
    assert all("skipped" in line for line in logs) and len(logs) == 4
    assert again == rows and (tmp_path / "supervised-s0" / "results.json").read_text() == before


def test_tail_change_is_the_last_evaluation_minus_the_first_in_the_last_fifth(tmp_path):
    records = [{"iteration": i, "kind": "eval", "test_error": e, "test_error_raw": e + 1}
               for i, e in ((50, 40.0), (80, 30.0), (90, 25.0), (100, 26.5))] + [{"iteration": 100, "kind": "train"}]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    assert bench.tail_change(tmp_path, 100) == -3.5                     # 26.5 at 100 minus 30.0 at 80: still improving
    assert bench.tail_change(tmp_path, 100, "test_error_raw") == -3.5
    assert bench.tail_change(tmp_path, 1000) == "" and bench.tail_change(tmp_path / "none", 100) == ""


def test_bench_resumes_an_interrupted_run_and_refuses_another_protocol(tmp_path):
    data = tiny_data()
    run_bench("fmnist-1000", seeds=[0], algorithms=["meanteacher"], out=tmp_path, overrides=TINY, data=data,
              log=lambda s: None)
    (tmp_path / "meanteacher-s0" / "results.json").unlink()          # as if stopped after the last checkpoint
    logs: list[str] = []
    rows = run_bench("fmnist-1000", seeds=[0], algorithms=["meanteacher"], out=tmp_path, overrides=TINY, data=data,
                     log=logs.append)
    assert "resumed" in logs[0] and (tmp_path / "meanteacher-s0" / "results.json").exists() and len(rows) == 1
    with pytest.raises(UserError, match="iterations=4"):
        run_bench("fmnist-1000", seeds=[0], algorithms=["meanteacher"], out=tmp_path,
                  overrides={**TINY, "iterations": 6}, data=data)


def test_run_config_protocol_is_shared_and_variants_set_their_option():
    a, b = run_config("fmnist-100", "fixmatch", 3, {}), run_config("fmnist-100", "vat-ent", 3, {})
    assert (a.num_labels, a.seed, a.split_seed, a.model) == (100, 3, 3, "cnn")
    assert b.algorithm == "vat" and b.vat_entmin and not a.vat_entmin
    shared = ("iterations", "batch_size", "unlabeled_batch_size", "lr", "momentum", "weight_decay", "warmup",
              "lr_schedule", "consistency_rampup", "eval_every", "model", "dataset")
    assert all(getattr(a, k) == getattr(b, k) for k in shared)
    assert run_config("fmnist-1000", "supervised", 0, quick=True, overrides={}).iterations < a.iterations
    with pytest.raises(UserError, match="unknown suite"):
        run_bench("cifar-7", data=tiny_data())
    with pytest.raises(UserError, match="unknown algorithm 'nope'"):
        run_bench("fmnist-1000", algorithms=["nope"], data=tiny_data())


def test_cli_bench(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench, "load_dataset", lambda *a, **k: tiny_data())
    args = ["bench", "fmnist-100", *[f"{k}={v}" for k, v in TINY.items()], "--quick",
            "--algorithms", "supervised,vat-ent", "--out", str(tmp_path)]
    assert main(args) == 0
    assert "2 runs" in capsys.readouterr().out
    assert [r["algorithm"] for r in read_csv(tmp_path / "summary.csv")] == ["supervised", "vat-ent"]
    assert main(["bench", "fmnist-100", "--seeds", "a,b"]) == 2
    assert "--seeds" in capsys.readouterr().err


def test_bench_processes_sharing_a_directory_then_one_run_over_all_only_writes_tables(tmp_path):
    # results/commands/bench_parallel.sh: disjoint (entries, seed) groups into one --out, then one bench over everything
    data = tiny_data()
    run_bench("fmnist-1000", seeds=[0], algorithms=["supervised"], out=tmp_path, overrides=TINY, data=data,
              log=lambda s: None)
    run_bench("fmnist-1000", seeds=[0], algorithms=["metamixup"], out=tmp_path, overrides=TINY, data=data,
              log=lambda s: None)
    logs: list[str] = []
    rows = run_bench("fmnist-1000", seeds=[0], algorithms=["supervised", "metamixup"], out=tmp_path, overrides=TINY,
                     data=data, log=logs.append)
    assert len(rows) == 2 and all("skipped (finished)" in line for line in logs[:2])
    assert {r["algorithm"] for r in read_csv(tmp_path / "summary.csv")} == {"supervised", "metamixup"}
    md = (tmp_path / "summary.md").read_text()
    assert "--algorithms supervised,metamixup" in md          # the printed command re-runs this subset
    assert not list(tmp_path.glob("*.tmp"))


def test_atomic_writes_from_many_threads_never_share_a_temporary(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from metassl.run.files import atomic_write_text

    target = tmp_path / "summary.csv"
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda i: atomic_write_text(target, f"writer {i}\n" * 1000), range(64)))
    text = target.read_text()
    assert len(set(text.splitlines())) == 1 and len(text.splitlines()) == 1000   # one whole write, not a mix
    assert not list(tmp_path.glob("*.tmp"))


def test_an_ema_run_reports_its_raw_weights_beside_and_raw_weights_swaps_them_into_the_tables(tmp_path):
    # one set of runs decides on validation whether EMA evaluation pays: both sets of weights are evaluated
    rows = run_bench("fmnist-1000", seeds=[0], algorithms=["supervised"], out=tmp_path, data=tiny_data(),
                     overrides={**TINY, "ema": 0.5, "num_val": 16})
    evals = [json.loads(l) for l in (tmp_path / "supervised-s0" / "metrics.jsonl").read_text().splitlines()
             if '"eval"' in l]
    assert all({"test_error_raw", "val_error_raw", "val_error"} <= set(e) for e in evals)
    res = json.loads((tmp_path / "supervised-s0" / "results.json").read_text())
    assert rows[0]["test_error_ema"] == round(res["test_error"], 4) and rows[0]["test_error_raw"] == round(res["test_error_raw"], 4)
    raw = run_bench("fmnist-1000", seeds=[0], algorithms=["supervised"], out=tmp_path, data=tiny_data(),
                    overrides={**TINY, "ema": 0.5, "num_val": 16}, raw_weights=True)[0]
    assert raw["test_error"] == round(res["test_error_raw"], 4) and raw["val_error"] == round(res["val_error_raw"], 4)
    assert raw["test_error_ema"] == round(res["test_error"], 4)
    assert raw["test_error_median_last5"] == round(statistics.median(e["test_error_raw"] for e in evals), 4)
    assert "raw weights (an EMA of decay 0.5 evaluated beside them" in (tmp_path / "summary.md").read_text()
    with pytest.raises(UserError, match="evaluated no EMA"):    # a run without an EMA has nothing to swap
        run_bench("fmnist-1000", seeds=[0], algorithms=["supervised"], out=tmp_path / "plain", data=tiny_data(),
                  overrides=TINY, raw_weights=True)


def test_twins_table_pairs_each_meta_entry_with_its_twin_by_seed():
    rows = [dict(algorithm=a, seed=s, test_error=e, changed_better=b, changed_worse=w) for a, s, e, b, w in
            [("mixup", 0, 20.0, "", ""), ("metamixup", 0, 19.0, 6.0, 2.0), ("mixup", 1, 21.0, "", ""),
             ("metamixup", 1, 21.5, 4.0, 3.0), ("metamixup", 2, 9.0, 5.0, 2.5)]]
    table = report.twins_table(rows)
    assert "| `metamixup` | `mixup` | 2 | 20.25 ± 1.77 | 20.50 ± 0.71 | -0.25 ± 1.06 | 1/2 | 5.0 / 2.5 (2.00) |" in table
    assert "`meta`" not in table and report.twins_table(rows[:1]) == ""


def test_summary_protocol_names_the_labeled_only_warmup_and_curves_the_entry_names(tmp_path, monkeypatch):
    import metassl.diagnostics.plot
    drawn = {}
    monkeypatch.setattr(metassl.diagnostics.plot, "plot_runs", lambda dirs, out, labels=None: drawn.update(labels=labels))
    run_bench("fmnist-1000", seeds=[0], algorithms=["fixmatch", "metafixmatch-norm"], out=tmp_path, data=tiny_data(),
              overrides={**TINY, "labeled_warmup": 2})
    assert drawn["labels"] == ["fixmatch", "metafixmatch-norm"]      # a variant's curve is named as its row
    md = (tmp_path / "summary.md").read_text()
    assert "4 iterations, the first 2 labeled-only for every algorithm (`labeled_warmup`)" in md
    assert "(32 labeled and 16 unlabeled images drawn per run;" in md
    run_bench("fmnist-1000", seeds=[0], algorithms=["fixmatch"], out=tmp_path / "plain", data=tiny_data(), overrides=TINY)
    assert "labeled-only" not in (tmp_path / "plain" / "summary.md").read_text()
    assert "## Ablation" not in md and "## Meta-gradient entries vs their twins" in md   # no empty table


def test_ablation_table_is_empty_without_an_ablation_row():
    rows = [dict(algorithm="fixmatch", seed=0, test_error=15.0, test_error_median_last5=15.0, tail_change="")]
    assert report.ablation_table(rows) == ""
    assert "| no | yes | `mixup` | 15.00 |" in report.ablation_table([{**rows[0], "algorithm": "mixup"}])


def test_comparison_table_lists_variant_entries_after_the_papers_rows():
    rows = [dict(algorithm=a, seed=0, test_error=e, test_error_median_last5=e, tail_change="")
            for a, e in [("metafixmatch-norm", 14.0), ("fixmatch", 15.0)]]
    table = report.comparison_table(rows, "fmnist-1000")
    assert table.index("| FixMatch (Sohn et al. 2020) | 15.00 |") < table.index(
        "| `metafixmatch-norm` (`metafixmatch`, meta_step=normalised) | 14.00 |")


def test_corrections_average_the_first_half_of_the_iterations_that_ran_the_correction(tmp_path):
    # labeled_warmup 40 of 100: the correction runs in 41..100, its first half is 41..70 (logged at 50, 60, 70)
    records = [{"iteration": i, "kind": "train", "pl_changed_better": i / 1000 if i > 40 else 0.9,
                "pl_changed_worse": 0.01} for i in range(10, 101, 10)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    assert bench.corrections(tmp_path, Config(iterations=100, labeled_warmup=40)) == (6.0, 1.0)
    assert bench.corrections(tmp_path, Config(iterations=100, labeled_warmup=0)) == (73.0, 1.0)  # 10..50: 4 x 90, 5
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"iteration": 10, "kind": "train", "loss": 1.0}))
    assert bench.corrections(tmp_path, Config(iterations=100)) == ("", "")          # no correction logged
    assert bench.corrections(tmp_path / "missing", Config(iterations=100)) == ("", "")
