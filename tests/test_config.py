"""Configuration: precedence command line > config file > preset > defaults, typed values, presets
applied as written, saved configs round-trip. (Bad settings: test_bad_input.py.)"""
from metassl.config import SCHEDULE, Config, from_dict, to_dict
from metassl.presets import PRESETS
from metassl.algorithms import build_config


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


def test_every_preset_validates_with_each_of_its_values_applied():
    for name, values in PRESETS.items():
        cfg = build_config(name)
        for k, v in values.items():
            if k in SCHEDULE and 0 < v < 1:    # a fraction of the run is that share of its iterations
                assert getattr(cfg, k) == round(v * cfg.iterations), (name, k)
            elif k != "lr_steps":
                assert getattr(cfg, k) == v, (name, k)
        assert cfg.lr_steps == ("300000,350000" if values.get("lr_steps") else ""), name


def test_saved_config_round_trips():
    cfg = build_config("fmnist-1000", None, ["seed=3"])
    assert from_dict(to_dict(cfg)) == cfg
