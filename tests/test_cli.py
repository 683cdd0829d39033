"""The command line: subcommands work end to end; bad input is one line on stderr and exit status 2."""
import json

import numpy as np
import pytest

from metassl.cli import main
from tests.conftest import make_tiny_data


def write_npz(path, data):
    np.savez(path, x=data.x_train, y=data.y_train, x_test=data.x_test, y_test=data.y_test)


def test_train_eval_and_resume_through_the_cli(tmp_path, capsys):
    npz = tmp_path / "tiny.npz"
    write_npz(npz, make_tiny_data())
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


@pytest.mark.parametrize("argv, needle", [
    (["train", "lr=-0.1"], "lr"),
    (["train", "batchsize=3"], "batchsize"),
    (["train", "--preset", "nope"], "preset"),
    (["train", "--config", "/no/such/file.yaml"], "config file"),
    (["frobnicate"], "frobnicate"),
    (["check", "--model", "vgg"], "vgg"),
    (["eval", "/no/such/run"], "no metassl run"),
    (["train", "--resume", "/tmp", "lr=0.1"], "--resume"),
])
def test_bad_input_is_one_line_and_exit_2(argv, needle, capsys, tmp_path):
    assert main(argv + (["--out", str(tmp_path / "r")] if argv[0] == "train" and "--resume" not in argv else [])) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("metassl: error:") and needle in err and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_presets_lists_the_default_and_the_papers(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("fmnist-1000", "svhn-1000", "cifar10-4000", "cifar100-10000", "imagenet-10pct"):
        assert name in out


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
