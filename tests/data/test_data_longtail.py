"""Per-class counts, the kept subset and the val/test split (METHODS.md §1.1, §1.2)."""

from __future__ import annotations

import numpy as np
import pytest

from lt_ray.data import class_counts, select_longtail, split_val_test


def test_cifar10_exp_counts():
    c = class_counts(5000.0, 10, "exp", 100)
    assert c == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert sum(c) == 12406
    c10 = class_counts(5000.0, 10, "exp", 10)
    assert c10 == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert sum(c10) == 20431


@pytest.mark.parametrize("imb, total", [(100, 10847), (50, 12608), (10, 19573), (200, 9502)])
def test_cifar100_exp_sums(imb, total):
    c = class_counts(500.0, 100, "exp", imb)
    assert sum(c) == total
    assert c[0] == 500
    assert c[-1] == int(500 / imb)


def test_cifar100_exp_if100_boundaries_and_shot_groups():
    c = class_counts(500.0, 100, "exp", 100)
    assert c[30:40] == [123, 118, 112, 107, 102, 98, 93, 89, 85, 81]
    assert c[66:74] == [23, 22, 21, 20, 19, 18, 17, 16]
    many = sum(n > 100 for n in c)
    few = sum(n < 20 for n in c)
    assert (many, 100 - many - few, few) == (35, 35, 30)


@pytest.mark.parametrize("imb, total", [(100, 25250), (10, 27500)])
def test_cifar100_step(imb, total):
    assert sum(class_counts(500.0, 100, "step", imb)) == total


def test_none_is_balanced():
    assert class_counts(500.0, 100, "none", 100) == [500] * 100


def _reference_subset(labels: np.ndarray, counts: list[int], seed: int) -> np.ndarray:
    """LDAM-DRW ``gen_imbalanced_data`` with ``np.random.seed(rand_number)``."""
    np.random.seed(seed)
    out = []
    for the_class, n in zip(np.unique(labels), counts, strict=False):
        idx = np.where(labels == the_class)[0]
        np.random.shuffle(idx)
        out.append(idx[:n])
    return np.concatenate(out)


@pytest.mark.parametrize("seed", [0, 3])
def test_select_longtail_matches_reference_and_keeps_global_rng(seed):
    rng = np.random.default_rng(5)
    labels = rng.permutation(np.repeat(np.arange(10), 500))
    counts = class_counts(500.0, 10, "exp", 100)

    np.random.seed(1234)
    before = np.random.get_state()
    kept = select_longtail(labels, counts, seed)
    after = np.random.get_state()
    assert before[0] == after[0] and np.array_equal(before[1], after[1]) and before[2:] == after[2:]

    ref = _reference_subset(labels, counts, seed)
    np.testing.assert_array_equal(kept, ref)
    assert kept.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(labels[kept]), counts)
    assert np.all(np.diff(labels[kept]) >= 0)  # concatenated class by class


def test_split_val_test_properties():
    labels = np.repeat(np.arange(10), 100)
    labels = np.random.default_rng(0).permutation(labels)
    val, test = split_val_test(labels, 0.5, seed=0)
    assert np.intersect1d(val, test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([val, test])), np.arange(labels.size))
    assert np.all(np.bincount(labels[val]) == 50) and np.all(np.bincount(labels[test]) == 50)

    val2, test2 = split_val_test(labels, 0.5, seed=0)
    np.testing.assert_array_equal(val, val2)
    np.testing.assert_array_equal(test, test2)
    val3, _ = split_val_test(labels, 0.5, seed=1)
    assert not np.array_equal(val, val3)

    v, t = split_val_test(labels, 0.3, seed=0)
    assert np.all(np.bincount(labels[v]) == 30) and np.all(np.bincount(labels[t]) == 70)


def test_split_val_test_keeps_both_sides_for_tiny_classes():
    labels = np.array([0, 0, 1, 1, 1])
    v, t = split_val_test(labels, 0.1, seed=0)
    assert set(labels[v]) == {0, 1} and set(labels[t]) == {0, 1}


def test_split_does_not_touch_global_rng():
    np.random.seed(7)
    before = np.random.get_state()[1].copy()
    split_val_test(np.repeat(np.arange(3), 10), 0.5, seed=0)
    assert np.array_equal(before, np.random.get_state()[1])
