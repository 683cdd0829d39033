"""No config key is silently ignored: each algorithm declares the algorithm-specific keys it reads (`keys`), and
build_algorithm refuses any other one set away from its default, whatever its value, in one line naming the
algorithms that read it; a preset's values of keys the chosen algorithm does not read fall back to the defaults,
so presets, bench entries and their tuned values still build with every algorithm they name, and so do saved
configs of older runs that kept them."""
import dataclasses
import json

import pytest

import metassl
from metassl.cli import main
from metassl.experiments import suites, tune
from metassl.algorithms import ALGORITHMS, build_algorithm, build_config, without_unread
from metassl.config import CHOICES, FIELDS, Config, coerce, from_dict, to_dict
from metassl.presets import PRESETS
from metassl.errors import UserError
from tests.conftest import write_tiny_npz

# w(t) and the labeled-only warm-up: the trainer's, read by every algorithm with an unlabeled loss
GENERIC = ("consistency_weight", "consistency_rampup", "labeled_warmup")
DECLARED = {k for cls in ALGORITHMS.values() for k in cls.keys}


def algorithm_section() -> set[str]:
    """config.py's algorithm keys: meta_method up to the optimisation section, less GENERIC, plus torchrun's meta_scope."""
    names = list(FIELDS)
    return set(names[names.index("meta_method"):names.index("iterations")]) - set(GENERIC) | {"meta_scope"}


def other_value(key: str):
    """A valid value of `key` other than its default (for every key, together: kl for both consistency and meta_phi)."""
    default = FIELDS[key].default
    if isinstance(default, bool):
        return not default
    if key in CHOICES:
        return next(c for c in CHOICES[key] if c != default)
    if isinstance(default, int):
        return default + 1
    return default / 2 if default else 0.2


def test_every_algorithm_key_of_the_config_is_declared_by_an_algorithm():
    assert DECLARED == algorithm_section()


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_algorithm_accepts_the_keys_it_reads_and_refuses_every_other(name):
    own = ALGORITHMS[name].keys
    build_algorithm(Config(algorithm=name, **{k: other_value(k) for k in own}))      # all of its own at once
    for key in sorted(DECLARED - set(own)):
        value = other_value(key)
        with pytest.raises(UserError) as e:
            build_algorithm(Config(algorithm=name, **{key: value}))
        users = ", ".join(n for n, cls in sorted(ALGORITHMS.items()) if key in cls.keys)
        assert str(e.value) == (f"{key}={value!r} is not read by algorithm={name}, only by {users}; "
                                f"drop it or choose one of those")


def test_every_preset_builds_with_every_algorithm_its_unread_keys_at_their_defaults():
    """`--preset cifar10-4000 algorithm=fixmatch` runs: the preset's meta_fused=false is the method's setting, not
    the user's, and falls back to the default where the algorithm does not read it; a key it reads is kept."""
    for preset in PRESETS:
        for name in ALGORITHMS:
            cfg = build_config(preset, overrides=[f"algorithm={name}"])
            build_algorithm(cfg)
            read = "meta_fused" in ALGORITHMS[name].keys
            assert cfg.meta_fused is (PRESETS[preset].get("meta_fused", True) if read else True), (preset, name)
    assert build_config("cifar10-4000", overrides=["algorithm=meta"]).meta_fused is False
    assert build_config("cifar10-4000", overrides=["algorithm=fixmatch"]).meta_fused is True
    assert metassl.build_config is build_config          # the public name merges presets the same way


@pytest.mark.parametrize("preset", [[], ["--preset", "fmnist-1000"]])
def test_an_unread_key_the_user_sets_is_refused_in_one_line_even_at_a_presets_value(preset, tmp_path, capsys):
    """bank_every=400 is the fmnist-1000 run's own round length; set by the user beside fixmatch it is refused all
    the same, before any data is read, and so is the key at its default."""
    for value in ("400", str(FIELDS["bank_every"].default)):
        code = main(["train", *preset, "algorithm=fixmatch", f"bank_every={value}", "device=cpu", "--out",
                     str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert code == 2 and err == (f"metassl: error: bank_every={coerce('bank_every', value)!r} is not read by "
                                     f"algorithm=fixmatch, only by metaselftrain, selftrain; drop it or choose one of "
                                     f"those\n")
    with pytest.raises(UserError, match="^meta_fused=False is not read by algorithm=fixmatch, only by meta, metamixup"):
        build_algorithm(build_config("cifar10-4000", overrides=["algorithm=fixmatch", "meta_fused=false"]))


def test_the_fmnist_preset_runs_with_another_algorithm(tmp_path, capsys):
    npz = write_tiny_npz(tmp_path / "tiny.npz")
    code = main(["train", "--preset", "fmnist-1000", "algorithm=fixmatch", f"dataset={npz}", "num_labels=40",
                 "iterations=2", "batch_size=8", "eval_batch_size=64", "device=cpu", "threads=1", "--quiet",
                 "--out", str(tmp_path / "run")])
    assert code == 0, capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["algorithm"] == "fixmatch" and saved["bank_every"] == without_unread(from_dict(saved)).bank_every


def test_a_saved_config_that_kept_its_presets_unread_keys_resumes():
    """Older bench runs saved fixmatch with fmnist-1000's bank_every=400 at 400 iterations: loaded through
    without_unread (as the trainer and the bench do) it builds, and only unread keys changed."""
    old = dataclasses.replace(Config(algorithm="fixmatch", iterations=400).resolved(), bank_every=400, bank_meta="weights")
    with pytest.raises(UserError, match="^bank_every=400 is not read"):
        build_algorithm(old)
    fixed = without_unread(from_dict(to_dict(old)))
    build_algorithm(fixed)
    changed = {k for k in FIELDS if getattr(fixed, k) != getattr(old, k)}
    assert changed == {"bank_every", "bank_meta"}


@pytest.mark.parametrize("suite", sorted(suites.SUITES))
def test_every_bench_entry_builds_with_and_without_its_tuned_values(suite):
    for name in [*suites.COMPARISON, *suites.ABLATION, *suites.ENTRIES]:
        for quick in (True, False):
            build_algorithm(suites.run_config(suite, name, 0, quick=quick))
        if (tune.TUNED_DIR / suite / f"{name}.yaml").exists():
            tuned = tune.bench_values(tune.load_tuned(suite, name), suites.FULL["iterations"])
            build_algorithm(suites.run_config(suite, name, 0, tuned=tuned))
