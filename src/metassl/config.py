"""Typed, flat run configuration (presets in presets.py); precedence command line > config file > preset > defaults.

Every field has a default and a comment with its units and a sane range. `key=value` overrides are
type-checked against the field's type and unknown keys are rejected with one line naming the key.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import UserError
from .presets import PRESETS


@dataclass
class Config:
    # --- data -----------------------------------------------------------------------------------------
    dataset: str = "fashion-mnist"   # fashion-mnist | mnist | cifar10 | cifar100 | svhn | folder | npz | path/to/file.npz
    data_dir: str = ""               # where the files are ("" = search $METASSL_DATA, Debian path, ~/.cache/metassl)
    image_size: int = 0              # resize image-folder data sets to this (0 = keep, all images must agree)
    num_labels: int = 1000           # labeled training images, class-balanced (-1 = every label: fully supervised)
    split_seed: int = 0              # seed of the labeled/unlabeled split, independent of `seed`
    num_val: int = 0                 # class-balanced validation images held out of the training set (0 = none)
    include_labeled_in_unlabeled: bool = False  # unlabeled set also holds the labeled images (Theorem 2)
    stream: bool = False             # image folders: stream from disk with DataLoader workers (ImageNet) instead of RAM
    workers: int = 4                 # DataLoader worker processes for stream=true
    labels_file: str = ""            # stream=true: text file of labeled image paths (e.g. ImageNet 10% split files)
    translate: int = 2               # random-translate augmentation, pixels (random crop with this padding)
    pad_mode: str = "reflect"        # the crop's padding: reflect | zeros (black before normalisation: the authors' RandomCrop(32, padding=4))
    flip: str = "auto"               # horizontal flip: auto (where the data set allows it) | true | false
    # --- model and algorithm --------------------------------------------------------------------------
    model: str = "cnn"               # cnn | convlarge | wrn-28-2 | wrn-28-8 | resnet18 | mlp
    algorithm: str = "freematch"     # see `metassl algorithms`; freematch had the best validation rank at equal CPU minutes
                                     # (docs/results/DEFAULT.md); the paper's method is metamixup
    meta_method: str = "auto"        # auto (fd, or jvp where the backbone declares fd inaccurate: resnet18) | fd (Eq. 15/16,
                                     # the authors') | jvp (forward-mode, no eps error) | exact (second order)
    meta_phi: str = "mse"            # Phi inside the meta-gradient: mse | kl (meta, metamixup: must equal `consistency`)
    meta_fused: bool = True          # fd: y~ = softmax(mean of the two perturbed logits), one forward fewer (O(eps^2))
    meta_params: str = "all"         # all (the paper) | head: g_l and the virtual step restricted to the classifier head `fc`:
                                     # exact and ~27% cheaper per metamixup step (no labeled backward; see meta_gradient.py)
    meta_batched: bool = False       # fd: run the two perturbed forwards as one vmapped call
    eps_scale: float = 0.01          # finite-difference step: eps = eps_scale / ||g_l|| (the authors: 0.01)
    beta_schedule: str = "lr"        # lr: beta_t = beta * lr_t (authors, beta=1) | constant: beta_t = beta | cosine
    beta: float = 1.0                # multiplier of lr (beta_schedule=lr) or the value/peak (constant, cosine)
    projection: str = "relu"         # back to the simplex after Eq. 6: relu (authors: clamp + renormalise) | simplex
    # meta-gradient variants (docs/ALGORITHMS.md, "Meta-gradient variants"); the defaults are the paper's step
    meta_step: str = "lr"            # Eq. 6's step: lr (y^ = y~ - beta_t grad_y, the paper) | normalised (fixed length:
                                     # y^ = y~ - rho_t grad_y / rms_b ||grad_y_b||, does not fade with ||g_l||)
    meta_rho: float = 0.1            # meta_step=normalised: rho, RMS per-row L2 length of the step on the simplex (0 < rho <= 2)
    meta_holdout: float = 0.0        # share of each class's labels held out of the classification loss, used only for
                                     # g_l (Batch.x_meta; 0 = none, the paper; 0..0.5)
    meta_target: str = "hard"        # metafixmatch, metaflexmatch: hard (CE to argmax y^, FixMatch's) | soft (CE to y^ itself)
    meta_threshold_on: str = "corrected"  # metafixmatch, metaflexmatch: confidence mask from y^ (corrected) | from y~ (plain)
    consistency: str = "mse"         # consistency loss to the pseudo-labels: mse (sum over classes) | kl; with meta it is
                                     # the Phi the meta-gradient differentiates, so meta_phi must match (else rejected)
    consistency_weight: float = 1.0  # w, the consistency loss weight at the end of its ramp-up (0..100)
    consistency_rampup: float = 0.05  # length of the linear ramp of w from 0 (0 = no ramp)
    labeled_warmup: float = 0.4      # labeled-only (supervised) steps before the algorithm's own step: cheap steps fit the
                                     # labels first; no unlabeled batch, the ramp starts after
    mixup_gamma: float = 0.1         # lam ~ Beta(gamma, gamma) per sample for cross-domain mixup (> 0)
    # --- baseline algorithms' hyperparameters ---------------------------------------------------------
    # Defaults are each paper's own values (sources and caveats: docs/ALGORITHMS.md). Every unlabeled-loss
    # weight here multiplies the shared ramp w(t) above, so with consistency_weight=1 it is the paper's value.
    pimodel_weight: float = 100.0    # Pi-model w_max on the MSE averaged over classes (Laine & Aila 2017: 100)
    meanteacher_weight: float = 100.0  # Mean Teacher consistency cost, MSE over classes (Tarvainen & Valpola 2017: 100)
    meanteacher_ema: float = 0.999   # teacher EMA decay after the ramp, 0.99 during it (Tarvainen & Valpola 2017: 0.999)
    vat_eps: float = 4.0             # VAT perturbation L2 norm, normalised inputs (Miyato et al. 2018: 8 on 3072-d CIFAR-10, x sqrt(784/3072))
    vat_weight: float = 1.0          # alpha, weight of the VAT loss (Miyato et al. 2018: 1)
    vat_entmin: bool = False         # VAT+Ent: add the unlabeled prediction entropy, weight 1 (Miyato et al. 2018)
    pseudolabel_threshold: float = 0.95  # hard pseudo-labels kept above this confidence (USB / FixMatch variant: 0.95)
    pseudolabel_weight: float = 1.0  # weight of the pseudo-label CE (USB: 1; Lee 2013 ramps it to 3)
    mixmatch_k: int = 2              # K, weak views per unlabeled image for label guessing (Berthelot et al. 2019: 2)
    mixmatch_t: float = 0.5          # sharpening temperature T (Berthelot et al. 2019: 0.5)
    mixmatch_alpha: float = 0.75     # lam ~ Beta(alpha, alpha), lam = max(lam, 1 - lam) (Berthelot et al. 2019: 0.75)
    mixmatch_weight: float = 75.0    # lambda_u on the MSE averaged over classes (Berthelot et al. 2019: 75, CIFAR-10)
    fixmatch_threshold: float = 0.95  # tau, confidence threshold; also metafixmatch (Sohn et al. 2020: 0.95)
    fixmatch_weight: float = 1.0     # lambda_u; also metafixmatch (Sohn et al. 2020: 1)
    flexmatch_threshold: float = 0.95  # tau, the fixed threshold the class thresholds scale; also metaflexmatch (Zhang et al. 2021: 0.95)
    flexmatch_weight: float = 1.0    # lambda_u (Zhang et al. 2021: 1)
    flexmatch_warmup: bool = True    # threshold warm-up: unused images count against the learning status (Eq. 11; USB: true)
    freematch_weight: float = 1.0    # w_u, weight of the self-adaptive-threshold CE (Wang et al. 2023: 1)
    freematch_fairness_weight: float = 0.001  # w_f, weight of the fairness term (USB's configs: 0.001; 0 = off)
    freematch_ema: float = 0.999     # m, EMA momentum of the confidence, class and histogram estimates (Wang et al. 2023: 0.999)
    softmatch_weight: float = 1.0    # lambda_u, the weight above the mean confidence (Chen et al. 2023: 1)
    softmatch_ema: float = 0.999     # m, EMA momentum of the Gaussian's mean/variance and the alignment (Chen et al. 2023: 0.999)
    softmatch_n_sigma: float = 2.0   # width of the truncated Gaussian: sigma_t / n_sigma (USB: 2; > 0)
    softmatch_align: bool = True     # uniform distribution alignment of the weak-view probabilities (Chen et al. 2023: on)
    mpl_teacher_lr: float = 1.0      # mpl: the teacher's SGD lr as a multiple of the student's lr_t (Pham et al. 2021: equal)
    mpl_uda_weight: float = 1.0      # mpl: weight of the teacher's UDA consistency term, times w(t) (0 = off; Pham et al.: 8)
    mpl_uda_threshold: float = 0.8   # mpl: UDA confidence mask on the teacher's weak view (Xie et al. 2020: 0.8)
    mpl_uda_temperature: float = 0.4  # mpl: sharpening temperature of UDA's weak-view target (Xie et al. 2020: 0.4; > 0)
    bank_every: float = 0.2          # selftrain, metaselftrain: a round's length; the teacher relabels the whole pool before each
    bank_threshold: float = 0.9      # selftrain, metaselftrain: bank labels trained on above this confidence (0..1)
    bank_weight: float = 1.0         # selftrain, metaselftrain: weight of the bank CE, times w(t)
    bank_view: str = "strong"        # selftrain, metaselftrain: the student's view of bank images: strong (RandAugment + Cutout,
                                     # FixMatch's) | weak (translate + flip)
    bank_tta: bool = False           # selftrain, metaselftrain: teacher averages each image with its flip (where flips are allowed)
    bank_meta: str = "labels"        # metaselftrain: labels (Eq. 6 on the whole bank, fixed step meta_rho) | weights (per-image
                                     # weights from the sign and size of the meta-gradient)
    bank_params: str = "head"        # metaselftrain: head (g_l and the virtual step on the classifier head: closed form in the
                                     # teacher pass's features, no extra pass) | all (every parameter: two more pool passes, Eq. 15/16)
    # --- optimisation ---------------------------------------------------------------------------------
    iterations: int = 3000           # training iterations (one labeled + one unlabeled batch each); time_limit sets it
    time_limit: float = 0.0          # wall-clock budget for training and its evaluations: seconds, or 90s | 10m | 1.5h; the
                                     # trainer times the first steps, fixes `iterations` to fit and saves it (0 = use iterations)
    batch_size: int = 64             # labeled images per iteration
    unlabeled_batch_size: int = 0    # unlabeled images per iteration (0 = same as batch_size; mixup needs equal)
    unlabeled_batch_start: int = 0   # > 0: the unlabeled batch grows from this size to unlabeled_batch_size (Fast FixMatch)
    unlabeled_batch_rampup: float = 0  # length after labeled_warmup over which it grows linearly (with unlabeled_batch_start)
    lr: float = 0.05                 # peak SGD learning rate (0 < lr <= 10)
    momentum: float = 0.9            # SGD momentum (0 <= m < 1)
    nesterov: bool = False           # Nesterov momentum (the authors: no)
    weight_decay: float = 1e-4       # L2 weight decay (>= 0)
    warmup: float = 0.1              # linear learning-rate warm-up from 0
    lr_schedule: str = "cosine"      # cosine (to 0 at the end) | step (x lr_decay at each of lr_steps) | constant
    lr_steps: str = ""               # step schedule milestones, comma-separated iterations or fractions ("0.75,0.875")
    lr_decay: float = 0.1            # step schedule factor
    lr_origin: str = "one"           # count t the warm-up and step decay see at 0-based iteration it: one = it+1 (lr*t/warmup,
                                     # so the first step has lr/warmup; decay once t > milestone, i.e. from iteration
                                     # `milestone` on) | zero = it, the authors' script (the first step has lr 0; decay
                                     # from iteration milestone+1 on). Cosine is the same for both.
    ema: float = 0.0                 # EMA decay of weights used for evaluation (0 = evaluate raw weights; 0.999 typical)
    # --- run ------------------------------------------------------------------------------------------
    seed: int = 0                    # training seed: init, sampling order, augmentation, mixup
    device: str = "auto"             # auto (cuda if available) | cpu | cuda | cuda:N
    amp: bool = False                # bf16 autocast of the steps and label-bank passes where the device computes bf16
                                     # natively (CUDA; CPUs with AVX512-BF16/AMX), else fp32; evaluation stays fp32
    threads: int = 0                 # torch CPU threads (0 = torch's default)
    channels_last: bool = True       # NHWC memory format for conv nets (measured faster on CPU; see docs/results/SPEED.md)
    sync_bn: bool = False            # torchrun: BatchNorm statistics over the global batch (SyncBN)
    meta_scope: str = "global"       # torchrun: g_l all-reduced before eps (global) or per process (local, the authors' ImageNet script)
    eval_every: float = 0.25         # evaluate on test (and validation) at this interval (0 = at the end only)
    eval_batch_size: int = 1000      # images per evaluation forward
    checkpoint_every: float = 0.1    # write the `last` checkpoint at this interval (atomic; 0 = at the end only)
    log_every: float = 50            # log losses at this interval (the only host syncs in the loop)

    def resolved(self) -> "Config":
        """Fill the derived defaults (unlabeled batch size), validate, and turn the schedule's fractions into
        iterations (with a time_limit they stay fractions until the trainer fixes `iterations`: `fitted`)."""
        c = dataclasses.replace(self)
        if c.unlabeled_batch_size == 0:
            c.unlabeled_batch_size = c.batch_size
        validate(c)
        return c if c.time_limit else c.fitted(c.iterations)

    def fitted(self, iterations: int) -> "Config":
        """This config at a fixed length: `iterations` set, every schedule fraction turned into iterations and the
        time_limit spent (0), so that a resume or a replay of the saved config runs exactly this schedule."""
        c = dataclasses.replace(self, iterations=int(iterations), time_limit=0.0)
        for key in SCHEDULE:
            setattr(c, key, at_length(key, getattr(c, key), c.iterations))
        if c.lr_steps.strip():
            c.lr_steps = ",".join(str(s) for s in parse_steps(c.lr_steps, c.iterations))
        return c


# Keys counted in iterations. Each takes an integer (iterations) or a number in (0, 1): that fraction of the run's
# `iterations` (or of what time_limit affords), so a preset keeps its shape at 300 iterations or under a budget.
# Intervals (the first four) are at least 1 iteration; eval_every=0 and checkpoint_every=0 mean at the end only.
SCHEDULE = ("eval_every", "checkpoint_every", "log_every", "bank_every",
            "warmup", "labeled_warmup", "consistency_rampup", "unlabeled_batch_rampup")


def at_length(key: str, value: float, iterations: int) -> int:
    """A schedule key's value in iterations for a run of `iterations` (a fraction in (0, 1) rounds to nearest)."""
    if 0 < value < 1:
        n = math.floor(value * iterations + 0.5)
        return max(1, n) if key in SCHEDULE[:4] else n
    return int(value)


FIELDS = {f.name: f for f in fields(Config)}
_HINTS = typing.get_type_hints(Config)

CHOICES: dict[str, tuple[str, ...]] = {
    "flip": ("auto", "true", "false"),
    "pad_mode": ("reflect", "zeros"),
    "meta_method": ("auto", "fd", "jvp", "exact"),
    "meta_phi": ("mse", "kl"),
    "meta_params": ("all", "head"),
    "beta_schedule": ("lr", "constant", "cosine"),
    "projection": ("relu", "simplex"),
    "meta_step": ("lr", "normalised"),
    "meta_target": ("hard", "soft"),
    "meta_threshold_on": ("corrected", "plain"),
    "bank_meta": ("labels", "weights"),
    "bank_view": ("strong", "weak"),
    "bank_params": ("head", "all"),
    "consistency": ("mse", "kl"),
    "lr_schedule": ("cosine", "step", "constant"),
    "lr_origin": ("one", "zero"),
    "meta_scope": ("global", "local"),
}

# (key, test, what is allowed) for numeric ranges; checked in order, first failure is reported.
RANGES: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("num_labels", lambda v: v == -1 or v > 0, "a positive integer, or -1 for every label"),
    ("num_val", lambda v: v >= 0, "an integer >= 0"),
    ("image_size", lambda v: v >= 0, "an integer >= 0"),
    ("translate", lambda v: 0 <= v <= 64, "an integer in 0..64"),
    ("eps_scale", lambda v: v > 0, "a number > 0"),
    ("beta", lambda v: v >= 0, "a number >= 0"),
    ("meta_rho", lambda v: 0 < v <= 2, "a number in (0, 2] (a length on the simplex: at most 2)"),
    ("meta_holdout", lambda v: 0 <= v <= 0.5, "a share in [0, 0.5] of each class's labels"),
    ("consistency_weight", lambda v: v >= 0, "a number >= 0"),
    ("mixup_gamma", lambda v: v > 0, "a number > 0"),
    ("iterations", lambda v: v > 0, "a positive integer"),
    ("time_limit", lambda v: v >= 0, "a duration >= 0: seconds, or with a unit, e.g. 90s, 10m, 1.5h (0 = none)"),
    ("batch_size", lambda v: v > 0, "a positive integer"),
    ("unlabeled_batch_size", lambda v: v > 0, "a positive integer (0 = same as batch_size)"),
    ("unlabeled_batch_start", lambda v: v >= 0, "an integer >= 0 (0 = a fixed unlabeled batch)"),
    ("lr", lambda v: 0 < v <= 10, "a number in (0, 10]"),
    ("momentum", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("weight_decay", lambda v: v >= 0, "a number >= 0"),
    ("lr_decay", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("ema", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("threads", lambda v: v >= 0, "an integer >= 0"),
    *((key, lambda v: v >= 0 and (v < 1 or v == int(v)), "iterations (an integer >= 0) or a fraction of the run in (0, 1)")
      for key in SCHEDULE),
    *((key, lambda v: v > 0, "a positive interval: iterations (an integer >= 1) or a fraction of the run in (0, 1)")
      for key in ("log_every", "bank_every")),
    ("workers", lambda v: v >= 0, "an integer >= 0"),
    ("eval_batch_size", lambda v: v > 0, "a positive integer"),
]


def validate(c: Config) -> None:
    """Raise UserError (one line: the key, its value, what is allowed) for the first bad value.

    Names that registries define (`algorithm`, `model`) and each algorithm's own hyperparameters are
    checked where they are built (algorithms.build_algorithm, models.build_model), with the same one-line
    errors, so this module imports neither registry.
    """
    for key, allowed in CHOICES.items():
        if getattr(c, key) not in allowed:
            raise UserError(f"{key}={getattr(c, key)!r} is not allowed; choose one of: {', '.join(allowed)}")
    for key, ok, what in RANGES:
        if not ok(getattr(c, key)):
            raise UserError(f"{key}={getattr(c, key)!r} is out of range; allowed: {what}")
    if not (c.device in ("auto", "cpu", "cuda") or c.device.startswith("cuda:")):
        raise UserError(f"device={c.device!r} is not allowed; choose one of: auto, cpu, cuda, cuda:N")
    if c.lr_schedule == "step":
        parse_steps(c.lr_steps)
    if c.unlabeled_batch_start and not (c.unlabeled_batch_start < c.unlabeled_batch_size and c.unlabeled_batch_rampup):
        raise UserError(f"unlabeled_batch_start={c.unlabeled_batch_start} needs unlabeled_batch_size > it (now "
                        f"{c.unlabeled_batch_size}) and unlabeled_batch_rampup > 0 (now {c.unlabeled_batch_rampup}) "
                        f"iterations to grow over")


def parse_steps(text: str, iterations: int | None = None) -> list[float]:
    """'300000,350000' -> [300000, 350000], the step-decay milestones; '0.75,0.875' are fractions of the run,
    turned into iterations when `iterations` is given."""
    allowed = "give increasing comma-separated iterations or fractions of the run, e.g. 300000,350000 or 0.75,0.875"
    try:
        steps = [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"lr_steps={text!r} is not allowed; {allowed}") from None
    if not steps or any(not (0 < s < 1 or (s >= 1 and s == int(s))) for s in steps) or steps != sorted(steps):
        raise UserError(f"lr_steps={text!r} is not allowed; {allowed}")
    return [at_length("lr_steps", s, iterations) if iterations else s for s in steps]


def parse_duration(key: str, value: Any) -> float:
    """'90', '90s', '10m', '1.5h' -> seconds."""
    text = str(value).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None) if text else None
    try:
        seconds = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        seconds = float("nan")
    if not math.isfinite(seconds):
        raise UserError(f"{key}={value!r} is not a duration; allowed: seconds, or with a unit, e.g. 90s, 10m, 1.5h")
    return seconds


def coerce(key: str, value: Any) -> Any:
    """Turn a command-line string or a YAML value into the field's type, or raise a one-line UserError."""
    if key not in FIELDS:
        close = difflib.get_close_matches(key, FIELDS, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise UserError(f"unknown config key {key!r}{hint}; see `metassl train --help-keys` for the keys")
    kind = _HINTS[key]
    allowed = next((f"; allowed: {what}" for k, _, what in RANGES if k == key), "")
    if key == "time_limit":
        return parse_duration(key, value)
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UserError(f"{key}={value!r} is not a boolean; allowed: true, false")
    if kind is int:
        if isinstance(value, bool):
            raise UserError(f"{key}={value!r} is not an integer{allowed}")
        try:
            f = float(value)
            if f != int(f):
                raise ValueError
            return int(f)
        except (ValueError, TypeError, OverflowError):
            raise UserError(f"{key}={value!r} is not an integer{allowed}") from None
    if kind is float:
        try:
            f = float(value)
        except (ValueError, TypeError):
            raise UserError(f"{key}={value!r} is not a number{allowed}") from None
        if f != f or f in (float("inf"), float("-inf")):
            raise UserError(f"{key}={value!r} is not a finite number{allowed}")
        return f
    if isinstance(value, (dict, list)):
        raise UserError(f"{key} must be a plain string, got {type(value).__name__}")
    text = "" if value is None else str(value)
    return text.lower() if key in ("flip",) else text


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['lr=0.1', 'device=cpu'] -> {'lr': 0.1, 'device': 'cpu'} (typed)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"expected key=value, got {item!r} (e.g. iterations=200)")
        key, value = item.split("=", 1)
        out[key.strip()] = coerce(key.strip(), value.strip())
    return out


def load_file(path: str) -> dict[str, Any]:
    """A YAML (or JSON) file of key: value pairs that differ from the preset."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {path!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"config file {path!r} is not valid YAML: {first}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path!r} must hold a mapping of key: value, got {type(data).__name__}")
    return {str(k): coerce(str(k), v) for k, v in data.items()}


def merge_config(preset: str | None = None, file: str | None = None, overrides: list[str] | None = None) -> Config:
    """Merge defaults < preset < config file < command line, then validate (the raw merge: `algorithms.build_config`
    also drops the preset's keys the chosen algorithm does not read, and is what callers use)."""
    values: dict[str, Any] = {}
    if preset:
        if preset not in PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESETS)}")
        values.update(PRESETS[preset])
    if file:
        values.update(load_file(file))
    values.update(parse_overrides(overrides or []))
    return Config(**values).resolved()


def to_dict(c: Config) -> dict[str, Any]:
    return asdict(c)


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a saved config (keys unknown to this version are an error, not silently dropped)."""
    return Config(**{k: coerce(k, v) for k, v in d.items()})


def load_saved(path: str | Path) -> Config:
    """A run directory's config.json; a damaged file is a one-line UserError, not a JSON traceback."""
    import json

    try:
        d = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(f"cannot read the saved config {path}: {' '.join(str(e).split())}; the run directory "
                        f"is damaged") from None
    if not isinstance(d, dict):
        raise UserError(f"saved config {path} holds a {type(d).__name__}, expected a mapping of key: value")
    return from_dict(d)


def describe_keys(width: int = 110) -> str:
    """Every key: name, default and its whole comment from this file (continuation lines too), wrapped."""
    import inspect
    import textwrap

    src = inspect.getsource(Config).splitlines()
    notes: dict[str, list[str]] = {}
    key = None
    for line in src:
        code, _, comment = line.partition("#")
        name = code.strip().split(":")[0] if code.strip() else ""
        if name in FIELDS:
            key = name
            notes[key] = [comment.strip()] if comment else []
        elif key and not code.strip() and comment and not comment.lstrip().startswith("---"):
            notes[key].append(comment.strip())
        else:
            key = None
    lines = []
    for f in fields(Config):
        head = f"{f.name:28s} {str(f.default)!s:10s} "
        text = " ".join(notes.get(f.name, [])) + (" (iterations or a fraction of the run)" if f.name in SCHEDULE else "")
        lines.append(textwrap.fill(text, width, initial_indent=head, subsequent_indent=" " * len(head)))
    return "\n".join(lines)
