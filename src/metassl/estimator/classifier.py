"""A scikit-learn-style classifier over the trainer: `fit(X, y)` with y = -1 marking unlabeled rows.

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from metassl import MetaSSLClassifier

    X, y = load_digits(return_X_y=True)                    # (1797, 64) pixel values 0..16, 10 classes
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    y_semi = np.where(np.random.default_rng(0).random(len(y_tr)) < 0.1, y_tr, -1)   # keep ~10% of labels
    clf = MetaSSLClassifier(random_state=0).fit(X_tr, y_semi)                        # tabular: mlp backbone
    print(clf.score(X_te, y_te))
    clf_img = MetaSSLClassifier(iterations=600, random_state=0).fit(X_tr.reshape(-1, 8, 8), y_semi)  # cnn

Design: one training loop. Both images and tabular rows go through `metassl.train.train` with an
in-memory `ImageData` whose labeled rows form the training set (`num_labels=-1`) and whose unlabeled
rows are `x_unlabeled`, so the algorithm's step, schedules and EMA are exactly those of `metassl train`;
the estimator builds the backbone itself (mlp: hidden_layer_sizes, dropout) and trains in memory
(`train_run(cfg, None)`: no file), keeping the run's evaluated model. Tabular rows (N, D) are laid out as a 1-pixel-high
image: features that share one scale (pixels; `shared_scale`) as ONE channel (N, 1, D, 1), so the
trainer's per-channel mean/std is one global scale; others as D channels (N, 1, 1, D), each feature
standardised. Features constant over the training rows are dropped (`keep_`). Rows get no augmentation.
Images (N, H, W) or (N, H, W, C) become float32, integer dtypes divided by 255; weak augmentation is a
random translation by up to 2 pixels (none below 8x8), no flips.

Small-data defaults (docs/results/ESTIMATOR.md): the budget below was set on digits split seeds 100-102 (re-draws of the
reported data); `init` was then re-chosen on development data disjoint from every reported table (8x8
Fashion-MNIST and wine, scored on validation rows): `init='none'` beat `init='label_spreading'` (the most
confident 75% of the unlabeled rows labeled by scikit-learn's LabelSpreading, knn graph, 7 neighbours, added
to the labeled rows) by 3.5 and 2.2 points there, so the labeled rows alone seed training by default.
`iterations='auto'` is 25 passes over the N training rows at `batch_size='auto'` (~N/16, 32..128),
200..2000 iterations; warm-up 10% and consistency ramp-up 20% of the budget; EMA 0.99 (capped at a fifth
of the run). `validation_fraction` > 0 holds out a class-balanced share of the LABELED rows (hidden from
training and from the init; they stay unlabeled rows) and reports `validation_score_`; the default is 0,
since with 10 labels per class every label counts and the fixed cosine schedule + EMA needs no early
stopping. With no unlabeled rows the labeled rows also serve as unlabeled ones (Theorem 2's setting).
The run is written to a temporary directory and deleted; the fitted network is `model_`.
"""
from __future__ import annotations

import inspect
import os

import numpy as np
import torch

from ..config import Config
from ..data import ImageData
from ..data.split import class_share
from ..errors import UserError
from ..torch_utils import to_nchw
from . import recipe
from .recipe import auto_batch_size, auto_iterations, ema_for, shared_scale

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, check_random_state
    try:
        from sklearn.utils.validation import validate_data            # scikit-learn >= 1.6
    except ImportError:
        validate_data = None
    _BASES: tuple[type, ...] = (ClassifierMixin, BaseEstimator)
except ImportError:                                                    # scikit-learn is optional
    BaseEstimator = ClassifierMixin = check_classification_targets = check_is_fitted = check_random_state = None
    validate_data = None

    class _Params:
        """scikit-learn's get_params/set_params/score conventions, for when it is not installed."""

        def get_params(self, deep: bool = True) -> dict:
            return {k: getattr(self, k) for k in inspect.signature(type(self).__init__).parameters if k != "self"}

        def set_params(self, **params) -> "_Params":
            valid = self.get_params()
            for k, v in params.items():
                if k not in valid:
                    raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}; valid: {', '.join(valid)}")
                setattr(self, k, v)
            return self

        def score(self, X, y, sample_weight=None) -> float:
            return float(np.average(self.predict(X) == np.asarray(y), weights=sample_weight))

    _BASES = (_Params,)



class MetaSSLClassifier(*_BASES):
    """Semi-supervised classifier: meta-gradient SSL (Zhang et al., AISTATS 2021) behind fit/predict.

    X: images (N, H, W) or (N, H, W, C), uint8 or float, or tabular rows (N, D); y: (N,) class labels,
    -1 for unlabeled rows. Parameters (stored as given; checked in `fit`):
        algorithm     'metamixup' (the method) or any of `metassl algorithms`
        model         'auto' (cnn for images, mlp for tabular) or a backbone name (`metassl check`)
        iterations    training iterations (one labeled + one unlabeled batch each); 'auto': 25 passes over the
                      training rows at the batch size, 200..2000 (auto_iterations)
        batch_size    labeled rows per iteration (unlabeled: the same); 'auto': about N/16, 32..128
        lr            peak SGD learning rate (cosine schedule, 10% linear warm-up)
        weight_decay  L2 weight decay of SGD
        ema           EMA decay of the weights that predict (0 = the raw weights), at most 1 - 5/iterations
        hidden_layer_sizes, dropout   the mlp backbone's hidden widths and dropout (model='mlp' or tabular 'auto')
        init          'none' (default): the labeled rows alone; 'label_spreading': the most confident INIT_SHARE
                      of the unlabeled rows, labeled by scikit-learn's LabelSpreading (knn, 7), join the labeled
                      rows (they stay unlabeled rows too, whose pseudo-labels the meta-gradient corrects)
        validation_fraction  share of each class's labeled rows held out (their labels hidden from training and
                      from the init); validation_score_ is the fitted model's accuracy on them (0 = none)
        random_state  int for reproducible fits; None draws a seed
        n_jobs        torch CPU threads during fit/predict (None = torch's current setting, -1 = every core)
        verbose       0 silent; 1 the trainer's progress lines and the init's summary
        device        'cpu', 'cuda', 'cuda:N' or 'auto'
    Fitted: classes_, n_features_in_ (X.shape[1], scikit-learn's convention), input_shape_ (X.shape[1:]),
    keep_ (tabular: the non-constant features used), model_ (torch module), mean_/std_ (per-channel
    normalisation), iterations_ and batch_size_ (as used), n_pseudo_labels_ (rows the init labeled),
    validation_rows_ (indices into X held out), validation_score_ (None without them), results_ (the trainer's
    results; test_error is the error on the validation rows, or on the labeled rows when there are none).
    See the module docstring for the design and a load_digits example.
    """

    def __init__(self, algorithm: str = "metamixup", model: str = "auto", iterations: int | str = "auto",
                 batch_size: int | str = "auto", lr: float = 0.05, weight_decay: float = 5e-4, ema: float = 0.99,
                 hidden_layer_sizes: tuple[int, ...] = (256, 256), dropout: float = 0.0,
                 init: str = "none", validation_fraction: float = 0.0, random_state: int | None = None,
                 n_jobs: int | None = None, verbose: int = 0, device: str = "cpu"):
        self.algorithm = algorithm
        self.model = model
        self.iterations = iterations
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema = ema
        self.hidden_layer_sizes = hidden_layer_sizes
        self.dropout = dropout
        self.init = init
        self.validation_fraction = validation_fraction
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.device = device

    # --- input checks (scikit-learn's validators where available) ---------------------------------------
    def _validate(self, X, y=None, reset: bool = True):
        if validate_data is not None:
            if y is None and not reset:
                return validate_data(self, X, reset=False, allow_nd=True, dtype="numeric")
            return validate_data(self, X, y, allow_nd=True, dtype="numeric")
        X = np.asarray(X)
        X = X if X.dtype.kind in "biuf" else X.astype(np.float64)
        if X.ndim < 2 or len(X) == 0:
            raise ValueError(f"expected X of shape (N, D), (N, H, W) or (N, H, W, C) with N >= 1, got {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X contains NaN or infinity")
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")
        if not reset:
            return X
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        y = np.asarray(y).reshape(-1) if np.ndim(y) == 2 and np.shape(y)[1] == 1 else np.asarray(y)
        if y.ndim != 1 or len(y) != len(X):
            raise ValueError(f"y must be 1-D with one label per row of X, got shape {y.shape} for {len(X)} rows")
        return X, y

    def _to_nhwc(self, X: np.ndarray) -> np.ndarray:
        """float32 NHWC rows for the trainer: tabular (N, D) -> (N, 1, 1, D') kept features; images as NHWC."""
        if self.input_shape_ != X.shape[1:]:
            raise ValueError(f"X has rows of shape {X.shape[1:]}, but {type(self).__name__} was fitted on "
                             f"{self.input_shape_}")
        if X.ndim == 2:       # shared scale: one channel (N, 1, D', 1), one mean/std; else D' channels (N, 1, 1, D')
            x = np.ascontiguousarray(X[:, self.keep_], dtype=np.float32)
            return x[:, None, :, None] if self.shared_scale_ else x[:, None, None, :]
        x = X if X.ndim == 4 else X[..., None]
        return x.astype(np.float32) / 255 if x.dtype.kind in "biu" else x.astype(np.float32)

    # --- fit / predict -------------------------------------------------------------------------------------
    def _threads(self) -> "_Threads":
        n = self.n_jobs
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n == 0 or n < -1):
            raise ValueError(f"{type(self).__name__}: n_jobs={n!r} must be None, -1 or a positive integer")
        return _Threads(None if n is None else (os.cpu_count() or 1) if n == -1 else int(n))

    def _resolve(self, n_rows: int) -> tuple[int, int]:
        """(iterations, batch_size) as used: 'auto' derived from the n_rows training rows, else as given."""
        batch = auto_batch_size(n_rows) if isinstance(self.batch_size, str) and self.batch_size == "auto" else self.batch_size
        iters = (auto_iterations(n_rows, batch) if isinstance(self.iterations, str) and self.iterations == "auto"
                 else self.iterations)
        for name, v in (("batch_size", batch), ("iterations", iters)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{type(self).__name__}: {name}={v!r} must be a positive integer or 'auto'")
        return int(iters), int(batch)

    def _build_model(self, name: str, num_classes: int, shape: tuple[int, int, int]) -> torch.nn.Module:
        """The backbone for (H, W, C) rows: mlp with hidden_layer_sizes/dropout, else the registry's."""
        from ..models import build_model
        from ..models.mlp import MLP

        height, width, channels = shape
        if name != "mlp":
            return build_model(name, num_classes, channels, height)
        hidden = tuple(int(h) for h in np.atleast_1d(self.hidden_layer_sizes))
        if not hidden or min(hidden) < 1 or not 0 <= self.dropout < 1:
            raise ValueError(f"{type(self).__name__}: hidden_layer_sizes={self.hidden_layer_sizes!r} needs positive "
                             f"widths and dropout={self.dropout!r} must lie in [0, 1)")
        return MLP(height * width * channels, num_classes, hidden, float(self.dropout))

    def fit(self, X, y) -> "MetaSSLClassifier":
        """Train on the labeled rows (y != -1) and the unlabeled ones (y == -1)."""
        with self._threads():
            return self._fit(X, y)

    def _fit(self, X, y) -> "MetaSSLClassifier":
        from ..train import train_run

        X, y = self._validate(X, y)
        if X.ndim not in (2, 3, 4):
            raise ValueError(f"X must be (N, D) rows or (N, H, W[, C]) images, got shape {X.shape}")
        unlabeled = np.asarray(y == -1, bool) if y.dtype.kind in "iufO" else np.zeros(len(y), bool)
        if check_classification_targets is not None:
            check_classification_targets(y[~unlabeled])
        self.classes_, enc = np.unique(y[~unlabeled], return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs labeled rows (y != -1) of at least 2 classes; "
                             f"got {len(self.classes_)} class")
        if self.init not in ("label_spreading", "none"):
            raise ValueError(f"{type(self).__name__}: init={self.init!r} must be 'label_spreading' or 'none'")
        if self.init == "label_spreading" and BaseEstimator is None:
            raise ValueError(f"{type(self).__name__}: init='label_spreading' needs scikit-learn's LabelSpreading; "
                             f"pip install scikit-learn, or use init='none'")
        if not 0 <= self.validation_fraction < 1:
            raise ValueError(f"{type(self).__name__}: validation_fraction={self.validation_fraction!r} must lie in [0, 1)")
        y_enc = np.full(len(y), -1, np.int64)
        y_enc[~unlabeled] = enc                                         # (N,) 0..K-1, -1 = unlabeled
        self.input_shape_ = X.shape[1:]
        tabular = X.ndim == 2
        if tabular:
            self.keep_ = X.std(axis=0) > 0
            if not self.keep_.any():
                raise ValueError("every feature of X is constant; there is nothing to learn from")
            self.shared_scale_ = shared_scale(X[:, self.keep_])
        x = self._to_nhwc(X)                                             # (N, H, W, C) float32
        height, width = x.shape[1:3]
        model = self.model if self.model != "auto" else ("mlp" if tabular else "cnn")
        if not tabular and (x.std(axis=(0, 1, 2)) == 0).any():
            raise ValueError("an image channel is constant over X; drop it (its std of 0 would divide by zero)")
        seed = self._seed()

        # validation rows: labeled rows whose labels training and the init never see (they stay unlabeled rows)
        self.validation_rows_ = class_share(y_enc, self.validation_fraction, seed)
        y_fit = y_enc.copy()
        y_fit[self.validation_rows_] = -1
        labeled = np.flatnonzero(y_fit >= 0)
        pool = np.flatnonzero(y_fit == -1)                               # unlabeled rows (validation rows included)
        if self.init == "label_spreading":
            rows, labels = recipe.label_spreading_init(x.reshape(len(x), -1).astype(np.float64), y_fit)
        else:
            rows, labels = np.zeros(0, np.int64), np.zeros(0, np.int64)
        self.n_pseudo_labels_ = len(rows)
        if self.verbose:
            print(f"{type(self).__name__}: {len(labeled)} labeled rows, {len(pool)} unlabeled, {len(rows)} of "
                  f"them labeled by label spreading, {len(self.validation_rows_)} held out for validation")
        x_lb, y_lb = np.concatenate([x[labeled], x[rows]]), np.concatenate([y_fit[labeled], labels])
        n, batch = self._resolve(len(x))
        self.iterations_, self.batch_size_ = n, batch
        val = self.validation_rows_ if len(self.validation_rows_) else labeled
        try:
            cfg = Config(algorithm=self.algorithm, model=model, iterations=n, batch_size=batch, lr=self.lr,
                         weight_decay=self.weight_decay, ema=ema_for(self.ema, n), num_labels=-1,
                         include_labeled_in_unlabeled=not len(pool), flip="false",
                         translate=2 if not tabular and min(height, width) >= 8 else 0,
                         warmup=n // 10, consistency_rampup=n // 5, seed=seed, split_seed=seed, device=self.device,
                         eval_every=n, checkpoint_every=n, log_every=max(1, n // 10)).resolved()
            with torch.random.fork_rng(devices=[]):                       # seeded init, caller's RNG untouched
                torch.manual_seed(seed)
                net = self._build_model(model, len(self.classes_), x.shape[1:])
        except (UserError, TypeError) as e:                             # a bad parameter value or type
            raise ValueError(f"{type(self).__name__}: {e}") from None
        # the trainer's "test" set is the validation rows (or the labeled ones): its error is results_["test_error"]
        data = ImageData(x_lb, y_lb, x[val], y_enc[val], [str(c) for c in self.classes_], flip=False,
                         x_unlabeled=x[pool] if len(pool) else None, name="estimator")
        try:
            run = train_run(cfg, None, model=net, data=data, quiet=not self.verbose)
        except UserError as e:                                          # e.g. divergence, model too big for X
            raise ValueError(f"{type(self).__name__}: {e}") from None
        self.results_ = run.results
        self.model_ = run.eval_model.eval()
        self.mean_, self.std_ = run.data.mean.cpu(), run.data.std.cpu()
        self.validation_score_ = (1 - self.results_["test_error"] / 100) if len(self.validation_rows_) else None
        return self

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        if check_random_state is not None:
            return int(check_random_state(self.random_state).randint(2**31 - 1))
        return int(np.random.default_rng(self.random_state).integers(2**31 - 1))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, len(classes_)), columns in the order of classes_."""
        from ..inference.evaluate import predict_logits

        if check_is_fitted is not None:
            check_is_fitted(self)
        elif not hasattr(self, "model_"):
            raise AttributeError(f"this {type(self).__name__} is not fitted yet; call fit first")
        X = self._validate(X, reset=False)
        dev = next(self.model_.parameters()).device
        with self._threads():
            logits = predict_logits(self.model_, to_nchw(self._to_nhwc(X), dev), self.mean_.to(dev),
                                    self.std_.to(dev), 1024)
        return torch.softmax(logits.double(), dim=1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Predicted labels (N,), values from classes_."""
        proba = self.predict_proba(X)                                    # checks fitted first
        return self.classes_[proba.argmax(axis=1)]


class _Threads:
    """torch.set_num_threads(n) inside the block, the previous count restored after (n None: unchanged)."""

    def __init__(self, n: int | None):
        self.n, self.before = n, torch.get_num_threads()

    def __enter__(self) -> None:
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.before)
