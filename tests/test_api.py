"""The Python API round-trips a run: `metassl.load` predicts what `metassl predict` prints, on arrays, tensors,
lists of arrays, files and folders, and `metassl export` writes a file torch alone loads that gives the same
predictions."""
import csv
import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import metassl
from metassl.cli import main
from metassl.errors import UserError
from tests.conftest import tiny_run

CLASSES = ["shirt", "bag", "c2", "c3"]

pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 20-iteration metamixup run on a tiny 8x8 grayscale .npz, its test images as a new .npz to predict."""
    root = tmp_path_factory.mktemp("run")
    run_dir, data = tiny_run(root, CLASSES)
    np.savez(root / "new.npz", x=data.x_test)
    return run_dir, root / "new.npz", data


def cli_predict(run_dir: Path, inputs: Path, capsys) -> tuple[list[str], np.ndarray]:
    """(predicted class names, probabilities) as `metassl predict` prints them."""
    assert main(["predict", str(run_dir), str(inputs), "--device", "cpu"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))[1:]
    return [r[1] for r in rows], np.array([[float(v) for v in r[2:]] for r in rows])


def test_load_predicts_what_the_cli_prints_for_arrays_and_files(run, capsys):
    run_dir, new, data = run
    names, p_cli = cli_predict(run_dir, new, capsys)
    model = metassl.load(run_dir, device="cpu")
    assert model.classes == CLASSES and (model.channels, model.image_size) == (1, 8)
    xt = torch.from_numpy(data.x_test)
    for images in (new, str(new), data.x_test, data.x_test[..., 0],      # .npz path, NHWC and NHW arrays
                   xt, xt[..., 0], list(data.x_test), [t for t in xt]):  # tensors, lists of arrays and of tensors
        p = model.predict_proba(images)
        np.testing.assert_allclose(p, p_cli, rtol=1e-5, atol=1e-6)        # the CSV prints 6 significant digits
        assert [model.classes[k] for k in model.predict(images)] == names
    assert (model.predict(data.x_test) == data.y_test).mean() > 0.5


def test_load_predicts_image_paths_like_the_folder(run, tmp_path, capsys):
    run_dir, _, data = run
    files = []
    for i in range(3):
        files.append(tmp_path / f"im{i}.png")
        Image.fromarray(data.x_test[i, :, :, 0]).save(files[-1])
    names, p_cli = cli_predict(run_dir, tmp_path, capsys)
    model = metassl.load(run_dir, device="cpu")
    np.testing.assert_allclose(model.predict_proba(files), p_cli, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict_proba(data.x_test[:3]), p_cli, rtol=1e-5, atol=1e-6)   # PNG is lossless


def test_load_rejects_arrays_that_do_not_match_the_run(run):
    model = metassl.load(run[0], device="cpu")
    with pytest.raises(UserError, match="expects 8x8 with 1"):
        model.predict(np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="must be uint8"):
        model.predict(np.zeros((2, 8, 8), np.float32))


STANDALONE = """
import importlib.util, json, sys
assert importlib.util.find_spec("metassl") is None, "metassl is importable"
import torch
info = {"metassl.json": ""}
model = torch.export.load(sys.argv[1], extra_files=info).module()
info = json.loads(info["metassl.json"])
torch.save({"logits": model(torch.load(sys.argv[2])), "classes": info["classes"],
            "shape": (info["channels"], info["image_size"])}, sys.argv[3])
"""


def test_export_runs_without_metassl_and_predicts_what_the_cli_prints(run, tmp_path, capsys):
    run_dir, new, data = run
    names, p_cli = cli_predict(run_dir, new, capsys)
    assert main(["export", str(run_dir), "--out", str(tmp_path / "model.pt2")]) == 0
    assert "model.pt2" in capsys.readouterr().out
    torch.save(torch.from_numpy(data.x_test.transpose(0, 3, 1, 2).copy()), tmp_path / "x.pt")   # uint8 NCHW
    torch_dir = str(Path(torch.__file__).parents[1])       # site-packages, without the .pth that adds src/
    code = f"import sys; sys.path.insert(0, {torch_dir!r})\n" + STANDALONE
    subprocess.run([sys.executable, "-I", "-S", "-c", code, str(tmp_path / "model.pt2"), str(tmp_path / "x.pt"),
                    str(tmp_path / "out.pt")], cwd=tmp_path, check=True)
    out = torch.load(tmp_path / "out.pt")
    assert out["classes"] == CLASSES and out["shape"] == (1, 8)
    assert [out["classes"][k] for k in out["logits"].argmax(1)] == names
    np.testing.assert_allclose(torch.softmax(out["logits"].double(), 1).numpy(), p_cli, rtol=1e-5, atol=1e-6)
