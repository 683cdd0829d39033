"""User errors: every malformed setting, command line, config file or run directory gives exactly one line
`metassl: error: ...` on stderr and exit status 2, names what is wrong, and leaves no run directory behind
(corrupt data files: test_bad_data_files.py; the shared check: bad_input.py). test_config.py covers how
valid settings combine, test_cli.py the subcommands working end to end.

Everything goes through `metassl.cli.main([...])` (three cases also through a real subprocess) and, where
Python has an entry point (build_config + train, load, predict), through it too: a UserError of one line
that names arguments as Python spells them (resume=True, run_dir, input_path). Part of the matrix is
generated with hypothesis (bounded: few examples, no deadline).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import metassl
from metassl.cli import main
from metassl.config import FIELDS, Config
from metassl.presets import PRESETS
from metassl.algorithms import build_config
from metassl.data import sources
from metassl.inference.predict import predict
from metassl.train import train
from tests.bad_input import (BASE, N_CLASSES, N_TRAIN, SETTINGS, fresh, good_npz, python_rejects,  # noqa: F401
                             rejects, train_rejects)


pytestmark = pytest.mark.usefixtures("isolated")   # conftest.py: no real data, cache, env or network


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
    ("algorithm=metamixup unlabeled_batch_size=3", "unlabeled_batch_size"),   # mixup needs equal batches
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


def test_too_many_labels_blame_validation_only_when_there_is_some(good_npz, capsys, tmp_path):
    """10 images per class: num_labels=400 asks 100 each; 'after validation' only when num_val took some."""
    line = train_rejects(["num_labels=400", "num_val=0"], capsys, tmp_path, good_npz)
    assert "has 10 images, fewer than the 100" in line and "validation" not in line and "num_val" not in line
    line = train_rejects(["num_labels=36", "num_val=8"], capsys, tmp_path, good_npz)
    assert "8 images left after validation (2 per class for num_val=8)" in line and "num_val" in line


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
        (["tsne", str(empty_dir)], "no metassl run"), (["tsne", str(run), "--n", "x"], "--n"),
        (["bench", "nosuch", "--quick"], "nosuch"), (["bench", "fmnist-1000", "--seeds", "a,b"], "--seeds"),
        (["bench-step", "--variants", "nope"], "nope"), (["bench-step", "--model", "vgg"], "vgg"),
    ]
    for argv, needle in cases:
        if argv[:1] == ["train"] and "--resume" not in argv and "--out" not in argv:
            argv = BASE + [f"dataset={good_npz}"] + argv[1:] + ["--out", str(out)]
        line = rejects(argv, capsys, out)
        assert needle in line, f"{argv!r}: {line!r} does not name {needle!r}"
    assert afile.read_text() == "x"


def test_command_line_cases_with_a_python_entry_point_are_refused_there_in_python_words(good_npz, capsys,
                                                                                      tmp_path):
    """One table drives both: the CLI names its flags (--resume, --out, INPUT), Python its arguments."""
    run = _finished_run(tmp_path, good_npz)
    afile, empty, nope, no_images = tmp_path / "a_file", tmp_path / "empty", tmp_path / "nope", tmp_path / "no-images"
    afile.write_text("x")
    empty.mkdir()
    cfg = build_config(None, None, BASE[2:] + [f"dataset={good_npz}"])
    good = BASE + [f"dataset={good_npz}", "--out"]
    cases = [       # (argv, what the CLI line names, the Python call, what its message names)
        (["train", "--resume", str(nope)], ["no metassl run"],
         lambda: train(Config(), nope, resume=True), ["no metassl run"]),
        (["train", "--resume", str(empty)], ["no metassl run"],
         lambda: train(Config(), empty, resume=True), ["no metassl run"]),
        (good + [str(afile)], ["is a file", "another --out"], lambda: train(cfg, afile, quiet=True),
         ["is a file", "another run_dir"]),
        (good + [str(run)], ["--resume", "--force"], lambda: train(cfg, run, quiet=True),
         ["resume=True", "force=True"]),
        (["predict", str(nope), str(empty)], ["no metassl run"], lambda: metassl.load(nope), ["no metassl run"]),
        (["predict", str(run), str(no_images)], ["INPUT", "no-images", "does not exist"],
         lambda: predict(run, no_images, device="cpu"), ["input_path=", "no-images", "does not exist"]),
        (["predict", str(run), str(no_images)], ["INPUT"],
         lambda: metassl.load(run, device="cpu").predict(no_images), ["images=", "no-images", "does not exist"]),
        (["predict", str(run), str(afile)], ["INPUT", "neither"],
         lambda: metassl.load(run, device="cpu").predict_proba(afile), ["images=", "neither"]),
    ]
    for argv, cli_needles, call, py_needles in cases:
        line = rejects(argv, capsys, None)
        msg = str(python_rejects(call))
        assert all(n in line for n in cli_needles), (argv, line)
        assert all(n in msg for n in py_needles), (argv, msg)
    assert afile.read_text() == "x" and not any(empty.iterdir())


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
    msg = str(python_rejects(lambda: train(build_config(None, None, BASE[2:] + [f"dataset={good_npz}"]), run)))
    assert "resume=True" in msg and "force=True" in msg
    python_rejects(lambda: train(build_config(None, None, BASE[2:] + ["dataset=/no/such.npz"]), run, force=True))
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_damaged_run_directories_are_refused_by_resume_and_eval(good_npz, capsys, tmp_path):
    """--resume and eval on a run whose config.json or checkpoints are damaged: one line, nothing changed."""
    run = _finished_run(tmp_path, good_npz)
    capsys.readouterr()
    cfg = (run / "config.json").read_text()
    for text in ("{not json", "[1, 2]", '{"lr": "fast"}', '{"lerning_rate": 1}', "", '{"lr": -1}'):
        (run / "config.json").write_text(text)
        rejects(["train", "--resume", str(run), "--quiet"], capsys, None)
        python_rejects(lambda: train(Config(), run, resume=True, quiet=True))
        if text != '{"lr": -1}':                  # eval and load need no lr: only an unreadable config stops them
            rejects(["eval", str(run), "--device", "cpu"], capsys, None)
            python_rejects(lambda: metassl.load(run, device="cpu"))
    (run / "config.json").write_text(cfg)
    for name in ("last.pt", "prev.pt"):
        (run / name).write_bytes(b"garbage")
    assert "--force" in rejects(["train", "--resume", str(run), "--quiet"], capsys, None)
    assert "force=True" in str(python_rejects(lambda: train(Config(), run, resume=True, quiet=True)))
    rejects(["eval", str(run), "--device", "cpu"], capsys, None)
    python_rejects(lambda: metassl.load(run, device="cpu"))


# ----------------------------------------------------------------------------- real processes

@pytest.mark.parametrize("args", [["lr=-1"], ["dataset=/no/such/data.npz"], ["num_labels=7"]])
def test_a_real_process_exits_2_with_one_line_and_no_traceback(args, good_npz, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "metassl"] + BASE + [f"dataset={good_npz}"] + args + ["--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = p.stderr.splitlines()
    assert p.returncode == 2 and len(lines) == 1 and lines[0].startswith("metassl: error: "), p.stderr
    assert "Traceback" not in p.stderr and not out.exists()
