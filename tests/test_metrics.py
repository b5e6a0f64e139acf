import math

import numpy as np
import pytest
import torch

from lt_ray.metrics import (
    ALL_NAMES,
    metric_name,
    per_class_recall,
    shot_masks,
    split_metrics,
    summarize,
)


def test_per_class_recall_counts_hits_per_class():
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    preds = torch.tensor([0, 0, 0, 1, 1, 0, 2, 2])
    np.testing.assert_allclose(per_class_recall(preds, targets, 4)[:3], [0.75, 0.5, 1.0])
    assert math.isnan(per_class_recall(preds, targets, 4)[3])


def test_summary_matches_hand_computed_values():
    recall = np.array([0.9, 0.6, 0.3])
    counts = np.array([500, 50, 5])
    out = summarize(recall, counts)
    assert out["acc"] == pytest.approx(0.6)
    assert out["gm"] == pytest.approx((0.9 * 0.6 * 0.3) ** (1 / 3))
    assert out["hm"] == pytest.approx(3 / (1 / 0.9 + 1 / 0.6 + 1 / 0.3))
    assert out["lr"] == pytest.approx(0.3)
    assert (out["many"], out["medium"], out["few"]) == pytest.approx((0.9, 0.6, 0.3))


def test_zero_recall_makes_gm_and_hm_zero_and_eps_variant_does_not():
    recall = np.array([0.0] + [0.5] * 99)
    counts = np.arange(100, 0, -1)
    raw = summarize(recall, counts)
    assert raw["gm"] == 0.0 and raw["hm"] == 0.0 and raw["lr"] == 0.0
    eps = summarize(recall, counts, eps=1e-3)
    # METHODS.md §3: one class at 0.1% and 99 at 50% gives HM of about 8.3%
    assert eps["hm"] == pytest.approx(0.0834, abs=5e-4)


def test_shot_groups_follow_train_count_rule():
    masks = shot_masks(np.array([101, 100, 20, 19]))
    assert masks["many"].tolist() == [True, False, False, False]
    assert masks["medium"].tolist() == [False, True, True, False]
    assert masks["few"].tolist() == [False, False, False, True]


def test_empty_shot_group_is_nan():
    out = summarize(np.array([0.5, 0.5]), np.array([500, 400]))
    assert math.isnan(out["few"]) and math.isnan(out["medium"])


def test_split_metrics_uses_flat_names_and_top1_accuracy():
    targets = torch.tensor([0, 0, 1, 1])
    preds = torch.tensor([0, 1, 1, 1])
    flat, recall = split_metrics("val", preds, targets, torch.tensor([200, 10]))
    names = ("acc", "gm", "hm", "lr", "many", "medium", "few", "gm_eps", "hm_eps")
    assert set(flat) == {metric_name("val", m) for m in names}
    assert flat["val_acc"] == pytest.approx(0.75)
    assert flat["val_lr"] == pytest.approx(0.5)
    assert recall.tolist() == [0.5, 1.0]
    assert "fulltest_hm" in ALL_NAMES and "test_few" in ALL_NAMES


def test_unknown_metric_name_is_rejected():
    with pytest.raises(KeyError):
        metric_name("val", "f1")


def test_eps_variants_floor_a_zero_recall_at_1e3():
    recall = np.array([0.0, 0.5, 0.5, 0.5])
    out = summarize(recall, np.array([500, 50, 50, 5]))
    assert out["hm"] == 0.0 and out["gm"] == 0.0
    assert out["hm_eps"] == pytest.approx(4 / (1 / 1e-3 + 3 / 0.5))
    assert out["gm_eps"] == pytest.approx((1e-3 * 0.5**3) ** 0.25)
    full = summarize(np.array([0.9, 0.6]), np.array([500, 5]))
    assert full["hm_eps"] == full["hm"] and full["gm_eps"] == full["gm"]
    assert "val_hm_eps" in ALL_NAMES and "fulltest_gm_eps" in ALL_NAMES
