"""Real Ray Tune studies on a local Ray: trials, Parquet, failures, resources, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from conftest import TINY
from lt_ray.cli import main
from lt_ray.errors import LTRayError
from lt_ray.metrics import ALL_NAMES
from lt_ray.tune.space import parse_spec

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def study(name: str, **extra) -> dict:
    raw = {
        "name": name,
        "base": TINY,
        "space": {"optim.lr": {"loguniform": [0.01, 0.1]}},
        "search": {"metric": "val_acc", "mode": "max", "num_samples": 2, "max_concurrent": 2},
        "resources": {"cpu": 1},
    }
    raw.update(extra)
    return raw


def write(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_sweep_runs_trials_records_failures_and_writes_parquet(tmp_path):
    # two grid cells with a searched learning rate
    raw = study("e2e", grid={"optim.momentum": [0.9, 0.0]},
                space={"optim.lr": {"choice": [0.05]}})
    raw["base"] = {**TINY, "optim": {"weight_decay": 0.0005}}
    path = write(tmp_path, raw)
    journal = tmp_path / "optuna.log"
    res = CliRunner().invoke(main, ["sweep", path, "--storage", str(tmp_path / "res"),
                                    "--no-dashboard", "--optuna-storage", str(journal)])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "res" / "e2e"
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    studies = optuna.get_all_study_summaries(JournalStorage(JournalFileBackend(str(journal))))
    assert sorted((s.study_name, s.n_trials) for s in studies) == [
        ("e2e-cell-00", 2), ("e2e-cell-01", 2)]
    trials = pd.read_parquet(folder / "trials.parquet")
    epochs = pd.read_parquet(folder / "epochs.parquet")
    per_class = pd.read_parquet(folder / "per_class.parquet")
    assert len(trials) == 4 and set(trials.status) == {"completed"}
    for col in ("trial_id", "method", "cfg.optim.lr", "hp.optim.lr", "cfg.optim.momentum",
                "wall_time_s", "git_sha", "torch_version", "ray_version", "optuna_version",
                "device", *ALL_NAMES):
        assert col in trials.columns, col
    assert trials["fulltest_acc"].notna().all() and trials["val_hm"].notna().all()
    assert (trials["wall_time_s"] > 0).all()
    assert sorted(trials["cfg.optim.momentum"]) == [0.0, 0.0, 0.9, 0.9]
    assert len(epochs) == 4 * 2 and set(epochs.epoch) == {1, 2}
    assert set(per_class.trial_id) == set(trials.trial_id)
    assert len(per_class) == 4 * 3 * 4  # trials x splits (val, test, fulltest) x classes
    assert "best val_acc" in res.output
    # export again: idempotent
    before = trials.sort_values("trial_id").reset_index(drop=True)
    assert CliRunner().invoke(main, ["export", str(folder)]).exit_code == 0
    after = pd.read_parquet(folder / "trials.parquet").sort_values("trial_id")
    pd.testing.assert_frame_equal(before, after.reset_index(drop=True))
    # the same study again without --resume is refused, nothing changes
    res = CliRunner().invoke(main, ["sweep", path, "--storage", str(tmp_path / "res")])
    assert res.exit_code == 2 and "already exists" in res.output


def test_failing_trial_is_recorded_and_the_study_continues(tmp_path):
    raw = study("fails", grid={"optim.lr": [0.05, 1.0e30]}, space={})
    raw["search"]["num_samples"] = 1
    res = CliRunner().invoke(main, ["sweep", write(tmp_path, raw), "--storage",
                                    str(tmp_path / "res"), "--no-dashboard"])
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / "res" / "fails" / "trials.parquet")
    by_lr = trials.set_index("cfg.optim.lr")
    assert by_lr.loc[0.05, "status"] == "completed"
    assert by_lr.loc[1.0e30, "status"] == "failed"
    assert "NaN/inf" in by_lr.loc[1.0e30, "error"]
    assert "FAILED" in res.output


def test_resume_on_missing_study_and_unreachable_address(tmp_path):
    path = write(tmp_path, study("nothing"))
    res = CliRunner().invoke(main, ["sweep", path, "--storage", str(tmp_path), "--resume"])
    assert res.exit_code == 2 and "holds no study" in res.output
    res = CliRunner().invoke(main, ["sweep", path, "--storage", str(tmp_path / "r"),
                                    "--address", "127.0.0.1:1"])
    assert res.exit_code == 2 and "cannot start or reach Ray" in res.output
    assert not (tmp_path / "r" / "nothing" / "study.json").exists()


def test_fake_gpu_packs_four_quarter_gpu_trials_and_cpu_only_is_refused(tmp_path):
    import ray

    from lt_ray.tune.runner import check_resources, fit_cell

    raw = study("pack", resources={"cpu": 0.5, "gpu": 0.25})
    raw["search"].update(num_samples=4, max_concurrent=4)
    raw["base"] = {**TINY, "train": {**TINY["train"], "epochs": 1}}
    spec = parse_spec(raw)
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False)
    try:
        assert check_resources(spec) == 4
        cell = spec.cells()[0]
        (tmp_path / "pack").mkdir()
        results = fit_cell(spec, cell, tmp_path / "pack", resume=False, data_root=None,
                           optuna_storage=None).results
        spans = [(r.metrics["timestamp"] - r.metrics["time_total_s"], r.metrics["timestamp"])
                 for r in results]
        assert len(spans) == 4 and all(r.error is None for r in results)
        latest_start = max(s for s, _ in spans)
        earliest_end = min(e for _, e in spans)
        assert latest_start < earliest_end  # all four were running at the same time
    finally:
        ray.shutdown()
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False)
    try:
        with pytest.raises(LTRayError, match="gpu=0.25 but no node"):
            check_resources(spec)
    finally:
        ray.shutdown()


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path):
    from ray.cluster_utils import Cluster

    from lt_ray.tune.runner import check_resources, fit_cell

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    import ray

    ray.init(address=cluster.address)
    try:
        cluster.wait_for_nodes()
        raw = study("nodes", resources={"cpu": 1})
        raw["base"] = {**TINY, "train": {**TINY["train"], "epochs": 1}}
        spec = parse_spec(raw)
        assert check_resources(spec) == 2
        (tmp_path / "nodes").mkdir()
        results = fit_cell(spec, spec.cells()[0], tmp_path / "nodes", resume=False,
                           data_root=None, optuna_storage=None).results
        spans = [(r.metrics["timestamp"] - r.metrics["time_total_s"], r.metrics["timestamp"])
                 for r in results]
        # each node has one CPU and each trial needs one: overlap means both nodes ran one
        assert max(s for s, _ in spans) < min(e for _, e in spans)
        assert len({r.metrics["pid"] for r in results}) == 2
    finally:
        ray.shutdown()
        cluster.shutdown()


def _kill_ray(temp_dir: str) -> None:
    subprocess.run(["pkill", "-9", "-f", temp_dir], check=False)


def test_killed_driver_then_resume_completes_every_trial_once(tmp_path):
    raw = study("resume")
    raw["search"].update(num_samples=4, max_concurrent=2)
    raw["base"] = {**TINY, "train": {**TINY["train"], "epochs": 4}}
    path = write(tmp_path, raw)
    temp_dir = f"/tmp/ltr{os.getpid()}"
    env = {**os.environ, "LT_RAY_TEMP_DIR": temp_dir}
    storage = tmp_path / "res"
    cmd = [sys.executable, "-m", "lt_ray.cli", "sweep", path, "--storage", str(storage),
           "--no-dashboard"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    cell = storage / "resume" / "cell-00"
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait until some trial has checkpointed an epoch
            if list(cell.glob("*/checkpoint_*")):
                break
            time.sleep(0.5)
        else:
            pytest.fail("no trial checkpointed within 240 s")
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        _kill_ray(temp_dir)
    res = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True,
                         timeout=480)
    _kill_ray(temp_dir)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    trials = pd.read_parquet(storage / "resume" / "trials.parquet")
    assert len(trials) == 4 and set(trials.status) == {"completed"}
    for trial_dir in cell.iterdir():
        if trial_dir.is_dir():
            lines = (trial_dir / "result.json").read_text().splitlines()
            epochs = [json.loads(line)["epoch"] for line in lines]
            assert epochs == sorted(set(epochs)) == [1, 2, 3, 4], (trial_dir.name, epochs)


def test_smoke_runs_two_one_epoch_trials_of_the_first_cell(tmp_path):
    raw = study("smoke", grid={"method.name": ["ce", "bsce"]})
    raw["search"]["num_samples"] = 8
    res = CliRunner().invoke(main, ["sweep", write(tmp_path, raw), "--smoke", "--storage",
                                    str(tmp_path / "res"), "--no-dashboard"])
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / "res" / "smoke" / "trials.parquet")
    assert len(trials) == 2 and set(trials["cfg.method.name"]) == {"ce"}
    assert set(trials.epochs_completed) == {1} and set(trials.status) == {"completed"}
