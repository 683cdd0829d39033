"""No config key is silently ignored: each algorithm declares the algorithm-specific keys it reads (`keys`), and
build_algorithm refuses any other one set away from its default, in one line naming the algorithms that read it;
presets, bench entries and their tuned values still build with every algorithm they name."""
import pytest

from metassl.experiments import suites, tune
from metassl.algorithms import ALGORITHMS, build_algorithm
from metassl.config import CHOICES, FIELDS, PRESETS, Config, build_config
from metassl.errors import UserError

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


def test_a_presets_values_pass_with_every_algorithm_on_its_data_set_only():
    """`--preset cifar10-4000 algorithm=fixmatch` runs (the preset's meta_fused=false is the method's, not the
    user's), on resume too; the same value on the default data set is refused."""
    for preset in PRESETS:
        for name in ALGORITHMS:
            build_algorithm(build_config(preset, overrides=[f"algorithm={name}"]))
    with pytest.raises(UserError, match="^meta_fused=False is not read by algorithm=fixmatch, only by meta, metamixup"):
        build_algorithm(build_config(overrides=["algorithm=fixmatch", "meta_fused=false"]))


@pytest.mark.parametrize("suite", sorted(suites.SUITES))
def test_every_bench_entry_builds_with_and_without_its_tuned_values(suite):
    for name in [*suites.COMPARISON, *suites.ABLATION, *suites.ENTRIES]:
        for quick in (True, False):
            build_algorithm(suites.run_config(suite, name, 0, quick=quick))
        if (tune.TUNED_DIR / suite / f"{name}.yaml").exists():
            tuned = tune.bench_values(tune.load_tuned(suite, name), suites.FULL["iterations"])
            build_algorithm(suites.run_config(suite, name, 0, tuned=tuned))
