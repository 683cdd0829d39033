"""`metassl predict`: a CSV of predicted class and probabilities for an .npz or an image folder; bad inputs
refused in one line by the CLI and, in Python's words, by `metassl.load(run).predict` / `predict_proba`."""
import csv
import io

import numpy as np
import pytest
import torch
from PIL import Image

import metassl
from metassl.cli import main
from tests.bad_input import python_rejects, rejects
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


ARRAYS = {       # name: (images, what both answers name); the CLI reads them as an .npz's x, Python as they are
    "RGB for a grayscale run": (np.zeros((2, 8, 8, 3), np.uint8), ["expects 8x8 with 1"]),
    "wrong size": (np.zeros((2, 9, 9), np.uint8), ["expects 8x8 with 1"]),
    "channels first": (np.zeros((2, 1, 8, 8), np.uint8), ["channels-first", "x.transpose(0, 2, 3, 1)"]),
    "one image": (np.zeros((8, 8), np.uint8), ["one image", "x[None]"]),
    "float in [0, 1]": (np.full((2, 8, 8), 0.5, np.float32), ["must be uint8", "(x * 255).round().astype(np.uint8)"]),
    "int64 in 0..255": (np.full((2, 8, 8), 200, np.int64), ["must be uint8", "x.astype(np.uint8)"]),
    "float beyond 255": (np.full((2, 8, 8), 1000.0), ["must be uint8", "outside 0..255"]),
    "1-D": (np.zeros(5, np.uint8), ["(N, H, W)"]),
}


@pytest.mark.parametrize("case", sorted(ARRAYS))
def test_arrays_that_do_not_fit_the_run_are_one_line_from_the_cli_and_from_python(run, tmp_path, capsys, case):
    x, needles = ARRAYS[case]
    np.savez(tmp_path / "bad.npz", x=x)
    line = rejects(["predict", str(run[0]), str(tmp_path / "bad.npz")], capsys, None)
    model = metassl.load(run[0], device="cpu")
    for call in (model.predict, model.predict_proba):
        msg = str(python_rejects(lambda: call(x)))
        assert all(n in line and n in msg for n in needles), (line, msg)
        assert "images: images" not in msg
        assert x.dtype.kind == "f" or "x * 255" not in msg + line          # scaling advice for floats only


def test_bad_python_inputs_say_what_is_accepted(run, tmp_path):
    model = metassl.load(run[0], device="cpu")
    x = np.zeros((2, 8, 8, 1), np.uint8)
    for images, needle in ((torch.full((2, 8, 8), 0.5), "(x * 255).round().to(torch.uint8)"),
                           (torch.zeros(2, 1, 8, 8, dtype=torch.uint8), "x.permute(0, 2, 3, 1)"),
                           ([x[0], x[0, :7]], "differ in shape"), ([x[0], "a.png"], "only image file paths or only"),
                           ({"x": x}, "not accepted"), (7, "not accepted"), (tmp_path / "nosuch.npz", "images=")):
        assert needle in str(python_rejects(lambda: model.predict(images)))


def test_bad_files_are_one_line_from_the_cli_and_from_python(run, tmp_path, capsys):
    np.savez(tmp_path / "nox.npz", images=np.zeros((2, 8, 8), np.uint8))
    (tmp_path / "empty").mkdir()
    (tmp_path / "nox.npz.txt").write_text("x")
    (tmp_path / "text.npz").write_text("just some text")
    model = metassl.load(run[0], device="cpu")
    for name, cli_needle, py_needle in (
            ("nox.npz", "no key 'x'", "no key 'x'"), ("empty", "holds no images", "holds no images"),
            ("missing.npz", "INPUT", "images='"), ("nox.npz.txt", "neither", "neither"),
            ("text.npz", "is not a NumPy .npz archive (it starts with b'just", "is not a NumPy .npz archive")):
        line = rejects(["predict", str(run[0]), str(tmp_path / name)], capsys, None)
        msg = str(python_rejects(lambda: model.predict_proba(tmp_path / name)))
        assert cli_needle in line and py_needle in msg and "pickle" not in line, (line, msg)
        assert ("does not exist" in line and "does not exist" in msg) == (name == "missing.npz")


def test_no_images_give_an_empty_result_of_the_right_shape(run, tmp_path, capsys):
    model = metassl.load(run[0], device="cpu")
    for images in (np.empty((0, 8, 8), np.uint8), np.empty((0, 8, 8, 1), np.uint8), [],
                   torch.empty(0, 8, 8, 1, dtype=torch.uint8)):
        p, k = model.predict_proba(images), model.predict(images)
        assert p.shape == (0, len(CLASSES)) and p.dtype == np.float64 and k.shape == (0,) and k.dtype == np.int64
    np.savez(tmp_path / "none.npz", x=np.empty((0, 8, 8), np.uint8))
    assert main(["predict", str(run[0]), str(tmp_path / "none.npz")]) == 0
    assert parse(capsys.readouterr().out) == (["file_or_index", "predicted_class"] + [f"p_{c}" for c in CLASSES], [])
