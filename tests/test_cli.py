"""The command line: subcommands work end to end. (Bad input, one line on stderr and exit status 2:
test_bad_input.py.)"""
import json

import pytest

from metassl.cli import main
from tests.conftest import write_tiny_npz


def test_train_eval_and_resume_through_the_cli(tmp_path, capsys):
    npz = write_tiny_npz(tmp_path / "tiny.npz")
    out = tmp_path / "run"
    args = ["train", f"dataset={npz}", "device=cpu", "num_labels=40", "batch_size=16", "iterations=6",
            "eval_every=3", "checkpoint_every=3", "warmup=1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    summary = capsys.readouterr().out
    assert "test error" in summary and str(out) in summary
    assert main(["eval", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    results = json.loads((out / "results.json").read_text())
    assert ev["test_error"] == pytest.approx(results["test_error"])
    assert main(["train", "--resume", str(out), "--quiet"]) == 0   # already finished: resumes at the end
    assert main(["check", "--run", str(out), "--json", "--batch", "4"]) == 0   # the check at the trained state
    chk = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert chk["mse"]["jvp"]["cosine"] > 0.999999 and chk["mse"]["fd"]["cosine"] > 0.99


def test_presets_lists_the_default_and_the_papers(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("fmnist-1000", "svhn-1000", "cifar10-4000", "cifar100-10000", "imagenet-10pct"):
        assert name in out
    flat = " ".join(out.split())
    from metassl.presets import PRESETS
    for name, values in PRESETS.items():                 # every key a preset sets, with its value
        for key, value in values.items():
            assert f"{key}={value}" in flat, (name, key)


def test_help_keys_and_algorithms_print_whole_descriptions(capsys):
    assert main(["train", "--help-keys"]) == 0
    keys = " ".join(capsys.readouterr().out.split())
    assert "exact (second order)" in keys                # meta_method's continuation line
    assert "time_limit" in keys and "iterations or a fraction of the run" in keys
    assert main(["algorithms"]) == 0
    algos = " ".join(capsys.readouterr().out.split())
    assert "curriculum pseudo-labelling" in algos and "self-adaptive fairness term" in algos


def test_check_json_reports_agreement_for_a_backbone(capsys):
    assert main(["check", "--model", "cnn", "--json", "--batch", "4"]) == 0
    res = json.loads(capsys.readouterr().out)
    for phi in ("mse", "kl"):
        assert res[phi]["fd"]["cosine"] > 0.99 and res[phi]["jvp"]["rel_error"] < 1e-9


def test_overrides_may_stand_anywhere_among_the_flags():
    from metassl.cli import parse
    args = parse(["train", "--quiet", "iterations=2", "--out", "x", "lr=0.1"])
    assert args.overrides == ["iterations=2", "lr=0.1"] and args.out == "x" and args.quiet
    assert parse(["bench", "fmnist-1000", "--quick", "threads=1"]).overrides == ["threads=1"]
