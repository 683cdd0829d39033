"""metassl's FixMatch / FlexMatch / supervised under the peer protocol (runs in the project's .venv).

    .venv/bin/python benchmarks/peers/metassl_run.py --algorithm fixmatch --iterations 200 \
        --split runs/x/split.json --out /tmp/metassl.json [--src DIR]

matched: the fmnist-1000 preset with the shared protocol of common.MATCHED (constant lr 0.03, no warm-up,
no consistency ramp, no labeled-only warm-up, 64 + 64). defaults: the documented recipe, `--preset
fmnist-1000 algorithm=... iterations=N` (cosine lr 0.05 with 200 warm-up its, an 800-it labeled-only
warm-up, a 100-it consistency ramp). `--algorithm recipe` (defaults only) is the job `make run` ships:
the preset as it is, its own algorithm and iteration count (`--iterations` is then ignored). Timing as for the peers: the training loop only. The trainer's
set-up, evaluation and checkpoint writes are timed by wrapping metassl.train's module functions and
subtracted from the whole call (wall and process CPU); metassl's own `train_seconds` is kept beside it.
`--src` puts a snapshot of metassl's sources (e.g. `git archive HEAD src`) first on sys.path.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import MATCHED, Meter, load_split, peer_args, write_result  # noqa: E402


def main() -> None:
    a = peer_args(["fixmatch", "flexmatch", "freematch", "supervised", "recipe"], "split.json to check metassl's own split against",
                  [("--src", "directory holding the metassl package to import (default: the installed one)"),
                   ("--run-dir", "metassl's run directory (default: OUT without .json)"),
                   ("--amp", "true: amp=true (bf16 autocast where the CPU has bf16 units); default false")])
    if a.src:
        sys.path.insert(0, a.src)
    import metassl
    import metassl.train as T
    from metassl.algorithms import build_config
    from metassl.schedule import images_seen

    recipe = a.algorithm == "recipe"
    if recipe and a.setting != "defaults":
        raise SystemExit("--algorithm recipe is the shipped preset: --setting defaults only")
    N = build_config("fmnist-1000").iterations if recipe else a.iterations
    amp = a.amp == "true"
    over = [f"seed={a.seed}", f"threads={a.threads}", "device=cpu", f"amp={str(amp).lower()}"]
    if not recipe:
        over += [f"algorithm={a.algorithm}", f"iterations={N}", f"eval_every={N}", f"checkpoint_every={N}",
                 f"log_every={min(50, N)}"]
    if a.setting == "matched":
        m = MATCHED
        over += [f"batch_size={m['batch_size']}", f"unlabeled_batch_size={m['unlabeled_batch_size']}",
                 f"lr={m['lr']}", f"momentum={m['momentum']}", "nesterov=false", f"weight_decay={m['weight_decay']}",
                 "lr_schedule=constant", "warmup=0", "consistency_rampup=0", "labeled_warmup=0", "ema=0",
                 f"translate={m['translate']}", "pad_mode=reflect"]
        over += {"fixmatch": [f"fixmatch_threshold={m['threshold']}", f"fixmatch_weight={m['lambda_u']}"],
                 "flexmatch": [f"flexmatch_threshold={m['threshold']}", f"flexmatch_weight={m['lambda_u']}"],
                 "freematch": [f"freematch_weight={m['lambda_u']}", "freematch_fairness_weight=0.001",
                               "freematch_ema=0.999"]}.get(a.algorithm, [])   # a key the algorithm does not read is refused
    cfg = build_config("fmnist-1000", None, over)

    excluded = Meter()                                    # set-up, evaluation, checkpoints: not the loop
    for name in ("setup", "evaluate", "save"):
        fn = getattr(T, name)

        def timed(*args, _fn=fn, **kwargs):
            with excluded:
                return _fn(*args, **kwargs)
        setattr(T, name, timed)

    run_dir = Path(a.run_dir) if a.run_dir else Path(a.out).with_suffix("")
    total = Meter()
    with total:
        res = T.train(cfg, run_dir, force=True, quiet=True)
    lab, _, digest = load_split(run_dir / "split.json")
    _, _, wanted = load_split(a.split)
    assert digest == wanted, f"metassl's split {digest[:12]} differs from {a.split} ({wanted[:12]})"
    for f in run_dir.glob("*.pt"):                        # checkpoints: not needed, keep the results small
        f.unlink()
    name = f"metassl {metassl.__version__}" if hasattr(metassl, "__version__") else "metassl"
    write_result(a.out, toolkit=name + (f" ({res['precision']})" if amp else ""),
                 algorithm=a.algorithm, recipe_algorithm=cfg.algorithm if recipe else None, setting=a.setting,
                 seed=a.seed, iterations=N,
                 images=images_seen(N, cfg, cfg.algorithm != "supervised"),
                 train_wall_s=total.wall - excluded.wall, train_cpu_s=total.cpu - excluded.cpu,
                 metassl_train_seconds=res["train_seconds"], test_error=res["test_error"], split_digest=digest,
                 evaluated=res["evaluated"], config=json.loads((run_dir / "config.json").read_text()))


if __name__ == "__main__":
    main()
