"""Command line: `metassl train | compare | eval | predict | export | presets | check | algorithms | bench | tune
| plot | tsne`.

    metassl train --preset fmnist-1000 iterations=200 device=cpu --out runs/quick
    metassl train dataset=mine.npz num_labels=200 time_limit=10m
    metassl compare dataset=mine.npz num_labels=200 time_limit=2m
    metassl train --resume runs/quick
    metassl eval runs/quick
    metassl check --model convlarge --json
    metassl bench fmnist-1000 --quick
    metassl tune fmnist-1000 --algorithm fixmatch      (then: metassl bench fmnist-1000 --tuned)
    metassl plot runs/quick runs/other --out plots/
    metassl predict runs/quick images/ --out predictions.csv
    metassl export runs/quick --out quick.pt2

Bad input prints one line `metassl: error: ...` and exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .config import Config
from .errors import Interrupted, UserError, one_line
from .run.rundir import RunDir


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line and exit 2 like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see `{self.prog} --help`)")


def _default_out(cfg, preset: str | None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{preset or cfg.dataset}-{cfg.algorithm}-s{cfg.seed}-{stamp}"


def cmd_train(args: argparse.Namespace) -> int:
    from .algorithms import build_config      # the preset's keys the algorithm does not read dropped
    from .config import describe_keys
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
    res = train(cfg, run_dir, resume=bool(args.resume), force=args.force, quiet=args.quiet)
    print(f"{res['algorithm']} on {res['dataset']} ({res['num_labels']} labels, {res['model']}): "
          f"test error {res['test_error']:.2f}% (median of last 5 evals {res['test_error_median_last5']:.2f}%), "
          f"{res['iterations']} iterations in {res['wall_seconds']:.0f} s, {res['images_per_second']:.0f} img/s "
          f"-> {run_dir}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .inference.evaluate import evaluate_run

    res = evaluate_run(Path(args.run_dir), device=args.device)
    print(json.dumps(res) if args.json else f"{args.run_dir}: test error {res['test_error']:.2f}% "
          f"({res['evaluated']} weights, iteration {res['iteration']})")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from .presets import PRESETS

    import textwrap

    for name, values in PRESETS.items():
        text = " ".join(f"{k}={v}" for k, v in values.items())
        print(textwrap.fill(text, 110, initial_indent=f"{name:16s} ", subsequent_indent=" " * 17))
    return 0


def cmd_algorithms(args: argparse.Namespace) -> int:
    from .algorithms import ALGORITHMS

    import textwrap

    for name, cls in sorted(ALGORITHMS.items()):
        doc = (cls.__doc__ or sys.modules[cls.__module__].__doc__ or "").strip().split("\n\n")[0]
        print(textwrap.fill(" ".join(doc.split()), 110, initial_indent=f"{name:18s} ", subsequent_indent=" " * 19))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .diagnostics.check import check_model, check_run, format_check
    from .models import model_names

    if args.run:
        res = check_run(args.run, batch=args.batch, eps_scale=args.eps_scale)
        print(json.dumps(res) if args.json else format_check(res))
        return 0
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


def cmd_bench(args: argparse.Namespace) -> int:
    from .config import parse_overrides
    from .experiments.bench import run_bench
    from .experiments.suites import default_out
    from .experiments.tune import TUNED_DIR

    seeds = parse_seeds(args.seeds if args.seeds is not None else ("0" if args.quick else "0,1,2"))
    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()] if args.algorithms else None
    tuned_dir = (args.tuned_dir or TUNED_DIR) if args.tuned or args.tuned_dir else None
    out = args.out or default_out(args.suite, args.quick, bool(tuned_dir))
    rows = run_bench(args.suite, seeds=seeds, algorithms=algorithms, quick=args.quick, out=out,
                     overrides=parse_overrides(args.overrides), quiet=not args.progress, tuned_dir=tuned_dir,
                     raw_weights=args.raw_weights)
    print(f"{len(rows)} runs; tables in {out}/summary.md, rows in {out}/summary.csv")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from .experiments.compare import run_compare

    algorithms = [a.strip() for a in args.algorithms.split(",") if a.strip()] if args.algorithms else None
    rec = run_compare(args.overrides, algorithms=algorithms, seeds=parse_seeds(args.seeds or "0,1,2"), out=args.out,
                      quiet=not args.progress)
    print(rec["table"])
    print("\n".join(rec["verdicts"]))
    return 0


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' -> [0, 1, 2], or a one-line UserError."""
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds {text!r} is not allowed; give comma-separated integers, e.g. 0,1,2") from None


def cmd_tune(args: argparse.Namespace) -> int:
    from .config import parse_overrides
    from .experiments.tune import run_tune

    res = run_tune(args.suite, args.algorithm, trials=args.trials, eta=args.eta, iterations=args.iterations,
                   num_val=args.num_val, seed=args.seed, out=args.out, tuned_dir=args.tuned_dir,
                   overrides=parse_overrides(args.overrides), quiet=not args.progress)
    print(f"{args.algorithm} on {args.suite}: trial {res['chosen_trial']} of {res['budget']['trials']}, val error "
          f"{res['val_error']:.2f}%: " + " ".join(f"{k}={v}" for k, v in res["values"].items()))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from .diagnostics.plot import plot_runs

    for path in plot_runs(args.run_dirs, args.out):
        print(path)
    return 0


def cmd_tsne(args: argparse.Namespace) -> int:
    from .diagnostics.tsne import plot_tsne

    print(plot_tsne(args.run_dir, args.out, n=args.n, device=args.device))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference.predict import predict, write_csv

    names, probs, classes = predict(args.run_dir, args.input, device=args.device)
    write_csv(names, probs, classes, args.out)
    if args.out:
        print(f"{len(names)} predictions -> {args.out}", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from .inference.predict import load

    print(f"torch.export program, uint8 (N, C, H, W) images in, logits out -> "
          f"{load(args.run_dir, 'cpu').export(args.out)}")
    return 0


def cmd_bench_step(args: argparse.Namespace) -> int:
    from .algorithms import ALGORITHMS
    from .experiments.step import VARIANTS, bench_step, format_table

    variants = [v.strip() for v in args.variants.split(",")] if args.variants else None
    for v in variants or []:
        if v not in VARIANTS and v not in ALGORITHMS:
            raise UserError(f"--variants: unknown variant {v!r}; choose from: {', '.join(VARIANTS)} or an algorithm "
                            f"({', '.join(sorted(ALGORITHMS))})")
    res = bench_step(args.model, args.batch, args.device, args.repeat, variants, channels_last=not args.no_channels_last,
                     memory=not args.no_memory, amp=args.amp)
    print(json.dumps(res) if args.json else format_table(res))
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

    b = sub.add_parser("bench-step", help="time one training step per variant (interleaved, one process)")
    b.add_argument("--model", default="cnn")
    b.add_argument("--batch", type=int, default=64, help="labeled = unlabeled batch size")
    b.add_argument("--device", default="cpu")
    b.add_argument("--repeat", type=int, default=10)
    b.add_argument("--variants", help="comma-separated variants or registered algorithms (e.g. fixmatch)")
    b.add_argument("--no-channels-last", action="store_true")
    b.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    b.add_argument("--amp", action="store_true", help="bf16 autocast around the step (memory measured without it)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=cmd_bench_step)

    c = sub.add_parser("check", help="how well fd and jvp meta-gradients agree with exact for a backbone")
    c.add_argument("--model", help="backbone name (default: every registered backbone)")
    c.add_argument("--run", metavar="RUN_DIR", help="check a trained run's model on its own test images instead")
    c.add_argument("--batch", type=int, default=8)
    c.add_argument("--eps-scale", type=float, default=Config.eps_scale, help="fd step (default: the config's eps_scale)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_check)

    b = sub.add_parser("bench", help="every algorithm under one protocol; comparison, ablation and cost tables")
    b.add_argument("suite", help="fmnist-1000 | fmnist-100")
    b.add_argument("overrides", nargs="*", metavar="key=value", help="change the protocol for every run, e.g. device=cuda")
    b.add_argument("--seeds", help="comma-separated run (= split) seeds (default 0,1,2; 0 with --quick)")
    b.add_argument("--algorithms", help="comma-separated algorithms (default: all; vat-ent = vat with vat_entmin)")
    b.add_argument("--quick", action="store_true", help="small budget, a smoke run of the whole bench (~10 min on 2 cores)")
    b.add_argument("--out", help="bench directory (default runs/bench/<suite>[-quick]); re-run to finish a bench")
    b.add_argument("--progress", action="store_true", help="show each run's progress line")
    b.add_argument("--tuned", action="store_true", help="apply the committed `metassl tune` choices (src/metassl/experiments/tuned/)")
    b.add_argument("--tuned-dir", help="apply the tuned files of this folder instead (<suite>/<entry>.yaml)")
    b.add_argument("--raw-weights", action="store_true", help="report the raw weights of runs that also evaluated "
                                                               "an EMA (ema > 0), e.g. when validation says EMA does not pay")
    b.set_defaults(func=cmd_bench)

    co = sub.add_parser("compare", help="did the unlabeled images help? the labels alone against SSL algorithms on "
                                        "your data under one time_limit, seeds paired; table, verdict, CSV/JSON, plots")
    co.add_argument("overrides", nargs="*", metavar="key=value", help="your data and budget, e.g. dataset=mine.npz "
                                                                      "num_labels=200 time_limit=2m")
    co.add_argument("--algorithms", help="comma-separated algorithms to set against the labels alone (default: the "
                                         "default algorithm)")
    co.add_argument("--seeds", help="comma-separated seeds, each a labeled split shared by every algorithm (default 0,1,2)")
    co.add_argument("--out", help="compare directory (default runs/compare/<data>-<labels>-<budget>); re-run to finish")
    co.add_argument("--progress", action="store_true", help="show each run's progress line")
    co.set_defaults(func=cmd_compare)

    from .experiments.tune import BUDGET
    tu = sub.add_parser("tune", help="successive halving over an entry's search space, scored on validation; "
                                     "writes the chosen settings for `bench --tuned`")
    tu.add_argument("suite", help="fmnist-1000 | fmnist-100")
    tu.add_argument("overrides", nargs="*", metavar="key=value", help="protocol changes for every trial, e.g. threads=1")
    tu.add_argument("--algorithm", required=True, help="a bench entry (e.g. fixmatch, vat-ent, metamixup)")
    tu.add_argument("--trials", type=int, default=BUDGET["trials"], help="points sampled (trial 0: the defaults)")
    tu.add_argument("--eta", type=int, default=BUDGET["eta"], help="each rung keeps 1/eta of its trials")
    tu.add_argument("--iterations", type=int, default=BUDGET["iterations"], help="iterations of the last rung")
    tu.add_argument("--num-val", type=int, default=BUDGET["num_val"], help="validation images held out of training")
    tu.add_argument("--seed", type=int, default=0, help="run and split seed of every trial; seeds the sampling")
    tu.add_argument("--out", help="trial runs (default runs/tune/<suite>/<entry>); re-run to finish a tune")
    tu.add_argument("--tuned-dir", help="where the choice is written (default runs/tuned/; apply with bench --tuned-dir)")
    tu.add_argument("--progress", action="store_true", help="show each trial's progress line")
    tu.set_defaults(func=cmd_tune)

    pl = sub.add_parser("plot", help="PNGs of test error, losses and pseudo-label quality of one or more runs")
    pl.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    pl.add_argument("--out", help="output folder (default: the run for one run, plots/ for several)")
    pl.set_defaults(func=cmd_plot)

    f = sub.add_parser("tsne", help="t-SNE of a run's penultimate-layer features of test images")
    f.add_argument("run_dir")
    f.add_argument("--out", help=f"PNG file (default {RunDir('RUN_DIR').tsne_plot})")
    f.add_argument("--n", type=int, default=2000, help="test images in the plot (class-stratified sample)")
    f.add_argument("--device", default="auto")
    f.set_defaults(func=cmd_tsne)

    pr = sub.add_parser("predict", help="CSV of predicted class and probabilities for an .npz or an image folder")
    pr.add_argument("run_dir")
    pr.add_argument("input", help=".npz with key x (uint8 N x H x W [x C]) or a folder of images")
    pr.add_argument("--out", help="CSV file (default: stdout)")
    pr.add_argument("--device", default="auto")
    pr.set_defaults(func=cmd_predict)

    ex = sub.add_parser("export", help="a run as one file torch alone loads (torch.export): uint8 N x C x H x W "
                                       "images in, logits out")
    ex.add_argument("run_dir")
    ex.add_argument("--out", required=True, help="the .pt2 file to write")
    ex.set_defaults(func=cmd_export)
    return p


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Parse with key=value overrides allowed anywhere among the flags (`train --quiet lr=0.1 --out d`)."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv and argv[0] in sub.choices:
        args = sub.choices[argv[0]].parse_intermixed_args(argv[1:])
        args.command = argv[0]
        return args
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse(argv)
        return args.func(args)
    except UserError as e:
        print(f"metassl: error: {one_line(e.cli)}", file=sys.stderr)
        return 2
    except Interrupted as e:                      # SIGINT/SIGTERM: checkpoint written, 128 + signal
        print(f"metassl: {one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("metassl: interrupted", file=sys.stderr)
        return 130
    finally:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:     # under torchrun: leave the process group
            from .run import distributed
            distributed.teardown()


if __name__ == "__main__":
    sys.exit(main())
