"""write_study -> read_study round trip of synthetic trial records (no Ray)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lt_ray.config import ExperimentConfig
from lt_ray.errors import LTRayError
from lt_ray.metrics import ALL_NAMES, EVAL_SPLITS, METRICS
from lt_ray.results import StudyTables, TrialRecord, read_study, write_study
from lt_ray.results import schema as S

PROV = {
    "lt_ray_version": "0.1.0", "git_sha": "abc123", "git_dirty": False, "torch_version": "2.4",
    "ray_version": None, "optuna_version": "5.0.0", "device": "cpu", "gpu_name": None,
    "hostname": "box", "resources_cpu": 1, "resources_gpu": 0.25,
}
CLASS_NAMES = ["cat", "dog", "eel"]
FULLTEST_ACC = 0.4 + 0.01 * 2 * len(METRICS)  # _metrics(): fulltest_acc follows val_*, test_*
COUNTS = [500, 50, 5]


def _config(lr: float, **loss_args) -> dict:
    cfg = ExperimentConfig().replace({"optim.lr": lr, "data.imb_factor": 100})
    out = cfg.to_dict()
    out["method"]["loss_args"] = dict(loss_args)
    return out


def _metrics(splits, base: float) -> dict:
    names = [n for n in ALL_NAMES if n.split("_")[0] in splits]
    return {n: base + 0.01 * i for i, n in enumerate(names)}


def make_records() -> list[TrialRecord]:
    history = [
        {"epoch": 1, "learning_rate": 0.05, "train_loss": 2.0, "train_acc": 0.3,
         "epoch_time_s": 1.5, "train_images_per_s": 1000.0, **_metrics(("val", "test"), 0.2)},
        {"epoch": 2, "learning_rate": 0.01, "train_loss": 1.5, "train_acc": 0.5,
         "epoch_time_s": 1.4, "train_images_per_s": 1100.0,
         **_metrics(("val", "test", "fulltest"), 0.4),
         "training_iteration": 2},  # an unknown key is ignored
    ]
    final = {**history[-1], "wall_time_s": 3.0, "device": "cpu", "val_few": float("nan")}
    completed = TrialRecord(
        study="s", cell="data.imb_factor=100", trial_id="t001", status="completed", error=None,
        config=_config(0.05, gamma=1.5), final=final, history=history,
        per_class={sp: [0.9, 0.6, 0.3] for sp in EVAL_SPLITS}, class_names=CLASS_NAMES,
        train_class_counts=COUNTS, provenance=PROV, search_params={"optim.lr": 0.05},
    )
    failed = TrialRecord(
        study="s", cell="data.imb_factor=100", trial_id="t000", status="failed",
        error="RuntimeError: CUDA out of memory", config=_config(0.2), final={}, history=[],
        per_class={}, class_names=[], train_class_counts=[], provenance=PROV,
        search_params={"optim.lr": 0.2},
    )
    early = TrialRecord(
        study="s", cell="data.imb_factor=100", trial_id="t002", status="early_stopped",
        error=None, config=_config(0.01), final={**history[0], "wall_time_s": 1.5},
        history=history[:1], per_class={sp: [0.5, 0.0, None] for sp in ("val", "test")},
        class_names=CLASS_NAMES, train_class_counts=COUNTS, provenance=PROV,
        search_params={"optim.lr": 1},  # int next to floats: the column stays float64
    )
    return [completed, failed, early]


@pytest.fixture
def tables(tmp_path) -> StudyTables:
    paths = write_study(make_records(), tmp_path / "s")
    assert set(paths) == {"trials.parquet", "epochs.parquet", "per_class.parquet"}
    assert all(Path(p).is_file() and Path(p).parent == tmp_path / "s" for p in paths.values())
    return read_study(tmp_path / "s")


def test_row_counts(tables):
    assert len(tables.trials) == 3
    assert len(tables.epochs) == 2 + 0 + 1
    assert len(tables.per_class) == 3 * 3 + 0 + 3 * 2


def test_rows_sorted_by_cell_trial_epoch(tables):
    assert tables.trials["trial_id"].tolist() == ["t000", "t001", "t002"]
    assert list(zip(tables.epochs["trial_id"], tables.epochs["epoch"], strict=True)) == [
        ("t001", 1), ("t001", 2), ("t002", 1)]
    pc = tables.per_class
    assert pc[pc.trial_id == "t001"]["split"].tolist() == ["val"] * 3 + ["test"] * 3 + [
        "fulltest"] * 3
    assert pc[pc.trial_id == "t001"]["class_index"].tolist() == [0, 1, 2] * 3


def test_fixed_columns_and_arrow_types(tmp_path):
    write_study(make_records(), tmp_path)
    for name, fixed in ((S.TRIALS_FILE, S.TRIALS_FIXED_SCHEMA), (S.EPOCHS_FILE, S.EPOCHS_SCHEMA),
                        (S.PER_CLASS_FILE, S.PER_CLASS_SCHEMA)):
        schema = pq.read_schema(tmp_path / name)
        assert schema.names[: len(fixed)] == fixed.names
        for f in fixed:
            assert schema.field(f.name).type == f.type, (name, f.name)
        assert schema.metadata[b"lt_ray.results.format"] == S.FORMAT_VERSION.encode() == b"2"
    trials = pq.read_schema(tmp_path / S.TRIALS_FILE)
    for n in (*ALL_NAMES, "train_loss", "train_acc", "wall_time_s", "train_images_per_s",
              "imb_factor", "resources_gpu"):
        assert trials.field(n).type == pa.float64()
    for n in ("seed", "split_seed", "epochs_completed"):
        assert trials.field(n).type == pa.int64()
    assert trials.field("git_dirty").type == pa.bool_()
    assert trials.field("cfg.optim.lr").type == pa.float64()
    assert trials.field("cfg.train.epochs").type == pa.int64()
    assert trials.field("cfg.optim.nesterov").type == pa.bool_()
    assert trials.field("cfg.data.root").type == pa.string()  # all null
    assert trials.field("cfg.optim.milestones").type == pa.string()  # tuple -> JSON
    assert trials.field("hp.optim.lr").type == pa.float64()
    epochs = pq.read_schema(tmp_path / S.EPOCHS_FILE)
    assert epochs.field("epoch").type == pa.int64()
    assert all(epochs.field(n).type == pa.float64() for n in ALL_NAMES)
    assert "training_iteration" not in epochs.names


def test_pandas_dtypes(tables):
    t = tables.trials
    assert str(t["seed"].dtype) == "Int64" and str(t["epochs_completed"].dtype) == "Int64"
    assert str(t["git_dirty"].dtype) == "boolean"
    assert all(t[n].dtype == "float64" for n in ALL_NAMES)
    assert pd.api.types.is_string_dtype(t["status"])
    pc = tables.per_class
    assert str(pc["class_index"].dtype) == "Int64" and pc["recall"].dtype == "float64"


def test_trial_values(tables):
    t = tables.trials.set_index("trial_id")
    assert t.loc["t001", "cfg.optim.lr"] == 0.05
    assert t.loc["t001", "hp.optim.lr"] == 0.05
    assert t.loc["t002", "hp.optim.lr"] == 1.0
    assert t.loc["t000", "cfg.optim.lr"] == 0.2
    assert t.loc["t001", "cfg.method.loss_args.gamma"] == 1.5
    assert pd.isna(t.loc["t000", "cfg.method.loss_args.gamma"])
    assert json.loads(t.loc["t001", "cfg.optim.milestones"]) == [0.8, 0.9]
    assert json.loads(t.loc["t001", "config_json"])["optim"]["lr"] == 0.05
    assert t.loc["t001", "method"] == "ce" and t.loc["t001", "dataset"] == "cifar10"
    assert t.loc["t001", "imb_factor"] == 100.0 and t.loc["t001", "arch"] == "resnet32"
    assert t.loc["t001", "seed"] == 0 and t.loc["t001", "split_seed"] == 0
    assert t.loc["t001", "status"] == "completed" and t.loc["t002", "status"] == "early_stopped"
    assert t.loc["t001", "epochs_completed"] == 2 and t.loc["t002", "epochs_completed"] == 1
    assert t.loc["t000", "epochs_completed"] == 0
    assert t.loc["t001", "wall_time_s"] == 3.0 and t.loc["t001", "train_loss"] == 1.5
    assert t.loc["t001", "val_acc"] == pytest.approx(0.4)
    assert math.isnan(t.loc["t001", "val_few"])  # NaN stored as null
    assert t.loc["t001", "fulltest_acc"] == pytest.approx(FULLTEST_ACC)
    assert t.loc["t001", "git_sha"] == "abc123" and not t.loc["t001", "git_dirty"]
    assert t.loc["t001", "resources_gpu"] == 0.25 and pd.isna(t.loc["t001", "ray_version"])


def test_failed_trial_has_error_and_null_metrics(tables):
    failed = tables.trials.set_index("trial_id").loc["t000"]
    assert failed["status"] == "failed" and "out of memory" in failed["error"]
    for n in (*ALL_NAMES, "train_loss", "train_acc", "wall_time_s", "train_images_per_s"):
        assert pd.isna(failed[n]), n
    assert pd.isna(tables.trials.set_index("trial_id").loc["t001", "error"])
    assert "t000" not in set(tables.epochs["trial_id"]) | set(tables.per_class["trial_id"])
    early = tables.trials.set_index("trial_id").loc["t002"]
    assert pd.isna(early["fulltest_acc"]) and not pd.isna(early["val_acc"])


def test_epochs_values(tables):
    e = tables.epochs.set_index(["trial_id", "epoch"])
    assert e.loc[("t001", 1), "learning_rate"] == 0.05 and e.loc[("t001", 2), "train_loss"] == 1.5
    assert pd.isna(e.loc[("t001", 1), "fulltest_acc"])
    assert e.loc[("t001", 2), "fulltest_acc"] == pytest.approx(FULLTEST_ACC)
    assert (e["study"] == "s").all() and (e["cell"] == "data.imb_factor=100").all()


def test_per_class_values(tables):
    pc = tables.per_class
    row = pc[(pc.trial_id == "t001") & (pc.split == "test") & (pc.class_index == 2)].iloc[0]
    assert (row["class_name"], row["train_count"], row["recall"]) == ("eel", 5, 0.3)
    none = pc[(pc.trial_id == "t002") & (pc.split == "val") & (pc.class_index == 2)].iloc[0]
    assert math.isnan(none["recall"])


def test_write_twice_is_idempotent_and_leaves_no_tmp(tmp_path):
    write_study(make_records(), tmp_path)
    first = {n: pq.read_table(tmp_path / n) for n in S.FILES}
    first_bytes = {n: (tmp_path / n).read_bytes() for n in S.FILES}
    write_study(list(reversed(make_records())), tmp_path)  # order of records does not matter
    for n in S.FILES:
        assert pq.read_table(tmp_path / n).equals(first[n], check_metadata=True)
        assert (tmp_path / n).read_bytes() == first_bytes[n]
    assert not list(tmp_path.glob("*.tmp"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(S.FILES)


def test_zero_records_give_empty_tables_with_columns(tmp_path):
    paths = write_study([], tmp_path / "empty")
    assert all(Path(p).is_file() for p in paths.values())
    tables = read_study(tmp_path / "empty")
    assert len(tables.trials) == len(tables.epochs) == len(tables.per_class) == 0
    assert list(tables.trials.columns) == S.TRIALS_FIXED_SCHEMA.names
    assert list(tables.epochs.columns) == S.EPOCHS_SCHEMA.names
    assert list(tables.per_class.columns) == S.PER_CLASS_SCHEMA.names


def test_mixed_types_in_a_dynamic_column_become_strings(tmp_path):
    a, b, c = make_records()
    a = TrialRecord(**{**a.__dict__, "search_params": {"method.loss": "focal"}})
    b = TrialRecord(**{**b.__dict__, "search_params": {"method.loss": 3}})
    c = TrialRecord(**{**c.__dict__, "search_params": {"method.loss": True}})
    write_study([a, b, c], tmp_path)
    assert pq.read_schema(tmp_path / S.TRIALS_FILE).field("hp.method.loss").type == pa.string()
    t = read_study(tmp_path).trials.set_index("trial_id")
    assert t["hp.method.loss"].to_dict() == {"t000": "3", "t001": "focal", "t002": "true"}


def test_bad_records_are_rejected(tmp_path):
    rec = make_records()[0]
    with pytest.raises(ValueError, match="duplicate"):
        write_study([rec, rec], tmp_path)
    bad = TrialRecord(**{**rec.__dict__, "status": "TERMINATED"})
    with pytest.raises(ValueError, match="status"):
        write_study([bad], tmp_path)
    bad = TrialRecord(**{**rec.__dict__, "final": {"val_acc": "high"}})
    with pytest.raises(ValueError, match="val_acc"):
        write_study([bad], tmp_path)
    assert not list(tmp_path.iterdir())


def test_missing_folder_or_file_raises_clear_error(tmp_path):
    with pytest.raises(LTRayError, match="lt-ray export") as info:
        read_study(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    write_study(make_records(), tmp_path)
    (tmp_path / S.EPOCHS_FILE).unlink()
    with pytest.raises(LTRayError, match=r"epochs\.parquet.*lt-ray export"):
        read_study(tmp_path)


def test_missing_fixed_columns_are_named(tmp_path):
    write_study(make_records(), tmp_path)
    table = pq.read_table(tmp_path / S.PER_CLASS_FILE).drop_columns(["recall", "split"])
    pq.write_table(table, tmp_path / S.PER_CLASS_FILE)
    with pytest.raises(LTRayError, match="split, recall"):
        read_study(tmp_path)


def test_results_package_imports_no_ray_or_optuna():
    import subprocess

    code = ("import sys, lt_ray.results, lt_ray.results.provenance as p; p.collect_provenance();"
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'optuna')];"
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_named_outputs_get_their_own_metric_columns_and_per_class_rows(tmp_path):
    from lt_ray.results import recompute_summary

    history = [{"epoch": 1, "test_hm": 0.5, "test_hm_old": 0.2, "test_hm_new": 0.5}]
    record = TrialRecord(
        study="s", cell="", trial_id="g1", status="completed", config=_config(0.05),
        final={**history[0], "test_acc_ens": 0.61, "val_hm_eps_old": 0.3}, history=history,
        per_class={"test": [0.9, 0.6, 0.3], "test/old": [1.0, 0.5, 0.0]},
        class_names=CLASS_NAMES, train_class_counts=COUNTS, provenance=PROV,
    )
    write_study([record], tmp_path / "g")
    tables = read_study(tmp_path / "g")
    row = tables.trials.iloc[0]
    assert (row["test_hm_old"], row["test_hm_new"], row["test_acc_ens"]) == (0.2, 0.5, 0.61)
    assert row["val_hm_eps_old"] == 0.3 and row["test_hm"] == 0.5
    assert tables.epochs.iloc[0]["test_hm_old"] == 0.2
    pc = tables.per_class
    assert pc[pc.output.isna()].recall.tolist() == [0.9, 0.6, 0.3]  # the primary output
    assert pc[pc.output == "old"].recall.tolist() == [1.0, 0.5, 0.0]
    summary = recompute_summary(pc).set_index("output", drop=False)
    assert summary.loc["old", "lr"] == 0.0 and summary.loc["old", "hm"] == 0.0
