"""User errors: every malformed setting, command line, config file, run directory or data file gives
exactly one line `metassl: error: ...` on stderr and exit status 2, names what is wrong, and leaves no
run directory behind. (The one bad-input suite; test_config.py covers how valid settings combine,
test_cli.py the subcommands working end to end.)

Everything goes through `metassl.cli.main([...])` (three cases also through a real subprocess). Part
of the matrix is generated with hypothesis (bounded: few examples, no deadline).
"""
from __future__ import annotations

import gzip
import itertools
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from metassl.cli import main
from metassl.config import FIELDS, PRESETS
from metassl.data import sources
from tests.conftest import make_tiny_data, write_tiny_npz

_fresh = itertools.count()
SETTINGS = settings(max_examples=12, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# A training command that succeeds on GOOD_NPZ (test_the_base_command_is_valid); each case spoils one thing.
BASE = ["train", "--quiet", "device=cpu", "threads=1", "iterations=1", "batch_size=4", "num_labels=8",
        "eval_every=1", "log_every=1", "checkpoint_every=1", "warmup=0", "consistency_rampup=0"]
N_TRAIN, N_CLASSES = 40, 4


pytestmark = pytest.mark.usefixtures("isolated")   # conftest.py: no real data, cache, env or network


TINY = make_tiny_data(n_train=N_TRAIN, n_test=8, size=8, classes=N_CLASSES)
G = {"x": TINY.x_train, "y": TINY.y_train, "x_test": TINY.x_test, "y_test": TINY.y_test}   # (N, 8, 8, 1) uint8


@pytest.fixture(scope="module")
def good_npz(tmp_path_factory) -> Path:
    return write_tiny_npz(tmp_path_factory.mktemp("data") / "good.npz", TINY)


def fresh(tmp_path: Path) -> Path:
    """A new, not yet existing --out path (hypothesis reuses tmp_path across examples)."""
    return tmp_path / f"run{next(_fresh)}"


def rejects(argv: list[str], capsys, out: Path | None) -> str:
    """main(argv) must print exactly one `metassl: error:` line on stderr, return 2 and not create `out`."""
    capsys.readouterr()
    rc = main(argv)
    cap = capsys.readouterr()
    lines = cap.err.splitlines()
    assert rc == 2, f"{argv!r}: exit {rc}, stderr {cap.err[-1500:]!r}"
    assert len(lines) == 1 and lines[0].startswith("metassl: error: "), f"{argv!r}: stderr {cap.err!r}"
    if out is not None:
        assert not out.exists(), f"{argv!r} left {out} behind: {sorted(p.name for p in out.iterdir())}"
    return lines[0]


def train_rejects(overrides: list[str], capsys, tmp_path: Path, data: Path | None = None,
                  extra: list[str] = ()) -> str:
    out = fresh(tmp_path)
    ds = [f"dataset={data}"] if data is not None else []
    return rejects(BASE + ds + list(overrides) + list(extra) + ["--out", str(out)], capsys, out)


def test_the_base_command_is_valid(good_npz, tmp_path, capsys):
    """The matrix is meaningful: the unspoiled command trains (so each failure below is the spoiled part)."""
    out = tmp_path / "ok"
    assert main(BASE + [f"dataset={good_npz}", "--out", str(out)]) == 0
    assert (out / "results.json").exists()


# ----------------------------------------------------------------------------- config values

@pytest.mark.parametrize("override, needle", [
    ("lr=-0.1", "lr"), ("lr=0", "lr"), ("lr=11", "lr"), ("eps_scale=0", "eps_scale"), ("eps_scale=-1", "eps_scale"),
    ("mixup_gamma=0", "mixup_gamma"), ("mixup_gamma=-0.5", "mixup_gamma"), ("batch_size=0", "batch_size"),
    ("batch_size=-4", "batch_size"), ("unlabeled_batch_size=-1", "unlabeled_batch_size"),
    ("unlabeled_batch_size=3", "unlabeled_batch_size"),            # mixup needs equal batches
    ("momentum=1", "momentum"), ("weight_decay=-1e-4", "weight_decay"), ("ema=1", "ema"), ("beta=-1", "beta"),
    ("iterations=0", "iterations"), ("num_labels=0", "num_labels"), ("num_labels=-2", "num_labels"),
    ("translate=65", "translate"), ("lr_decay=0", "lr_decay"), ("lr=nan", "lr"), ("lr=inf", "lr"),
    ("lr=1e400", "lr"), ("iterations=1.5", "iterations"), ("iterations=ten", "iterations"), ("lr=fast", "lr"),
    ("nesterov=maybe", "nesterov"), ("algorithm=nope", "algorithm"), ("algorithm=", "algorithm"),
    ("model=vgg99", "model"), ("dataset=imagenet21k", "data set"), ("dataset=", "data set"),
    ("dataset=/no/such/file.npz", "does not exist"), ("device=tpu", "device"), ("device=cuda", "CUDA"),
    ("meta_method=sgd", "meta_method"), ("projection=l1", "projection"), ("flip=sometimes", "flip"),
    ("lr_schedule=step", "lr_steps"), ("lr_schedule=step lr_steps=5,x", "lr_steps"),
    ("lr_schedule=step lr_steps=8,5", "lr_steps"), ("lerning_rate=0.1", "lerning_rate"),
    ("=0.1", "unknown config key"), ("lr", "key=value"), ("lr:0.1", "key=value"),
    ("num_labels=400", "fewer"), ("num_labels=10", "divisible"), ("num_val=4000", "num_val"),
    ("num_val=3", "num_val"), ("num_labels=-1", "unlabeled"), ("image_size=2", "image_size"),
    ("model=convlarge", "image_size"), ("lrr=0.1", "did you mean lr"),
])
def test_bad_config_value_names_the_key(override, needle, good_npz, capsys, tmp_path):
    if override == "device=cuda":
        import torch
        if torch.cuda.is_available():
            pytest.skip("CUDA is available here")
    line = train_rejects(override.split(" "), capsys, tmp_path, good_npz)
    assert needle in line


def _floats(**kw):
    return st.floats(allow_nan=False, allow_infinity=False, **kw)


_NEG = _floats(max_value=-1e-9)
OUT_OF_RANGE = st.one_of(
    st.tuples(st.just("lr"), _floats(max_value=0) | _floats(min_value=10, exclude_min=True)),
    st.tuples(st.sampled_from(["eps_scale", "mixup_gamma"]), _floats(max_value=0)),
    st.tuples(st.sampled_from(["beta", "consistency_weight", "weight_decay"]), _NEG),
    st.tuples(st.sampled_from(["momentum", "ema"]), _NEG | _floats(min_value=1)),
    st.tuples(st.just("lr_decay"), _floats(max_value=0) | _floats(min_value=1, exclude_min=True)),
    st.tuples(st.sampled_from(["batch_size", "iterations", "eval_every", "eval_batch_size", "checkpoint_every",
                               "log_every"]), st.integers(max_value=0)),
    st.tuples(st.sampled_from(["unlabeled_batch_size", "num_val", "warmup", "threads", "image_size",
                               "consistency_rampup"]), st.integers(max_value=-1)),
    st.tuples(st.just("num_labels"), st.integers(max_value=-2) | st.just(0)),
    st.tuples(st.just("translate"), st.integers(max_value=-1) | st.integers(min_value=65)),
)


@SETTINGS
@given(case=OUT_OF_RANGE)
def test_generated_out_of_range_values_name_the_key(case, good_npz, capsys, tmp_path):
    key, value = case
    line = train_rejects([f"{key}={value!r}"], capsys, tmp_path, good_npz)
    assert key in line


def _not_a_number(text: str) -> bool:
    try:
        float(text.strip())
    except ValueError:
        return True
    return False


NUMERIC = sorted(k for k, f in FIELDS.items() if f.type in ("int", "float", int, float))
BOOLEAN = sorted(k for k, f in FIELDS.items() if f.type in ("bool", bool))


@SETTINGS
@given(key=st.sampled_from(NUMERIC), text=st.text(max_size=12).filter(_not_a_number))
def test_non_numeric_strings_for_numbers(key, text, good_npz, capsys, tmp_path):
    train_rejects([f"{key}={text}"], capsys, tmp_path, good_npz)


@SETTINGS
@given(key=st.sampled_from(BOOLEAN),
       text=st.text(max_size=8).filter(lambda t: t.strip().lower() not in ("1", "0", "true", "false", "yes", "no",
                                                                            "on", "off")))
def test_non_boolean_strings(key, text, good_npz, capsys, tmp_path):
    train_rejects([f"{key}={text}"], capsys, tmp_path, good_npz)


@SETTINGS
@given(key=st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,20}", fullmatch=True).filter(lambda k: k not in FIELDS),
       value=st.text(max_size=6))
def test_generated_unknown_keys_are_called_unknown(key, value, good_npz, capsys, tmp_path):
    line = train_rejects([f"{key}={value}"], capsys, tmp_path, good_npz)
    assert "unknown config key" in line


@SETTINGS
@given(item=st.text(min_size=0, max_size=16).filter(lambda t: "=" not in t and not t.startswith("-")))
def test_malformed_key_value(item, good_npz, capsys, tmp_path):
    train_rejects([item], capsys, tmp_path, good_npz)


CHOICE_KEYS = {"algorithm": None, "model": None, "meta_method": ("auto", "fd", "jvp", "exact"), "meta_phi": ("mse", "kl"),
               "beta_schedule": ("lr", "constant", "cosine"), "projection": ("relu", "simplex"),
               "consistency": ("mse", "kl"), "lr_schedule": ("cosine", "step", "constant"),
               "flip": ("auto", "true", "false"), "device": ("auto", "cpu")}


def _valid_choice(key: str, value: str) -> bool:
    from metassl.algorithms import ALGORITHMS
    from metassl.models import model_names
    v = value.strip()
    if key == "algorithm":
        return v in ALGORITHMS
    if key == "model":
        return v in model_names()
    if key == "device":
        return v in ("auto", "cpu") or v.startswith("cuda")       # cuda without CUDA is its own error
    return (v.lower() if key == "flip" else v) in CHOICE_KEYS[key]


@SETTINGS
@given(key=st.sampled_from(sorted(CHOICE_KEYS)), value=st.text(max_size=12))
def test_generated_unknown_choices_name_the_key(key, value, good_npz, capsys, tmp_path):
    if _valid_choice(key, value):
        return
    line = train_rejects([f"{key}={value}"], capsys, tmp_path, good_npz)
    assert key in line


@SETTINGS
@given(name=st.text(max_size=16).filter(lambda t: t.strip().lower() not in sources.DATASETS))
def test_unknown_or_missing_datasets(name, capsys, tmp_path):
    train_rejects([f"dataset={name}"], capsys, tmp_path)


_BREAKY = st.text(alphabet=st.sampled_from(list("ab/.\n\r\x0b\x0c\x85\u2028")), min_size=1, max_size=10)


@SETTINGS
@given(key=st.sampled_from(["dataset", "data_dir", "lr", "lr_steps", "algorithm", "model"]), text=_BREAKY)
def test_line_breaks_in_values_and_paths_stay_one_line(key, text, good_npz, capsys, tmp_path):
    """A value or path holding a line break still gives exactly one line (the break is escaped)."""
    extra = {"dataset": [f"dataset={text}.npz"], "data_dir": ["dataset=npz", f"data_dir={text}"],
             "lr_steps": ["lr_schedule=step", f"lr_steps={text}"]}.get(key, [f"{key}={text}"])
    train_rejects(extra, capsys, tmp_path, None if key in ("dataset", "data_dir")
                  else good_npz)


@SETTINGS
@given(name=st.text(min_size=1, max_size=16).filter(lambda t: t not in PRESETS and not t.startswith("-")))
def test_generated_unknown_presets_are_called_presets(name, good_npz, capsys, tmp_path):
    line = train_rejects([], capsys, tmp_path, good_npz, extra=["--preset", name])
    assert "preset" in line


@SETTINGS
@given(k=st.integers(min_value=1, max_value=10**6))
def test_num_labels_too_many_or_not_divisible(k, good_npz, capsys, tmp_path):
    n = k if k % N_CLASSES else (k + N_TRAIN) * N_CLASSES          # not divisible, or divisible but too many
    train_rejects([f"num_labels={n}"], capsys, tmp_path, good_npz)


# ----------------------------------------------------------------------------- command lines

def _finished_run(tmp_path: Path, good_npz: Path) -> Path:
    run = tmp_path / "finished"
    assert main(BASE + [f"dataset={good_npz}", "--out", str(run)]) == 0
    return run


def test_bad_command_lines_name_the_bad_part(good_npz, capsys, tmp_path):
    run = _finished_run(tmp_path, good_npz)
    capsys.readouterr()
    afile = tmp_path / "a_file"
    afile.write_text("x")
    yaml_cases = {"bad.yaml": "lr: [unclosed", "list.yaml": "- 1\n- 2\n", "unknown.yaml": "lerning_rate: 0.1\n",
                  "nested.yaml": "lr: {a: 1}\n", "value.yaml": "lr: -3\n", "binary.yaml": b"\xff\xfe\x00bad",
                  "scalar.yaml": "just text\n"}
    for name, text in yaml_cases.items():
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    out = fresh(tmp_path)
    yaml_needles = {"bad.yaml": "not valid YAML", "list.yaml": "mapping", "unknown.yaml": "lerning_rate",
                    "nested.yaml": "lr=", "value.yaml": "out of range", "binary.yaml": "not valid YAML",
                    "scalar.yaml": "mapping"}
    cases = [       # (argv, what the one line must name)
        ([], "command"), (["frobnicate"], "frobnicate"), (["train", "--bogus-flag"], "--bogus-flag"),
        (["train", "--out"], "--out"), (["train", "--resume"], "--resume"),
        (["train", "--resume", str(tmp_path / "nope")], "no metassl run"),
        (["train", "--resume", str(empty_dir)], "no metassl run"),
        (["train", "--resume", str(run), "lr=0.1"], "--resume"),
        (["train", "--resume", str(run), "--preset", "fmnist-1000"], "--resume"),
        (["train", "--preset", "imagenet-1pct"], "fmnist-1000"),                   # lists the presets
        (["train", "--config", str(tmp_path / "missing.yaml")], "config file"),
        (["train", "--config", str(empty_dir)], "config file"),
        *[(["train", "--config", str(tmp_path / name)], yaml_needles[name]) for name in yaml_cases],
        (["train", f"dataset={good_npz}", "--out", str(afile)], "is a file"),
        (["eval"], "run_dir"), (["eval", str(tmp_path / "nope")], "no metassl run"),
        (["eval", str(empty_dir)], "no metassl run"), (["eval", str(run), "--device", "tpu"], "tpu"),
        (["check", "--model", "vgg"], "vgg"), (["check", "--batch", "x"], "--batch"),
        (["check", "--eps-scale", "abc"], "--eps-scale"),
        (["presets", "extra"], "extra"), (["algorithms", "--json"], "--json"),
        (["plot", str(tmp_path / "nope")], "metrics.jsonl"), (["plot", str(empty_dir)], "metrics.jsonl"),
        (["predict", str(tmp_path / "nope"), str(empty_dir)], "no metassl run"),
        (["predict", str(run), str(tmp_path / "no-images")], "no-images"),
        (["features", str(empty_dir)], "no metassl run"), (["features", str(run), "--n", "x"], "--n"),
        (["bench", "nosuch", "--quick"], "nosuch"), (["bench", "fmnist-1000", "--seeds", "a,b"], "--seeds"),
        (["bench-step", "--variants", "nope"], "nope"), (["bench-step", "--model", "vgg"], "vgg"),
    ]
    for argv, needle in cases:
        if argv[:1] == ["train"] and "--resume" not in argv and "--out" not in argv:
            argv = BASE + [f"dataset={good_npz}"] + argv[1:] + ["--out", str(out)]
        line = rejects(argv, capsys, out)
        assert needle in line, f"{argv!r}: {line!r} does not name {needle!r}"
    assert afile.read_text() == "x"


def _subcommands() -> set[str]:
    import argparse

    from metassl.cli import build_parser
    return {c for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction) for c in a.choices}


SUBCOMMANDS = _subcommands()


@SETTINGS
@given(argv=st.lists(st.text(max_size=10).filter(lambda t: not t.startswith("-")), min_size=1, max_size=4)
       .filter(lambda a: a[0] not in SUBCOMMANDS))
def test_random_command_lines(argv, capsys, tmp_path):
    rejects(argv, capsys, None)


def test_existing_run_is_refused_and_untouched(good_npz, capsys, tmp_path):
    run = _finished_run(tmp_path, good_npz)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    line = rejects(BASE + [f"dataset={good_npz}", "--out", str(run)], capsys, None)
    assert "--resume" in line and "--force" in line
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    # --force with bad input must not destroy the old run either: the data are checked before anything is cleared
    rejects(BASE + ["dataset=/no/such.npz", "--force", "--out", str(run)], capsys, None)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_damaged_run_directories_are_refused_by_resume_and_eval(good_npz, capsys, tmp_path):
    """--resume and eval on a run whose config.json or checkpoints are damaged: one line, nothing changed."""
    run = _finished_run(tmp_path, good_npz)
    capsys.readouterr()
    cfg = (run / "config.json").read_text()
    for text in ("{not json", "[1, 2]", '{"lr": "fast"}', '{"lerning_rate": 1}', "", '{"lr": -1}'):
        (run / "config.json").write_text(text)
        rejects(["train", "--resume", str(run), "--quiet"], capsys, None)
        if text != '{"lr": -1}':                  # eval needs no lr: only an unreadable config stops it
            rejects(["eval", str(run), "--device", "cpu"], capsys, None)
    (run / "config.json").write_text(cfg)
    for name in ("last.pt", "prev.pt"):
        (run / name).write_bytes(b"garbage")
    rejects(["train", "--resume", str(run), "--quiet"], capsys, None)
    rejects(["eval", str(run), "--device", "cpu"], capsys, None)


# ----------------------------------------------------------------------------- corrupt data files
# Each format's unspoiled data set trains (test_valid_files_of_each_format_train), so every rejection
# below comes from the one spoiled file.

def idx_bytes(arr: np.ndarray) -> bytes:
    header = (0x800 | arr.ndim).to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def write_mnist(d: Path, spoil: dict[str, bytes] | None = None, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (n, 28, 28)), np.arange(n) % 10, rng.integers(0, 256, (10, 28, 28)), np.arange(10)]
    d.mkdir(parents=True, exist_ok=True)
    for name, arr in zip(IDX, arrays):
        (d / (name + ".gz")).write_bytes(gzip.compress(idx_bytes(arr)))
    for name, raw in (spoil or {}).items():
        for old in d.glob(name + "*"):
            old.unlink()
        (d / name).write_bytes(raw)
    return d


def write_cifar10(d: Path, spoil: dict[str, object] | None = None) -> Path:
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    files = {f"data_batch_{i}": {b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                                 b"labels": [(8 * i + j) % 10 for j in range(8)]} for i in range(1, 6)}
    files["test_batch"] = {b"data": rng.integers(0, 256, (10, 3072), dtype=np.uint8), b"labels": list(range(10))}
    files.update(spoil or {})
    for name, obj in files.items():
        (d / name).write_bytes(obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2))
    return d


def write_svhn(d: Path, train: dict | bytes | None = None) -> Path:
    from scipy.io import savemat
    d.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 3, 20), dtype=np.uint8)
    y = (np.arange(20) % 10 + 1).reshape(-1, 1)
    good = {"X": x, "y": y}
    savemat(d / "test_32x32.mat", good)
    if isinstance(train, bytes):
        (d / "train_32x32.mat").write_bytes(train)
    else:
        savemat(d / "train_32x32.mat", train if train is not None else good)
    return d


def write_folder(root: Path, spoil: str) -> Path:
    from PIL import Image
    for split, n in (("train", 8), ("val", 2)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                Image.new("RGB", (8, 8), (40 * i, 100, 200)).save(root / split / c / f"{i}.png")
    if spoil == "text-as-png":
        (root / "train" / "cat" / "9.png").write_text("this is not an image")
    elif spoil == "only-text-files":
        for p in (root / "train" / "dog").iterdir():
            p.unlink()
        (root / "train" / "dog" / "readme.txt").write_text("no images here")
    elif spoil == "mixed-sizes":
        Image.new("RGB", (9, 7)).save(root / "train" / "cat" / "odd.png")
    elif spoil == "truncated-png":
        raw = (root / "train" / "cat" / "0.png").read_bytes()
        (root / "train" / "cat" / "0.png").write_bytes(raw[: len(raw) // 2])
    elif spoil == "no-val":
        for p in sorted((root / "val").rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        (root / "val").rmdir()
    elif spoil == "unknown-val-class":
        (root / "val" / "cow").mkdir()
        Image.new("RGB", (8, 8)).save(root / "val" / "cow" / "0.png")
    elif spoil == "no-train":
        (root / "train").rename(root / "training")
    return root


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


NPZ_CASES = {       # name: (arrays, what the one line must name)
    "mismatched lengths": (dict(G, y=G["y"][:-1]), 'lengths must match'),
    "x float32": (dict(G, x=G["x"].astype(np.float32)), 'uint8'),
    "y float": (dict(G, y=G["y"].astype(np.float64)), 'integer'),
    "x 5-D": (dict(G, x=G["x"][..., None]), 'shape'),
    "x 2-D": (dict(G, x=G["x"].reshape(N_TRAIN, -1)), 'shape'),
    "x empty": (dict(G, x=G["x"][:0], y=G["y"][:0]), 'no images'),
    "negative label": (dict(G, y=np.where(np.arange(N_TRAIN) == 3, -1, G["y"])), 'negative label'),
    "x_test without y_test": ({k: v for k, v in G.items() if k != "y_test"}, 'together'),
    "x_test other size": (dict(G, x_test=np.zeros((8, 9, 9, 1), np.uint8)), 'x_test'),
    "y_test mismatched": (dict(G, y_test=G["y_test"][:3]), 'y_test'),
    "classes not strings": (dict(G, classes=np.arange(4)), 'classes'),
    "labels beyond classes": (dict(G, classes=np.array(["a", "b"])), '2 classes'),
    "x_unlabeled other size": (dict(G, x_unlabeled=np.zeros((5, 4, 4, 1), np.uint8)), 'x_unlabeled'),
    "flip not bool": (dict(G, flip=np.array([1.5])), 'flip'),
    "unknown key": (dict(G, labels=G["y"]), "'labels'"),
    "missing y": ({k: v for k, v in G.items() if k != "y"}, "missing ['y']"),
}


@pytest.mark.parametrize("case", sorted(NPZ_CASES))
def test_bad_npz_names_the_fault(case, capsys, tmp_path):
    arrays, needle = NPZ_CASES[case]
    assert needle in train_rejects([], capsys, tmp_path, _npz(tmp_path / "bad.npz", **arrays))


def test_npz_special_files(capsys, tmp_path):
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([object()] * 3, dtype=object), y=np.arange(3))
    notzip = tmp_path / "notzip.npz"
    notzip.write_bytes(b"PK\x03\x04 definitely not a zip")
    two = tmp_path / "two"
    two.mkdir()
    _npz(two / "a.npz", **G)
    _npz(two / "b.npz", **G)
    for path in (obj, notzip, tmp_path / "missing.npz"):
        train_rejects([], capsys, tmp_path, path)
    train_rejects([f"data_dir={two}"], capsys, tmp_path, extra=["dataset=npz"])


def _labels_11() -> bytes:
    return gzip.compress(idx_bytes(np.full(40, 11)))


MNIST_CASES = {
    "truncated images": ({IDX[0]: idx_bytes(np.zeros((40, 28, 28)))[:-100]}, 'truncated'),
    "wrong magic": ({IDX[0]: b"\x00\x00\x09\x99" + idx_bytes(np.zeros((40, 28, 28)))[4:]}, 'magic 00000999'),
    "labels given as images": ({IDX[1]: idx_bytes(np.zeros((40, 28, 28)))}, 'not an IDX labels file'),
    "corrupt gzip": ({IDX[0] + ".gz": gzip.compress(idx_bytes(np.zeros((40, 28, 28))))[:-30]}, 'cannot read IDX'),
    "empty file": ({IDX[2]: b""}, 't10k-images'),
    "count mismatch": ({IDX[1]: idx_bytes(np.arange(39) % 10)}, '39 labels'),
    "label out of range": ({IDX[1] + ".gz": _labels_11()}, '11..11'),
}


@pytest.mark.parametrize("case", sorted(MNIST_CASES))
def test_bad_idx_names_the_fault(case, capsys, tmp_path):
    spoil, needle = MNIST_CASES[case]
    d = write_mnist(tmp_path / "mnist", spoil)
    assert needle in train_rejects(["dataset=mnist", f"data_dir={d}", "num_labels=10"], capsys, tmp_path)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


CIFAR_CASES = {       # name: (spoiled files, what the one line must name)
    "missing labels": ({"data_batch_3": {b"data": np.zeros((8, 3072), np.uint8)}}, "no key 'labels'"),
    "missing data": ({"test_batch": {b"labels": [1, 2]}}, "no key 'data'"),
    "data wrong shape": ({"data_batch_1": {b"data": np.zeros((8, 1024), np.uint8), b"labels": [0] * 8}}, '(8, 1024)'),
    "data float": ({"data_batch_1": {b"data": np.zeros((8, 3072), np.float32), b"labels": [0] * 8}}, 'float32'),
    "labels length": ({"data_batch_2": {b"data": np.zeros((8, 3072), np.uint8), b"labels": [0] * 7}}, '7 labels'),
    "labels not ints": ({"data_batch_2": {b"data": np.zeros((8, 3072), np.uint8), b"labels": ["a"] * 8}},
                        'list of integers'),
    "label out of range": ({"data_batch_2": {b"data": np.zeros((8, 3072), np.uint8), b"labels": [10] * 8}}, '0..10'),
    "a list": ({"data_batch_5": [1, 2, 3]}, 'holds a list'),
    "code in pickle": ({"data_batch_1": pickle.dumps({b"data": _Evil(), b"labels": [0]}, protocol=2)}, 'not allowed'),
    "garbage": ({"test_batch": b"\x80\x02garbage"}, 'test_batch'),
    "truncated": ({"data_batch_1": pickle.dumps({b"data": np.zeros((8, 3072), np.uint8), b"labels": [0] * 8})[:500]},
                  'data_batch_1'),
}


@pytest.mark.parametrize("case", sorted(CIFAR_CASES))
def test_bad_cifar_names_the_fault_and_runs_no_pickled_code(case, capsys, tmp_path):
    spoil, needle = CIFAR_CASES[case]
    d = write_cifar10(tmp_path / "c10", spoil)
    assert needle in train_rejects(["dataset=cifar10", f"data_dir={d}", "num_labels=10"], capsys, tmp_path)
    assert "this must never run" not in capsys.readouterr().out


def test_cifar100_without_fine_labels_is_named(capsys, tmp_path):
    d = tmp_path / "c100"
    d.mkdir()
    for name in ("train", "test"):
        (d / name).write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"coarse_labels": [0] * 4}))
    assert "fine_labels" in train_rejects(["dataset=cifar100", f"data_dir={d}", "num_labels=100"], capsys, tmp_path)


SVHN_CASES = {       # name: (spoiled files, what the one line must name)
    "no X": ({"y": np.ones((20, 1))}, "no variable 'X'"),
    "no y": ({"X": np.zeros((32, 32, 3, 20), np.uint8)}, "no variable 'y'"),
    "X float": ({"X": np.zeros((32, 32, 3, 20)), "y": np.ones((20, 1))}, 'float64'),
    "X 3-D": ({"X": np.zeros((32, 32, 20), np.uint8), "y": np.ones((20, 1))}, '(32, 32, 20)'),
    "y out of range": ({"X": np.zeros((32, 32, 3, 20), np.uint8), "y": np.full((20, 1), 11)}, '0..10'),
    "y count": ({"X": np.zeros((32, 32, 3, 20), np.uint8), "y": np.ones((19, 1))}, '(19,)'),
    "not a mat file": (b"MATLAB 5.0 MAT-file, but nothing else", 'cannot read .mat'),
}


@pytest.mark.parametrize("case", sorted(SVHN_CASES))
def test_bad_svhn_names_the_fault(case, capsys, tmp_path):
    spoil, needle = SVHN_CASES[case]
    d = write_svhn(tmp_path / "svhn", spoil)
    assert needle in train_rejects(["dataset=svhn", f"data_dir={d}", "num_labels=10"], capsys, tmp_path)


@pytest.mark.parametrize("spoil, needle", [
    ("text-as-png", "9.png"), ("only-text-files", "holds no images"), ("mixed-sizes", "differ in size"),
    ("truncated-png", "0.png"), ("no-val", "no val/"), ("unknown-val-class", "cow"), ("no-train", "no train/"),
])
def test_bad_image_folder_names_the_fault(spoil, needle, capsys, tmp_path):
    root = write_folder(tmp_path / "imgs", spoil)
    assert needle in train_rejects(["dataset=folder", f"data_dir={root}", "num_labels=4"], capsys, tmp_path)


def test_valid_files_of_each_format_train(capsys, tmp_path):
    for overrides in ([f"dataset={_npz(tmp_path / 'v.npz', **G)}"],
                      ["dataset=mnist", f"data_dir={write_mnist(tmp_path / 'mnist')}", "num_labels=10"],
                      ["dataset=cifar10", f"data_dir={write_cifar10(tmp_path / 'c10')}", "num_labels=10"],
                      ["dataset=svhn", f"data_dir={write_svhn(tmp_path / 'svhn')}", "num_labels=10"],
                      ["dataset=folder", f"data_dir={write_folder(tmp_path / 'imgs', 'none')}", "num_labels=4"]):
        out = fresh(tmp_path)
        assert main(BASE + overrides + ["--out", str(out)]) == 0, capsys.readouterr().err
        assert (out / "results.json").exists()


def test_folder_without_data_dir_asks_for_it(capsys, tmp_path):
    assert "data_dir" in train_rejects(["dataset=folder"], capsys, tmp_path)


# generated: random bytes, and valid files cut short at a random length, in each format

def _valid_file(fmt: str, tmp: Path) -> tuple[bytes, str]:
    """(the bytes of one valid file, its name) for a format."""
    if fmt == "npz":
        p = _npz(tmp / "v.npz", **G)
        return p.read_bytes(), "v.npz"
    if fmt == "idx-gz":
        return gzip.compress(idx_bytes(np.zeros((40, 28, 28)))), IDX[0] + ".gz"
    if fmt == "idx":
        return idx_bytes(np.zeros((40, 28, 28))), IDX[0]
    if fmt == "cifar":
        return pickle.dumps({b"data": np.zeros((8, 3072), np.uint8), b"labels": [0] * 8}, protocol=2), "data_batch_1"
    if fmt == "mat":
        d = write_svhn(tmp / "svhn-valid")
        return (d / "train_32x32.mat").read_bytes(), "train_32x32.mat"
    raise AssertionError(fmt)


def _place(fmt: str, raw: bytes, name: str, tmp: Path) -> list[str]:
    """Write `raw` as the one bad file of a data set of format `fmt`; the overrides that load it."""
    d = tmp / f"data{next(_fresh)}"
    if fmt == "npz":
        d.mkdir()
        (d / name).write_bytes(raw)
        return [f"dataset={d / name}"]
    if fmt.startswith("idx"):
        write_mnist(d, {name: raw})
        return ["dataset=mnist", f"data_dir={d}", "num_labels=10"]
    if fmt == "cifar":
        write_cifar10(d, {name: raw})
        return ["dataset=cifar10", f"data_dir={d}", "num_labels=10"]
    write_svhn(d, raw)
    return ["dataset=svhn", f"data_dir={d}", "num_labels=10"]


FORMATS = ["npz", "idx-gz", "idx", "cifar", "mat"]


@SETTINGS
@given(fmt=st.sampled_from(FORMATS), raw=st.binary(max_size=300))
def test_random_bytes_as_data_files(fmt, raw, capsys, tmp_path):
    _, name = _valid_file(fmt, tmp_path)
    train_rejects(_place(fmt, raw, name, tmp_path), capsys, tmp_path)


@settings(SETTINGS, max_examples=25)
@given(fmt=st.sampled_from(FORMATS), frac=st.floats(min_value=0.0, max_value=1.0, exclude_max=True))
def test_truncated_data_files(fmt, frac, capsys, tmp_path):
    raw, name = _valid_file(fmt, tmp_path)
    cut = int(frac * len(raw))
    train_rejects(_place(fmt, raw[:cut], name, tmp_path), capsys, tmp_path)


# ----------------------------------------------------------------------------- real processes

@pytest.mark.parametrize("args", [["lr=-1"], ["dataset=/no/such/data.npz"], ["num_labels=7"]])
def test_a_real_process_exits_2_with_one_line_and_no_traceback(args, good_npz, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "metassl"] + BASE + [f"dataset={good_npz}"] + args + ["--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = p.stderr.splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("metassl: error: "), p.stderr
    assert "Traceback" not in p.stderr and not out.exists()
