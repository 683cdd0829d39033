"""`metassl plot` and `metassl tsne`: well-formed PNGs from tiny runs; one-line errors otherwise."""
import sys

import numpy as np
import pytest

from metassl.cli import main
from metassl.algorithms import build_config
from metassl.diagnostics.plot import smooth, time_to_error
from metassl.run.log import read_metrics
from metassl.train import train
from tests.conftest import make_tiny_data, write_tiny_npz

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["device=cpu", "model=cnn", "iterations=20", "labeled_warmup=0", "batch_size=16", "num_labels=16", "log_every=2",
        "eval_every=5", "checkpoint_every=20", "warmup=2", "consistency_rampup=5", "translate=1"]


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two 20-iteration runs on a tiny .npz data set: metamixup (logs pl_*) and supervised (does not)."""
    root = tmp_path_factory.mktemp("runs")
    data = make_tiny_data(n_train=120, n_test=40, size=8)
    npz = write_tiny_npz(root / "tiny.npz", data, classes=np.array(data.classes))
    for algo in ("metamixup", "supervised"):
        train(build_config(None, None, [f"dataset={npz}", f"algorithm={algo}", *TINY]), root / algo, quiet=True)
    return [root / "metamixup", root / "supervised"]


def is_png(path):
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def test_plot_overlays_runs_into_test_error_losses_and_pseudo_label_pngs(runs, tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    listed = capsys.readouterr().out.split()
    for name in ("test_error.png", "losses.png", "pseudo_labels.png"):
        assert is_png(out / name), name
        assert str(out / name) in listed


def test_plot_of_one_run_writes_into_it_and_skips_pseudo_labels_it_did_not_log(runs, capsys):
    assert main(["plot", str(runs[1])]) == 0
    assert is_png(runs[1] / "test_error.png") and is_png(runs[1] / "losses.png")
    assert not (runs[1] / "pseudo_labels.png").exists()


def test_metrics_reader_skips_a_torn_last_line_and_smoothing_keeps_constants(runs, tmp_path):
    (tmp_path / "metrics.jsonl").write_text((runs[0] / "metrics.jsonl").read_text() + '{"iteration": 21, "ki')
    records = read_metrics(tmp_path)
    assert len(records) == len((runs[0] / "metrics.jsonl").read_text().splitlines())
    assert {"pl_acc_plain", "pl_acc_corrected", "pl_changed"} <= set(records[0])
    np.testing.assert_allclose(smooth(np.full(9, 0.25)), 0.25)


def test_plot_errors_are_one_line(runs, tmp_path, capsys, monkeypatch):
    assert main(["plot", str(runs[0]), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no metrics.jsonl" in err and str(tmp_path) in err
    monkeypatch.setitem(sys.modules, "matplotlib", None)             # as if not installed
    assert main(["plot", str(runs[0]), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install matplotlib" in err


def test_tsne_writes_a_png_of_test_features(runs, tmp_path, capsys):
    out = tmp_path / "tsne.png"
    assert main(["tsne", str(runs[0]), "--out", str(out), "--n", "40", "--device", "cpu"]) == 0
    assert is_png(out) and str(out) in capsys.readouterr().out


def test_tsne_without_scikit_learn_is_one_line(runs, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    assert main(["tsne", str(runs[0]), "--out", str(tmp_path / "t.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pip install scikit-learn" in err


def test_time_to_error_is_the_first_evaluation_at_or_below_the_target():
    records = [{"iteration": 10, "kind": "train", "loss": 1.0},
               {"iteration": 10, "kind": "eval", "test_error": 30.0, "train_seconds": 5.0, "images_seen": 1280},
               {"iteration": 20, "kind": "eval", "test_error": 14.9, "train_seconds": 9.5, "images_seen": 2560},
               {"iteration": 30, "kind": "eval", "test_error": 12.0, "train_seconds": 14.0, "images_seen": 3840}]
    assert time_to_error(records, 15.0) == (9.5, 2560)
    assert time_to_error(records, 12.0) == (14.0, 3840)
    assert time_to_error(records, 11.9) is None                               # never reached
    assert time_to_error([{"iteration": 1, "kind": "eval", "test_error": 1.0}], 15.0) is None   # untimed records
