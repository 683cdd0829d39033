"""Equal tuning for every algorithm (Oliver et al., NeurIPS 2018): successive halving over random samples of
each algorithm's search space, every trial scored on a validation split held out of the training set.

    metassl tune fmnist-1000 --algorithm fixmatch            # 8 trials: 8 x 100, 4 x 200, 2 x 400 iterations
    metassl tune fmnist-100 --algorithm flexmatch threads=1 --out runs/tune/fmnist-100/flexmatch
    metassl bench fmnist-1000 --tuned                        # the bench with every entry's chosen settings

Budget (BUDGET, the same for every entry, the meta-gradient variants included): `trials` points of the
entry's space (trial 0 is its defaults: the paper's values, the bench's lr and ramp; the others are random);
rung i trains its trials from scratch for iterations / eta^(R-1-i) iterations (the bench's protocol,
warm-up 10% of the run, one evaluation at the end) and keeps the 1/eta with the lowest validation error;
the choice is the best trial of the last rung. 8 trials, eta 2, 400 iterations: 8 x 100 + 4 x 200 + 2 x 400
= 2400 iterations, the cost of 6 bench runs. The validation images (`num_val`, class-balanced) are taken
out of the training set before the labeled images are drawn; the test error that every evaluation also
computes is never read here. Runs go to OUT/r<rung>-t<trial>/ (suites.run_one: a finished trial is
skipped, an interrupted one resumed), so re-running the command finishes a tune. The choice is written to
TUNED/<suite>/<entry>.yaml (default runs/tuned/), with the budget, every trial and its validation error;
`metassl bench --tuned-dir runs/tuned` applies its `values` (the ramp as the same fraction of the run), and
`--tuned` the committed choices in experiments/tuned/.
"""
from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..config import FIELDS, Config, coerce
from ..data import load_dataset
from ..errors import UserError
from ..run.files import atomic_write_text
from .suites import ENTRIES, FULL, SUITES, run_config, run_one

TUNED_DIR = Path(__file__).parent / "tuned"   # the committed choices `metassl bench --tuned` applies
TUNE_OUT = Path("runs") / "tuned"             # where `metassl tune` writes its choices unless told


@dataclass(frozen=True)
class Dim:
    """One searched key: uniform (or log-uniform) in [low, high]; per_iteration: a fraction of the run's
    iterations (a ramp), stored in the config as iterations."""

    low: float
    high: float
    log: bool = False
    per_iteration: bool = False
    when: tuple[str, str] | None = None   # (key, value): searched only where the entry's config has key=value

    def sample(self, rng: random.Random) -> float:
        if self.log:
            return float(f"{self.low * (self.high / self.low) ** rng.random():.3g}")
        return float(f"{self.low + (self.high - self.low) * rng.random():.3g}")

    def describe(self) -> str:
        kind = "log-uniform" if self.log else "uniform"
        return f"{kind} {self.low:g}..{self.high:g}" + (" x iterations" if self.per_iteration else "")


# The shared keys: the learning rate and the ramp of the unlabeled-loss weight (0 to half the run).
LR = {"lr": Dim(0.01, 0.2, log=True)}
RAMP = {"consistency_rampup": Dim(0.0, 0.5, per_iteration=True)}


def _ssl(**dims: Dim) -> dict[str, Dim]:
    """lr, ramp, then the entry's own unlabeled-loss weight and threshold / temperature (or what plays its part)."""
    return {**LR, **RAMP, **dims}


WEIGHT_0_1_TO_10 = Dim(0.1, 10.0, log=True)     # around a paper's weight of 1
# the correction's step size: beta under the paper's step, rho (a length on the simplex) under meta_step=normalised;
# a dim whose variant is off draws nothing, so the entries' default spaces (and committed tunes) are unchanged
BETA = Dim(0.1, 10.0, log=True, when=("meta_step", "lr"))
RHO = Dim(0.02, 1.0, log=True, when=("meta_step", "normalised"))
SPACES: dict[str, dict[str, Dim]] = {
    "supervised": dict(LR),
    "fully-supervised": dict(LR),
    "pimodel": _ssl(pimodel_weight=Dim(3.0, 300.0, log=True)),
    "meanteacher": _ssl(meanteacher_weight=Dim(3.0, 300.0, log=True), meanteacher_ema=Dim(0.95, 0.999)),
    "vat": _ssl(vat_weight=WEIGHT_0_1_TO_10, vat_eps=Dim(1.0, 16.0, log=True)),
    "vat-ent": _ssl(vat_weight=WEIGHT_0_1_TO_10, vat_eps=Dim(1.0, 16.0, log=True)),
    "pseudolabel": _ssl(pseudolabel_weight=WEIGHT_0_1_TO_10, pseudolabel_threshold=Dim(0.6, 0.99)),
    "mixmatch": _ssl(mixmatch_weight=Dim(1.0, 150.0, log=True), mixmatch_t=Dim(0.3, 1.0)),
    "fixmatch": _ssl(fixmatch_weight=WEIGHT_0_1_TO_10, fixmatch_threshold=Dim(0.6, 0.99)),
    "flexmatch": _ssl(flexmatch_weight=WEIGHT_0_1_TO_10, flexmatch_threshold=Dim(0.6, 0.99)),
    "freematch": _ssl(freematch_weight=WEIGHT_0_1_TO_10, freematch_ema=Dim(0.9, 0.999)),   # the EMA sets its threshold
    "softmatch": _ssl(softmatch_weight=WEIGHT_0_1_TO_10, softmatch_n_sigma=Dim(1.0, 4.0)),
    # meta-gradient variants: the same mechanism and BUDGET (their weight is consistency_weight)
    "metafixmatch": _ssl(fixmatch_weight=WEIGHT_0_1_TO_10, fixmatch_threshold=Dim(0.6, 0.99), meta_rho=RHO),
    "metaflexmatch": _ssl(flexmatch_weight=WEIGHT_0_1_TO_10, flexmatch_threshold=Dim(0.6, 0.99), meta_rho=RHO),
    "neither": _ssl(consistency_weight=WEIGHT_0_1_TO_10),
    "mixup": _ssl(consistency_weight=WEIGHT_0_1_TO_10, mixup_gamma=Dim(0.05, 1.0, log=True)),
    "meta": _ssl(consistency_weight=WEIGHT_0_1_TO_10, beta=BETA, meta_rho=RHO),
    "metamixup": _ssl(consistency_weight=WEIGHT_0_1_TO_10, beta=BETA, meta_rho=RHO),
    "mpl": _ssl(mpl_uda_weight=WEIGHT_0_1_TO_10, mpl_teacher_lr=Dim(0.3, 3.0, log=True)),   # its ramp is UDA's
}


def space_of(name: str, base: Config) -> dict[str, Dim]:
    """The entry's searched keys for its config `base` (a bench variant searches its algorithm's space): a dim
    with `when` only where its variant is on."""
    space = SPACES.get(name) or SPACES[base.algorithm]
    return {k: d for k, d in space.items() if d.when is None or str(getattr(base, d.when[0])) == d.when[1]}


BUDGET = dict(trials=8, eta=2, iterations=400, num_val=1000)   # iterations of the last rung = the bench's FULL run
# Set by the budget, so not a key=value override of `metassl tune`:
BUDGET_KEYS = ("iterations", "eval_every", "checkpoint_every", "warmup", "num_val", "seed", "split_seed", "algorithm")


def rungs(trials: int, eta: int, iterations: int) -> list[tuple[int, int]]:
    """(trials, iterations each) per rung: trials, trials // eta, ... while at least 2 remain; the last rung
    trains for `iterations`, each earlier one for 1/eta as long. 8, 2, 400 -> [(8, 100), (4, 200), (2, 400)]."""
    sizes = [trials]
    while sizes[-1] // eta >= 2:
        sizes.append(sizes[-1] // eta)
    return [(n, max(1, iterations // eta ** (len(sizes) - 1 - i))) for i, n in enumerate(sizes)]


def resolve(point: dict[str, float], space: dict[str, Dim], iterations: int) -> dict[str, Any]:
    """A point of the space as config values for a run of `iterations` (ramps from fractions to iterations)."""
    return {k: coerce(k, round(v * iterations) if space[k].per_iteration else v) for k, v in point.items()}


def points(name: str, suite: str, trials: int, seed: int, base: Config) -> list[dict[str, float]]:
    """The `trials` points, the same on every call: trial 0 is the entry's defaults, the rest random."""
    space = space_of(name, base)
    rng = random.Random(f"{suite}/{name}/{seed}")
    default = {k: (base.consistency_rampup / base.iterations if d.per_iteration else float(getattr(base, k)))
               for k, d in space.items()}
    return [default] + [{k: d.sample(rng) for k, d in space.items()} for _ in range(trials - 1)]


def _budget_run(iterations: int) -> dict[str, Any]:
    return dict(iterations=iterations, eval_every=iterations, checkpoint_every=min(FULL["checkpoint_every"], iterations),
                warmup=round(iterations * FULL["warmup"] / FULL["iterations"]))


def run_tune(suite: str, name: str, *, trials: int = BUDGET["trials"], eta: int = BUDGET["eta"],
             iterations: int = BUDGET["iterations"], num_val: int = BUDGET["num_val"], seed: int = 0,
             out: str | Path | None = None, tuned_dir: str | Path | None = None, overrides: dict[str, Any] | None = None,
             data: Any = None, quiet: bool = True,
             log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict[str, Any]:
    """Run (or finish) the search for one bench entry and write TUNED/<suite>/<name>.yaml; returns its content."""
    if suite not in SUITES:
        raise UserError(f"unknown suite {suite!r}; choose one of: {', '.join(SUITES)}")
    if name not in SPACES and ENTRIES.get(name, ("",))[0] not in SPACES:
        raise UserError(f"no search space for {name!r}; tune.SPACES has: {', '.join(SPACES)} (and the bench's "
                        f"variants of them: {', '.join(ENTRIES)})")
    if trials < 1 or eta < 2 or iterations < 1 or num_val <= 0:
        raise UserError(f"the budget needs trials >= 1, eta >= 2, iterations >= 1 and num_val > 0 (validation "
                        f"images to score on); got trials={trials}, eta={eta}, iterations={iterations}, num_val={num_val}")
    overrides = dict(overrides or {})
    base = run_config(suite, name, seed, {k: v for k, v in overrides.items() if k not in BUDGET_KEYS})
    fixed = [k for k in overrides if k in space_of(name, base) or k in BUDGET_KEYS]
    if fixed:
        raise UserError(f"{fixed[0]} is set by the search or its budget, not by key=value; use the tune's flags")
    plan = rungs(trials, eta, iterations)
    space = space_of(name, base)
    pts = points(name, suite, trials, seed, base)

    def config(t: int, iters: int) -> Config:
        return run_config(suite, name, seed, {**overrides, **_budget_run(iters), "num_val": num_val,
                                                      **resolve(pts[t], space, iters)})

    configs = {t: config(t, plan[0][1]) for t in range(trials)}      # every point validated before any run
    out = Path(out) if out else Path("runs") / "tune" / suite / name
    out.mkdir(parents=True, exist_ok=True)
    if data is None:
        data = load_dataset(base.dataset, base.data_dir or None, base.image_size or None)
    records, alive, t0 = [], list(range(trials)), time.perf_counter()
    for rung, (size, iters) in enumerate(plan):
        alive = alive[:size]
        scores = {}
        for t in alive:
            cfg = configs[t] if rung == 0 else config(t, iters)
            res, done = run_one(cfg, out / f"r{rung}-t{t}", data, quiet)
            if res.get("val_error") is None:
                raise UserError(f"{out / f'r{rung}-t{t}'} has no validation error; it was not run with num_val={num_val}")
            scores[t] = float(res["val_error"])                       # validation only: the test error is not read
            records.append({"trial": t, "rung": rung, "iterations": iters, "values": resolve(pts[t], space, iters),
                            "val_error": round(scores[t], 4)})
            log(f"tune {suite} {name}: rung {rung} ({iters} iterations) trial {t}: {done}, val error "
                f"{scores[t]:.2f}% ({time.perf_counter() - t0:.0f} s so far)")
        alive = sorted(alive, key=lambda t: (scores[t], t))          # ties: the earlier trial
    best = alive[0]
    result = {
        "suite": suite, "algorithm": name, "date": time.strftime("%Y-%m-%d"),
        "command": f"metassl tune {suite} --algorithm {name} --trials {trials} --eta {eta} --iterations {iterations} "
                   f"--num-val {num_val} --seed {seed}" + "".join(f" {k}={v}" for k, v in overrides.items()),
        "budget": {"trials": trials, "eta": eta, "rungs": [list(r) for r in plan],
                   "iterations_total": sum(n * i for n, i in plan), "num_val": num_val, "seed": seed,
                   "search_space": {k: d.describe() for k, d in space.items()}},
        "score": "validation error % (num_val class-balanced images held out of the training set, final "
                 "weights); the test set is never read",
        "chosen_trial": best, "val_error": round(scores[best], 4),
        "values": resolve(pts[best], space, iterations),
        "fractions": {k: pts[best][k] for k, d in space.items() if d.per_iteration},   # rescaled by the bench
        "trials": records,
    }
    import yaml

    path = Path(tuned_dir or TUNE_OUT) / suite / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "# Written by `metassl tune` (src/metassl/experiments/tune.py); `metassl bench --tuned` applies "
                            "`values`, each per-iteration key\n# rescaled to the bench's run by `fractions`.\n"
                      + yaml.safe_dump(result, sort_keys=False, default_flow_style=None, width=1000))
    log(f"tune {suite} {name}: chose trial {best} (val error {scores[best]:.2f}%): "
        + ", ".join(f"{k}={v}" for k, v in result["values"].items()) + f" -> {path}")
    return result


def load_tuned(suite: str, name: str, tuned_dir: str | Path | None = None) -> dict[str, Any]:
    """The committed choice of one entry, checked: its keys are config keys and it is for this suite and entry."""
    import yaml

    path = Path(tuned_dir or TUNED_DIR) / suite / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"no tuned settings for {name} on {suite} ({path}); run `metassl tune {suite} --algorithm "
                        f"{name}` first, or leave {name} out of --algorithms")
    entry = yaml.safe_load(path.read_text())
    if not isinstance(entry, dict) or entry.get("suite") != suite or entry.get("algorithm") != name:
        raise UserError(f"{path} is not the tuned file of {name} on {suite}")
    for k in entry.get("values", {}):
        if k not in FIELDS:
            raise UserError(f"{path}: unknown config key {k!r}")
    return entry


def bench_values(entry: dict[str, Any], iterations: int) -> dict[str, Any]:
    """A tuned file's values for a bench run of `iterations` (per-iteration keys as the same fraction of it)."""
    values = dict(entry["values"])
    for k, fraction in (entry.get("fractions") or {}).items():
        values[k] = round(fraction * iterations)
    return {k: coerce(k, v) for k, v in values.items()}


def tuned_table(tuned: dict[str, dict[str, Any]]) -> str:
    """Per entry: the tuning budget, the chosen values and their validation error (for the bench summary)."""
    lines = ["| entry | trials | rungs (trials x iterations) | iterations in all | validation images | chosen "
             "(at the tuned length) | val error % |", "|---|---|---|---|---|---|---|"]
    for name, e in tuned.items():
        b = e["budget"]
        rung_text = ", ".join(f"{n} x {i}" for n, i in b["rungs"])
        values = ", ".join(f"`{k}={v}`" for k, v in e["values"].items())
        lines.append(f"| `{name}` | {b['trials']} | {rung_text} | {b['iterations_total']} | {b['num_val']} | {values} | "
                     f"{e['val_error']:.2f} |")
    return "\n".join(lines)
