"""Configuration: precedence command line > config file > preset > defaults; one-line errors."""
import pytest

from metassl.config import PRESETS, Config, build_config, coerce, from_dict, to_dict
from metassl.errors import UserError


def test_precedence_command_line_over_file_over_preset_over_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.2\nbatch_size: 16\nseed: 5\n")
    cfg = build_config("cifar10-4000", str(f), ["seed=9"])
    assert cfg.seed == 9                       # command line beats file
    assert cfg.lr == 0.2 and cfg.batch_size == 16   # file beats preset (0.1, 128)
    assert cfg.weight_decay == PRESETS["cifar10-4000"]["weight_decay"]   # preset beats defaults
    assert cfg.ema == Config().ema             # defaults fill the rest


def test_overrides_are_typed():
    cfg = build_config(None, None, ["iterations=200", "lr=1e-2", "nesterov=true", "device=cpu"])
    assert cfg.iterations == 200 and isinstance(cfg.iterations, int)
    assert cfg.lr == 0.01 and cfg.nesterov is True and cfg.device == "cpu"


def test_unlabeled_batch_size_defaults_to_batch_size():
    assert build_config(None, None, ["batch_size=32"]).unlabeled_batch_size == 32


@pytest.mark.parametrize("override, needle", [
    ("lr=-1", "lr"), ("lr=0", "lr"), ("batch_size=0", "batch_size"), ("eps_scale=0", "eps_scale"),
    ("mixup_gamma=0", "mixup_gamma"), ("iterations=abc", "iterations"), ("lr=fast", "lr"),
    ("algorithm=nope", "algorithm"), ("model=vgg99", "model"), ("nesterov=maybe", "nesterov"),
    ("lerning_rate=0.1", "lerning_rate"), ("meta_method=sgd", "meta_method"), ("lr=nan", "lr"),
    ("device=tpu", "device"), ("lr_schedule=step", "lr_steps"), ("iterations", "key=value"),
])
def test_bad_override_gives_one_line_naming_the_key(override, needle):
    with pytest.raises(UserError) as e:
        build_config(None, None, [override])
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_unknown_key_suggests_the_close_one():
    with pytest.raises(UserError, match="did you mean lr"):
        coerce("lrr", "0.1")


def test_unknown_preset_lists_presets():
    with pytest.raises(UserError, match="fmnist-1000"):
        build_config("imagenet-1pct")


def test_bad_config_file_is_one_line(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: [1, 2\n")
    with pytest.raises(UserError) as e:
        build_config(None, str(f))
    assert "\n" not in str(e.value)
    f.write_text("- just\n- a list\n")
    with pytest.raises(UserError, match="mapping"):
        build_config(None, str(f))


def test_every_preset_is_valid():
    for name in PRESETS:
        build_config(name)


def test_saved_config_round_trips():
    cfg = build_config("fmnist-1000", None, ["seed=3"])
    assert from_dict(to_dict(cfg)) == cfg
