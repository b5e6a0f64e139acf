"""recompute_summary: long-tail metrics recomputed offline from per_class.parquet."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from lt_ray.errors import LTRayError
from lt_ray.metrics import METRICS
from lt_ray.results import TrialRecord, read_study, recompute_summary, write_study

COUNTS = [500, 50, 5]


def _record(trial_id: str, per_class: dict) -> TrialRecord:
    return TrialRecord(study="s", cell="", trial_id=trial_id, status="completed", error=None,
                       config={}, final={}, history=[], per_class=per_class,
                       class_names=["a", "b", "c"], train_class_counts=COUNTS, provenance={},
                       search_params={})


@pytest.fixture
def per_class(tmp_path) -> pd.DataFrame:
    write_study([
        _record("t1", {"val": [0.9, 0.6, 0.3], "test": [0.8, 0.0, 0.4]}),
        _record("t2", {"val": [None, None, None]}),
    ], tmp_path)
    return read_study(tmp_path).per_class


def test_matches_hand_computed_values(per_class):
    out = recompute_summary(per_class)
    assert list(out.columns) == ["study", "cell", "trial_id", "split", "output", *METRICS, "eps"]
    assert len(out) == 3
    val = out[(out.trial_id == "t1") & (out.split == "val")].iloc[0]
    assert val["acc"] == pytest.approx(0.6)
    assert val["gm"] == pytest.approx((0.9 * 0.6 * 0.3) ** (1 / 3))
    assert val["hm"] == pytest.approx(3 / (1 / 0.9 + 1 / 0.6 + 1 / 0.3))
    assert val["lr"] == pytest.approx(0.3)
    assert (val["many"], val["medium"], val["few"]) == pytest.approx((0.9, 0.6, 0.3))


def test_zero_recall_and_eps_variant(per_class):
    raw = recompute_summary(per_class).set_index(["trial_id", "split"])
    assert raw.loc[("t1", "test"), "hm"] == 0.0 and raw.loc[("t1", "test"), "gm"] == 0.0
    eps = recompute_summary(per_class, eps=1e-3).set_index(["trial_id", "split"])
    assert eps.loc[("t1", "test"), "hm"] == pytest.approx(3 / (1 / 0.8 + 1 / 1e-3 + 1 / 0.4))
    assert eps.loc[("t1", "test"), "gm"] == pytest.approx((0.8 * 1e-3 * 0.4) ** (1 / 3))
    assert eps.loc[("t1", "test"), "hm"] > 0 and (eps["eps"] == 1e-3).all()
    assert eps.loc[("t1", "test"), "medium"] == 0.0  # shot means use the raw recall


def test_all_null_recall_gives_nan_row(per_class):
    out = recompute_summary(per_class).set_index(["trial_id", "split"])
    assert all(math.isnan(out.loc[("t2", "val"), m]) for m in METRICS)


def test_empty_and_incomplete_input(per_class):
    empty = recompute_summary(per_class.iloc[:0])
    assert len(empty) == 0 and "hm" in empty.columns
    with pytest.raises(LTRayError, match="recall"):
        recompute_summary(per_class.drop(columns=["recall"]))
