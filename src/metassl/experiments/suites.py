"""The benchmark's protocol: the suites, the budgets, the entries and their tables' order, and how one run of
it is configured, trained, resumed or skipped (shared by `metassl bench` and `metassl tune`)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..algorithms.base import unread_keys, without_unread
from ..algorithms.metamixup import ROWS
from ..config import Config, to_dict
from ..presets import PRESETS
from ..data import ImageData
from ..errors import UserError
from ..run.rundir import RunDir
from ..train import train

SUITES: dict[str, dict[str, Any]] = {
    "fmnist-1000": dict(dataset="fashion-mnist", num_labels=1000),
    "fmnist-100": dict(dataset="fashion-mnist", num_labels=100),
}
# Time-to-accuracy: each row reports the training seconds to the first evaluation at or below this test error (%).
TARGET_ERROR = {"fmnist-1000": 15.0, "fmnist-100": 25.0}
# Iteration budgets. FULL: sized so that the 14 default entries x 3 seeds of fmnist-1000 fit in ~2 h on
# 2 CPU cores (measured step costs: docs/results/SPEED.md); 5 evaluations per run, the
# fewest that give the median of the last 5; warm-up and consistency ramp 10% of the run, the proportion
# of the calibration runs (200 of 2000). QUICK: a smoke run of the whole pipeline (1 evaluation), not a
# result. eval_batch_size 250 is faster than 1000 on CPU and changes no number.
FULL = dict(iterations=400, eval_every=80, checkpoint_every=80, warmup=40, consistency_rampup=40, eval_batch_size=250,
            labeled_warmup=0)
QUICK = dict(iterations=100, eval_every=100, checkpoint_every=100, warmup=10, consistency_rampup=10, eval_batch_size=250,
             labeled_warmup=0)
# Bench rows that are an algorithm with an option set: name -> (algorithm, config values).
ENTRIES: dict[str, tuple[str, dict[str, Any]]] = {
    "vat-ent": ("vat", {"vat_entmin": True}),
    # the meta-gradient's variants (docs/ALGORITHMS.md, "Meta-gradient variants"): not default entries
    "metamixup-norm": ("metamixup", {"meta_step": "normalised"}),       # fixed-length step rho, not beta*||g||
    "metamixup-holdout": ("metamixup", {"meta_holdout": 0.2}),         # g_l from labels the CE never fits
    "metafixmatch-soft": ("metafixmatch", {"meta_target": "soft"}),     # CE to the corrected y^ itself
    "metafixmatch-norm": ("metafixmatch", {"meta_step": "normalised"}),
    "metafixmatch-plain": ("metafixmatch", {"meta_threshold_on": "plain"}),  # FixMatch's rows, relabelled
    "metaflexmatch-plain": ("metaflexmatch", {"meta_threshold_on": "plain"}),  # FlexMatch's rows, relabelled
}
# Each meta-gradient entry and its twin without the correction (for `mpl`: the labels alone), paired by seed.
META_TWINS = {"meta": "neither", "metamixup": "mixup", "metamixup-norm": "mixup", "metamixup-holdout": "mixup",
              "metafixmatch": "fixmatch", "metafixmatch-soft": "fixmatch", "metafixmatch-norm": "fixmatch",
              "metafixmatch-plain": "fixmatch", "metaflexmatch": "flexmatch", "metaflexmatch-plain": "flexmatch",
              "mpl": "supervised", "metaselftrain": "selftrain"}
# Table rows, in the paper's order: name -> label. Comparison table first, then the ablation rows.
COMPARISON = {
    "supervised": "Supervised (labeled images only)",
    "pimodel": "Pi-model (Laine & Aila 2017)",
    "meanteacher": "Mean Teacher (Tarvainen & Valpola 2017)",
    "vat": "VAT (Miyato et al. 2018)",
    "vat-ent": "VAT+Ent (Miyato et al. 2018)",
    "pseudolabel": "Pseudo-Label (Lee 2013, thresholded)",
    "mixmatch": "MixMatch (Berthelot et al. 2019)",
    "fixmatch": "FixMatch (Sohn et al. 2020)",
    "flexmatch": "FlexMatch (Zhang et al. 2021)",
    "freematch": "FreeMatch (Wang et al. 2023)",
    "softmatch": "SoftMatch (Chen et al. 2023)",
    "metamixup": "Meta-gradient SSL (ours: `metamixup`)",
    "metafixmatch": "MetaFixMatch (future direction)",
    "mpl": "Meta Pseudo Labels (Pham et al. 2021)",
    "selftrain": "Self-training in rounds (a label bank, the twin of `metaselftrain`)",
    "metaselftrain": "Self-training with the meta-gradient label bank (`metaselftrain`, make run's default)",
    "fully-supervised": "Fully supervised (every label; reference)",
}
ABLATION = {name: (row.meta, row.mixup) for name, row in ROWS.items()}   # (meta-gradient, mixup) per row
DEFAULT_ALGORITHMS = [n for n in COMPARISON if n not in ("metamixup", "mpl", "selftrain", "metaselftrain")] + list(ABLATION)
TAIL = 0.2   # "flat at the end": tail_change is the test error's change over the run's last TAIL of iterations


def run_config(suite: str, name: str, seed: int, overrides: dict[str, Any] | None = None, *, quick: bool = False,
               tuned: dict[str, Any] | None = None) -> Config:
    """The resolved config of one run: preset < suite < budget < algorithm < tuned values (`--tuned`) < seed
    < user overrides. The preset's keys the algorithm does not read stay at their defaults (as build_config)."""
    algorithm, extra = ENTRIES.get(name, (name, {}))
    preset = {k: v for k, v in PRESETS["fmnist-1000"].items() if k not in unread_keys(algorithm)}
    values = {**preset, **SUITES[suite], **(QUICK if quick else FULL), **extra, **(tuned or {}),
              "algorithm": algorithm, "seed": seed, "split_seed": seed, **(overrides or {})}
    return Config(**values).resolved()


# Keys that change speed or logging but no result: a re-run bench may differ in them.
NOT_PROTOCOL = ("threads", "data_dir", "log_every", "eval_batch_size")


def check_same(run_dir: Path, cfg: Config) -> None:
    """A run directory may only be reused for the config this bench would run (up to NOT_PROTOCOL keys)."""
    saved_cfg = without_unread(RunDir(run_dir).read_config())     # as the trainer resumes it
    if cfg.time_limit and not saved_cfg.time_limit:       # its budget was fitted: compare at that length
        cfg = cfg.fitted(saved_cfg.iterations)
    saved, wanted = to_dict(saved_cfg), to_dict(cfg)
    diff = [k for k in wanted if k not in NOT_PROTOCOL and saved.get(k) != wanted[k]]
    if diff:
        k = diff[0]
        raise UserError(f"{run_dir} was run with {k}={saved.get(k)!r}, this bench needs {k}={wanted[k]!r}; "
                        f"use another --out (or delete that run)")


def run_one(cfg: Config, run_dir: Path, data: ImageData, quiet: bool) -> tuple[dict[str, Any], str]:
    """Train, resume or skip one run; returns (results, what was done)."""
    run = RunDir(run_dir)
    if run.finished():
        check_same(run_dir, cfg)
        return run.read_results(), "skipped (finished)"
    if run.is_run():
        check_same(run_dir, cfg)
        if run.has_checkpoint():
            return train(cfg, run_dir, data=data, resume=True, quiet=quiet), "resumed"
        return train(cfg, run_dir, data=data, force=True, quiet=quiet), "restarted (no checkpoint yet)"
    return train(cfg, run_dir, data=data, quiet=quiet), "trained"


def default_out(suite: str, quick: bool, tuned: bool) -> Path:
    """Where `metassl bench` writes when no --out is given."""
    return Path("runs") / "bench" / (suite + ("-quick" if quick else "") + ("-tuned" if tuned else ""))
