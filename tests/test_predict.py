"""`metassl predict`: a CSV of predicted class and probabilities for an .npz or an image folder."""
import csv
import io

import numpy as np
import pytest
from PIL import Image

from metassl.cli import main
from tests.conftest import tiny_run

CLASSES = ["T-shirt/top", "bag, small", "c2", "c3"]     # a comma: the CSV must quote it


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 20-iteration metamixup run on a tiny 8x8 grayscale .npz data set with named classes."""
    root = tmp_path_factory.mktemp("run")
    return tiny_run(root, CLASSES)


def parse(text):
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


def check_rows(header, rows, n):
    assert header == ["file_or_index", "predicted_class"] + [f"p_{c}" for c in CLASSES]
    assert len(rows) == n
    p = np.array([[float(v) for v in r[2:]] for r in rows])
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-4)
    assert [r[1] for r in rows] == [CLASSES[k] for k in p.argmax(1)]
    return p


def test_predict_npz_to_stdout_and_to_file(run, tmp_path, capsys):
    run_dir, data = run
    np.savez(tmp_path / "new.npz", x=data.x_test[:, :, :, 0])          # (N, H, W) is fine too
    assert main(["predict", str(run_dir), str(tmp_path / "new.npz"), "--device", "cpu"]) == 0
    header, rows = parse(capsys.readouterr().out)
    p = check_rows(header, rows, len(data.x_test))
    assert [r[0] for r in rows] == [str(i) for i in range(len(data.x_test))]
    assert (p.argmax(1) == data.y_test).mean() > 0.5                    # the run learned the tiny task
    out = tmp_path / "pred.csv"
    assert main(["predict", str(run_dir), str(tmp_path / "new.npz"), "--out", str(out), "--device", "cpu"]) == 0
    assert capsys.readouterr().out == ""
    assert parse(out.read_text()) == (header, rows)


def test_predict_image_folder_converts_and_resizes_to_the_run(run, tmp_path, capsys):
    run_dir, data = run
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for i in range(3):                                                   # RGB 16x16: converted to 8x8 grayscale
        big = np.repeat(np.repeat(data.x_test[i, :, :, 0], 2, axis=0), 2, axis=1)
        Image.fromarray(np.stack([big] * 3, -1)).save(tmp_path / "imgs" / ("sub" if i else ".") / f"im{i}.png")
    (tmp_path / "imgs" / "notes.txt").write_text("not an image")
    assert main(["predict", str(run_dir), str(tmp_path / "imgs")]) == 0
    header, rows = parse(capsys.readouterr().out)
    check_rows(header, rows, 3)
    assert [r[0] for r in rows] == ["im0.png", "sub/im1.png", "sub/im2.png"]


@pytest.mark.parametrize("x, needle", [
    (np.zeros((2, 8, 8, 3), np.uint8), "expects 8x8 with 1"),
    (np.zeros((2, 9, 9), np.uint8), "expects 8x8 with 1"),
    (np.zeros((2, 8, 8), np.float32), "must be uint8"),
])
def test_predict_shape_mismatch_is_one_line(run, tmp_path, capsys, x, needle):
    np.savez(tmp_path / "bad.npz", x=x)
    assert main(["predict", str(run[0]), str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_predict_bad_inputs_are_one_line(run, tmp_path, capsys):
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "empty").mkdir()
    (tmp_path / "nox.npz.txt").write_text("x")
    for path, needle in ((tmp_path / "nox.npz", "no key 'x'"), (tmp_path / "empty", "holds no images"),
                         (tmp_path / "missing.npz", "does not exist"), (tmp_path / "nox.npz.txt", "neither")):
        assert main(["predict", str(run[0]), str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and needle in err, err
