"""Command line: `metassl train | eval | presets | check | algorithms`.

    metassl train --preset fmnist-1000 iterations=200 device=cpu --out runs/quick
    metassl train --resume runs/quick
    metassl eval runs/quick
    metassl check --model convlarge --json

Bad input prints one line `metassl: error: ...` and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .errors import Interrupted, UserError


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _default_out(cfg, preset: str | None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{preset or cfg.dataset}-{cfg.algorithm}-s{cfg.seed}-{stamp}"


def cmd_train(args: argparse.Namespace) -> int:
    from .config import build_config, describe_keys
    from .train import train

    if args.help_keys:
        print(describe_keys())
        return 0
    if args.resume:
        if args.preset or args.config or args.overrides:
            raise UserError("--resume continues a run with its saved config; drop --preset/--config/key=value")
        run_dir = Path(args.resume)
        cfg = None
    else:
        cfg = build_config(args.preset, args.config, args.overrides)
        run_dir = Path(args.out) if args.out else _default_out(cfg, args.preset)
    from .config import Config
    res = train(cfg or Config(), run_dir, resume=bool(args.resume), force=args.force, quiet=args.quiet)
    print(f"{res['algorithm']} on {res['dataset']} ({res['num_labels']} labels, {res['model']}): "
          f"test error {res['test_error']:.2f}% (median of last 5 evals {res['test_error_median_last5']:.2f}%), "
          f"{res['iterations']} iterations in {res['wall_seconds']:.0f} s, {res['images_per_second']:.0f} img/s "
          f"-> {run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    res = evaluate_run(Path(args.run_dir), device=args.device)
    print(json.dumps(res) if args.json else f"{args.run_dir}: test error {res['test_error']:.2f}% "
          f"({res['evaluated']} weights, iteration {res['iteration']})")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .config import PRESETS

    for name, values in PRESETS.items():
        keys = ("dataset", "num_labels", "model", "algorithm", "iterations", "batch_size", "lr")
        print(f"{name:16s} " + " ".join(f"{k}={values[k]}" for k in keys if k in values))
    return 0


def cmd_algorithms(args: argparse.Namespace) -> int:
    from .algorithms import ALGORITHMS

    for name, factory in sorted(ALGORITHMS.items()):
        doc = (sys.modules[factory.__module__].__doc__ or "").strip().splitlines()
        print(f"{name:18s} {doc[0] if doc else ''}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .check import check_model, format_check
    from .models import model_names

    names = [args.model] if args.model else [m for m in model_names() if m not in ("wrn-28-8",)]
    for name in names:
        if name not in model_names():
            raise UserError(f"model={name!r} is unknown; choose one of: {', '.join(model_names())}")
    results = [check_model(n, batch=args.batch, eps_scale=args.eps_scale) for n in names]
    if args.json:
        print(json.dumps(results[0] if args.model else results))
    else:
        print("\n".join(format_check(r) for r in results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="metassl", description="Semi-supervised image classification with meta-gradient.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("train", help="train a model (command line > config file > preset > defaults)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. iterations=200 device=cpu")
    t.add_argument("--preset", help="named preset (see `metassl presets`)")
    t.add_argument("--config", help="YAML file of key: value overrides")
    t.add_argument("--out", help="run directory (default runs/<preset>-<algorithm>-s<seed>-<time>)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument("--force", action="store_true", help="overwrite an existing run directory")
    t.add_argument("--quiet", action="store_true", help="no progress line")
    t.add_argument("--help-keys", action="store_true", help="list every config key with its default and meaning")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run's last checkpoint on its test set")
    e.add_argument("run_dir")
    e.add_argument("--device", default="auto")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    sub.add_parser("presets", help="list the presets").set_defaults(func=cmd_presets)
    sub.add_parser("algorithms", help="list the algorithms").set_defaults(func=cmd_algorithms)

    c = sub.add_parser("check", help="how well fd and jvp meta-gradients agree with exact for a backbone")
    c.add_argument("--model", help="backbone name (default: every registered backbone)")
    c.add_argument("--batch", type=int, default=8)
    c.add_argument("--eps-scale", type=float, default=0.01)
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as e:
        print(f"metassl: error: {e}", file=sys.stderr)
        return 2
    except Interrupted as e:                      # SIGINT/SIGTERM: checkpoint written, 128 + signal
        print(f"metassl: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("metassl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
