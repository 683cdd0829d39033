"""metassl.MetaSSLClassifier: learns digits from ~10% labels, and follows scikit-learn's estimator API.

scikit-learn checks run here: the whole `check_estimator` suite (legacy=True, ~50 checks: cloning, params,
fit/predict contracts, input validation, NaN/inf, dtypes, pickling, idempotent fits, sample-order and
subset invariance, n_features_in_, NotFittedError, one-label/one-sample errors, accuracy on blobs)
with a 4-iteration budget, except `check_classifiers_classes`: it uses -1 as a class label, which this
estimator (like sklearn.semi_supervised) reads as "unlabeled". Checks needing pandas or SCIPY_ARRAY_API
are skipped by scikit-learn itself when those are absent.
"""
import subprocess
import sys

import numpy as np
import pytest
import torch

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.utils.estimator_checks import (check_estimator, check_get_params_invariance,  # noqa: E402
                                            check_set_params)

from metassl import MetaSSLClassifier  # noqa: E402


pytestmark = pytest.mark.usefixtures("one_thread")   # conftest.py


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's bundled 8x8 digits: 75/25 split, ~10% of the training labels kept (others -1)."""
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    y_semi = np.where(np.random.default_rng(0).random(len(y_tr)) < 0.1, y_tr, -1)
    return X_tr, y_semi, X_te, y_te


def test_learns_digits_as_tabular_rows_from_ten_percent_labels(digits):
    X_tr, y_semi, X_te, y_te = digits
    assert 100 < (y_semi >= 0).sum() < 170
    clf = MetaSSLClassifier(iterations=150, batch_size=32, random_state=0).fit(X_tr, y_semi)
    assert clf.n_features_in_ == 64 and list(clf.classes_) == list(range(10))
    assert not clf.keep_.all()                                   # constant border pixels are dropped
    proba = clf.predict_proba(X_te)
    assert proba.shape == (len(X_te), 10)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    assert (clf.predict(X_te) == clf.classes_[proba.argmax(1)]).all()
    assert clf.score(X_te, y_te) > 0.7                           # chance is 0.1


def test_learns_digits_as_images_with_the_cnn(digits):
    X_tr, y_semi, X_te, y_te = digits
    clf = MetaSSLClassifier(iterations=60, batch_size=32, lr=0.1, random_state=0).fit(X_tr.reshape(-1, 8, 8), y_semi)
    assert clf.input_shape_ == (8, 8) and type(clf.model_).__name__ == "SmallCNN"
    assert clf.score(X_te.reshape(-1, 8, 8), y_te) > 0.35        # chance is 0.1 (0.56 at 60 iterations)
    with pytest.raises(ValueError, match="shape"):
        clf.predict(X_te.reshape(-1, 8, 8)[:, :, :6])


def test_string_labels_with_unlabeled_rows_and_bad_parameters(digits):
    X_tr, y_semi, _, _ = digits
    names = np.array([f"digit {k}" for k in range(10)], dtype=object)
    y = np.where(y_semi >= 0, names[y_semi.clip(0)], -1).astype(object)
    clf = MetaSSLClassifier(iterations=5, batch_size=16, random_state=0).fit(X_tr, y)
    assert list(clf.classes_) == list(names) and set(clf.predict(X_tr[:20])) <= set(names)
    with pytest.raises(ValueError, match="iterations"):
        MetaSSLClassifier(iterations=0).fit(X_tr, y_semi)
    with pytest.raises(ValueError, match="algorithm"):
        MetaSSLClassifier(algorithm="nope").fit(X_tr, y_semi)
    with pytest.raises(ValueError, match="at least 2 classes"):
        MetaSSLClassifier().fit(X_tr, np.full(len(X_tr), -1))


def test_basic_api_checks_and_clone():
    est = MetaSSLClassifier(iterations=7, lr=0.1, random_state=3)
    check_get_params_invariance("MetaSSLClassifier", est)
    check_set_params("MetaSSLClassifier", est)
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert est.set_params(batch_size=8).batch_size == 8


def test_scikit_learn_check_estimator_suite():
    """4 iterations: the checks test the API contract, and even 2 pass every one (accuracy on blobs
    included); the fits' fixed cost is most of the ~7 s left (20 iterations took ~29 s)."""
    check_estimator(MetaSSLClassifier(iterations=4, batch_size=16, random_state=0), on_skip=None,
                    expected_failed_checks={"check_classifiers_classes":
                                            "-1 marks unlabeled rows, so it cannot be a class label"})


def test_import_metassl_stays_light():
    code = "import sys, metassl; assert 'sklearn' not in sys.modules and 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the small-data defaults ------------------------------------------------------------------------------
from metassl.estimator import classifier, recipe as est_mod  # noqa: E402


def test_auto_budget_is_derived_from_the_data_size():
    assert est_mod.auto_batch_size(1400) == 64 and est_mod.auto_batch_size(100) == 32
    assert est_mod.auto_iterations(1400, 64) == round(est_mod.EPOCHS * 1400 / 64)
    assert est_mod.auto_iterations(10, 32) == est_mod.MIN_ITERATIONS
    assert est_mod.auto_iterations(10**7, 128) == est_mod.MAX_ITERATIONS
    X, y = np.random.default_rng(0).normal(size=(90, 3)), np.repeat([0, 1, 2], 30)
    clf = MetaSSLClassifier(init="none", random_state=0).set_params(iterations=3)   # 'auto' batch, given budget
    clf.fit(X, y)
    assert clf.batch_size_ == est_mod.auto_batch_size(90) and clf.iterations_ == 3


def test_validation_rows_come_from_the_labeled_rows_only_and_their_labels_stay_hidden(digits, monkeypatch):
    X_tr, y_semi, X_te, _ = digits
    seen = {}
    real = est_mod.label_spreading_init

    def spy(X, y, **kw):
        seen["y"] = y.copy()
        return real(X, y, **kw)

    monkeypatch.setattr(est_mod, "label_spreading_init", spy)
    clf = MetaSSLClassifier(iterations=3, validation_fraction=0.2, init="label_spreading",
                            random_state=0).fit(X_tr, y_semi)
    val = clf.validation_rows_
    assert len(val) >= 10 and (y_semi[val] >= 0).all()                  # one or more per class, labeled rows only
    assert (seen["y"][val] == -1).all()                                   # the init never sees their labels
    assert (seen["y"] >= 0).sum() == (y_semi >= 0).sum() - len(val)
    assert 0 <= clf.validation_score_ <= 1 and len(X_tr) + len(X_te) > len(X_tr)  # fit saw X_tr alone
    assert MetaSSLClassifier(iterations=3, init="none", random_state=0).fit(X_tr, y_semi).validation_score_ is None


def test_label_spreading_init_labels_confident_unlabeled_rows(digits, monkeypatch):
    X_tr, y_semi, _, _ = digits
    rows, labels = est_mod.label_spreading_init(X_tr.astype(float), y_semi)
    assert len(rows) == round(est_mod.INIT_SHARE * (y_semi == -1).sum()) and (y_semi[rows] == -1).all()
    _, _, y_tr, _ = train_test_split(*load_digits(return_X_y=True), test_size=0.25, stratify=load_digits().target,
                                     random_state=0)
    assert (labels == y_tr[rows]).mean() > 0.95                         # y_semi's classes are 0..9: encoding = label
    on = MetaSSLClassifier(iterations=2, init="label_spreading", random_state=0).fit(X_tr, y_semi)
    off = MetaSSLClassifier(iterations=2, random_state=0).fit(X_tr, y_semi)             # the default: no init
    assert on.n_pseudo_labels_ == len(rows) and off.n_pseudo_labels_ == 0
    assert est_mod.shared_scale(X_tr) and not est_mod.shared_scale(X_tr * np.r_[np.ones(63), 1000.0])


def test_n_jobs_sets_torch_threads_only_during_fit(digits):
    X_tr, y_semi, _, _ = digits
    before = torch.get_num_threads()
    MetaSSLClassifier(iterations=2, n_jobs=2, init="none", random_state=0).fit(X_tr, y_semi)
    assert torch.get_num_threads() == before
    with pytest.raises(ValueError, match="n_jobs"):
        MetaSSLClassifier(iterations=2, n_jobs=0).fit(X_tr, y_semi)


def test_label_spreading_init_without_scikit_learn_is_refused_not_skipped(monkeypatch):
    monkeypatch.setattr(classifier, "BaseEstimator", None)          # as if scikit-learn were not installed
    X, y = np.random.default_rng(0).normal(size=(40, 3)), np.repeat([0, 1, -1, -1], 10)
    with pytest.raises(ValueError, match="init='label_spreading' needs scikit-learn"):
        MetaSSLClassifier(init="label_spreading", iterations=2, random_state=0).fit(X, y)
