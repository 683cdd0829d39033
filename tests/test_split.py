"""labeled_split: class balance, determinism, disjointness, options, and every impossible request."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metassl.data import Split, labeled_split
from metassl.errors import UserError

Y = np.repeat(np.arange(10), 50)[np.random.default_rng(123).permutation(500)]   # 50 per class, shuffled


def test_class_balanced_and_partition():
    s = labeled_split(Y, 40, 10, seed=0, num_val=20)
    assert np.bincount(Y[s.labeled], minlength=10).tolist() == [4] * 10
    assert np.bincount(Y[s.val], minlength=10).tolist() == [2] * 10
    assert not set(s.labeled) & set(s.unlabeled) and not set(s.val) & (set(s.labeled) | set(s.unlabeled))
    assert len(s.labeled) + len(s.unlabeled) + len(s.val) == len(Y)
    for a in (s.labeled, s.unlabeled, s.val):
        assert a.dtype == np.int64 and np.all(np.diff(a) > 0)


def test_deterministic_and_seed_matters():
    a, b = labeled_split(Y, 40, 10, seed=3), labeled_split(Y.copy(), 40, 10, seed=3)
    np.testing.assert_array_equal(a.labeled, b.labeled)
    np.testing.assert_array_equal(a.unlabeled, b.unlabeled)
    assert not np.array_equal(a.labeled, labeled_split(Y, 40, 10, seed=4).labeled)


def test_independent_of_global_rng_state():
    """The split uses only its own seeded generator, never numpy/torch global state (the training seed)."""
    np.random.seed(0)
    a = labeled_split(Y, 40, 10, seed=1, num_val=10)
    np.random.seed(999)
    np.random.rand(17)
    b = labeled_split(Y, 40, 10, seed=1, num_val=10)
    np.testing.assert_array_equal(a.labeled, b.labeled)
    np.testing.assert_array_equal(a.val, b.val)


def test_smaller_labeled_set_is_nested_in_larger():
    small, large = labeled_split(Y, 20, 10, seed=5, num_val=10), labeled_split(Y, 100, 10, seed=5, num_val=10)
    assert set(small.labeled) <= set(large.labeled)
    np.testing.assert_array_equal(small.val, large.val)


def test_include_labeled_in_unlabeled():
    s = labeled_split(Y, 40, 10, seed=0, num_val=20, include_labeled_in_unlabeled=True)
    assert set(s.labeled) <= set(s.unlabeled) and len(s.unlabeled) == 480
    assert not set(s.val) & set(s.unlabeled)


def test_all_labels():
    s = labeled_split(Y, -1, 10, seed=0, num_val=30)
    assert len(s.labeled) == 470 and len(s.unlabeled) == 0 and len(s.val) == 30
    assert len(labeled_split(Y, -1, 10, seed=0, include_labeled_in_unlabeled=True).unlabeled) == 500
    assert len(labeled_split(Y, 500, 10, seed=0).labeled) == 500        # exactly every label also works


def test_to_dict_roundtrip_through_json():
    s = labeled_split(Y, 40, 10, seed=0, num_val=10)
    t = Split.from_dict(json.loads(json.dumps(s.to_dict())))
    for k in ("labeled", "unlabeled", "val"):
        np.testing.assert_array_equal(getattr(s, k), getattr(t, k))
        assert getattr(t, k).dtype == np.int64
    with pytest.raises(UserError):
        Split.from_dict({"labeled": [1]})


@pytest.mark.parametrize("kwargs, needle", [
    (dict(num_labels=45), "not divisible"),
    (dict(num_labels=0), "positive"),
    (dict(num_labels=-5), "positive"),
    (dict(num_labels=510), "class 0 has 50"),
    (dict(num_labels=400, num_val=200), "left after validation"),
    (dict(num_labels=10, num_val=15), "num_val"),
    (dict(num_labels=10, num_val=-10), "num_val"),
    (dict(num_labels=10, num_val=600), "num_val"),
    (dict(num_labels=10, num_classes=5), "0..4"),
])
def test_impossible_requests(kwargs, needle):
    args = dict(y=Y, num_labels=10, num_classes=10, seed=0) | kwargs
    with pytest.raises(UserError) as info:
        labeled_split(**args)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_missing_class_is_reported_by_name():
    y = np.array([0, 0, 1, 1, 3, 3])
    with pytest.raises(UserError, match="class 2 has 0"):
        labeled_split(y, 4, 4, seed=0)


def test_float_labels_rejected():
    with pytest.raises(UserError):
        labeled_split(Y.astype(float), 10, 10, seed=0)


@settings(max_examples=40, deadline=None)
@given(per_class=st.integers(1, 5), per_val=st.integers(0, 3), seed=st.integers(0, 2**32 - 1),
       include=st.booleans())
def test_property_partition(per_class, per_val, seed, include):
    s = labeled_split(Y, 10 * per_class, 10, seed, num_val=10 * per_val, include_labeled_in_unlabeled=include)
    assert np.bincount(Y[s.labeled], minlength=10).tolist() == [per_class] * 10
    covered = set(s.labeled) | set(s.unlabeled) | set(s.val)
    assert covered == set(range(len(Y))) and not set(s.val) & (set(s.labeled) | set(s.unlabeled))
    assert include == bool(set(s.labeled) & set(s.unlabeled))
