"""A scikit-learn-style classifier over the trainer: `fit(X, y)` with y = -1 marking unlabeled rows.

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from metassl import MetaSSLClassifier

    X, y = load_digits(return_X_y=True)                    # (1797, 64) pixel values 0..16, 10 classes
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    y_semi = np.where(np.random.default_rng(0).random(len(y_tr)) < 0.1, y_tr, -1)   # keep ~10% of labels
    clf = MetaSSLClassifier(iterations=600, random_state=0).fit(X_tr, y_semi)        # tabular: mlp backbone
    print(clf.score(X_te, y_te))
    clf_img = MetaSSLClassifier(iterations=600, random_state=0).fit(X_tr.reshape(-1, 8, 8), y_semi)  # cnn

Design: one training loop. Both images and tabular rows go through `metassl.train.train` with an
in-memory `ImageData` whose labeled rows form the training set (`num_labels=-1`) and whose unlabeled
rows are `x_unlabeled`, so the algorithm's step, schedules, EMA and checkpoints are exactly those of
`metassl train`. Tabular rows (N, D) are laid out as D channels of a 1x1 image, (N, 1, 1, D) NHWC:
the trainer uses float inputs as they are, and its per-channel mean/std (computed over labeled and
unlabeled rows) then standardise each feature, in training and in `predict`. Features constant over
the training rows are dropped (`keep_`), since their std of 0 would divide by zero. The 1x1 layout
gets no augmentation (translate=0, no flip); the `mlp` backbone flattens it back to (N, D).
Images (N, H, W) or (N, H, W, C) become float32, integer dtypes divided by 255 (the 0..255 scale);
weak augmentation is a random translation by up to 2 pixels (none below 8x8), no flips (digits and
text are not mirror-symmetric). The warm-up takes the first 10% of `iterations` and the consistency
weight ramps up over the first 20%, so short budgets are not all warm-up. With no unlabeled rows the
labeled rows also serve as unlabeled ones (the paper's Theorem 2 setting). The run is written to a
temporary directory and deleted; the fitted network (the weights the run evaluates) is `model_`.
"""
from __future__ import annotations

import inspect
import tempfile
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .data import ImageData
from .errors import UserError
from .torch_utils import to_nchw

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
        iterations    training iterations (one labeled + one unlabeled batch each)
        batch_size    labeled rows per iteration (unlabeled: the same)
        lr            peak SGD learning rate (cosine schedule, 10% linear warm-up)
        random_state  int for reproducible fits; None draws a seed
        device        'cpu', 'cuda', 'cuda:N' or 'auto'
    Fitted: classes_, n_features_in_ (X.shape[1], scikit-learn's convention), input_shape_ (X.shape[1:]),
    keep_ (tabular: the non-constant features used), model_ (torch module), mean_/std_ (per-channel
    normalisation), results_ (the trainer's results; its test_error is the error on the labeled rows).
    See the module docstring for the design and a load_digits example.
    """

    def __init__(self, algorithm: str = "metamixup", model: str = "auto", iterations: int = 1000,
                 batch_size: int = 64, lr: float = 0.05, random_state: int | None = None, device: str = "cpu"):
        self.algorithm = algorithm
        self.model = model
        self.iterations = iterations
        self.batch_size = batch_size
        self.lr = lr
        self.random_state = random_state
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
        if X.ndim == 2:
            return np.ascontiguousarray(X[:, self.keep_], dtype=np.float32)[:, None, None, :]
        x = X if X.ndim == 4 else X[..., None]
        return x.astype(np.float32) / 255 if x.dtype.kind in "biu" else x.astype(np.float32)

    # --- fit / predict -------------------------------------------------------------------------------------
    def fit(self, X, y) -> "MetaSSLClassifier":
        """Train on the labeled rows (y != -1) and the unlabeled ones (y == -1)."""
        from .evaluate import load_run
        from .train import train

        X, y = self._validate(X, y)
        if X.ndim not in (2, 3, 4):
            raise ValueError(f"X must be (N, D) rows or (N, H, W[, C]) images, got shape {X.shape}")
        unlabeled = np.asarray(y == -1, bool) if y.dtype.kind in "iufO" else np.zeros(len(y), bool)
        if check_classification_targets is not None:
            check_classification_targets(y[~unlabeled])
        self.classes_, y_enc = np.unique(y[~unlabeled], return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"{type(self).__name__} needs labeled rows (y != -1) of at least 2 classes; "
                             f"got {len(self.classes_)} class")
        self.input_shape_ = X.shape[1:]
        tabular = X.ndim == 2
        if tabular:
            self.keep_ = X.std(axis=0) > 0
            if not self.keep_.any():
                raise ValueError("every feature of X is constant; there is nothing to learn from")
        x = self._to_nhwc(X)                                             # (N, H, W, C) float32
        height, width = x.shape[1:3]
        model = self.model if self.model != "auto" else ("mlp" if tabular else "cnn")
        if model == "mlp" and height != width:
            raise ValueError(f"model='mlp' needs square images, got {height}x{width}; use model='cnn'")
        if not tabular and (x.std(axis=(0, 1, 2)) == 0).any():
            raise ValueError("an image channel is constant over X; drop it (its std of 0 would divide by zero)")
        n, seed = self.iterations, self._seed()
        try:
            cfg = Config(algorithm=self.algorithm, model=model, iterations=n, batch_size=self.batch_size, lr=self.lr,
                         num_labels=-1, include_labeled_in_unlabeled=not unlabeled.any(), flip="false",
                         translate=2 if not tabular and min(height, width) >= 8 else 0,
                         warmup=n // 10, consistency_rampup=n // 5, seed=seed, split_seed=seed, device=self.device,
                         eval_every=n, checkpoint_every=n, log_every=max(1, n // 10)).resolved()
        except (UserError, TypeError) as e:                             # a bad parameter value or type
            raise ValueError(f"{type(self).__name__}: {e}") from None
        # the trainer's "test" set is the labeled rows: its error there is results_["test_error"]
        data = ImageData(x[~unlabeled], y_enc, x[~unlabeled], y_enc, [str(c) for c in self.classes_],
                         flip=False, x_unlabeled=x[unlabeled] if unlabeled.any() else None, name="estimator")
        try:
            with tempfile.TemporaryDirectory(prefix="metassl-") as tmp:
                self.results_ = train(cfg, Path(tmp) / "run", data=data, quiet=True)
                self.model_, _, state = load_run(Path(tmp) / "run", self.device)
        except UserError as e:                                          # e.g. divergence, model too big for X
            raise ValueError(f"{type(self).__name__}: {e}") from None
        self.mean_, self.std_ = state["mean"], state["std"]
        return self

    def _seed(self) -> int:
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        if check_random_state is not None:
            return int(check_random_state(self.random_state).randint(2**31 - 1))
        return int(np.random.default_rng(self.random_state).integers(2**31 - 1))

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (N, len(classes_)), columns in the order of classes_."""
        from .evaluate import predict_logits

        if check_is_fitted is not None:
            check_is_fitted(self)
        elif not hasattr(self, "model_"):
            raise AttributeError(f"this {type(self).__name__} is not fitted yet; call fit first")
        X = self._validate(X, reset=False)
        dev = next(self.model_.parameters()).device
        logits = predict_logits(self.model_, to_nchw(self._to_nhwc(X), dev), self.mean_.to(dev), self.std_.to(dev), 1024)
        return torch.softmax(logits.double(), dim=1).cpu().numpy()

    def predict(self, X) -> np.ndarray:
        """Predicted labels (N,), values from classes_."""
        proba = self.predict_proba(X)                                    # checks fitted first
        return self.classes_[proba.argmax(axis=1)]
