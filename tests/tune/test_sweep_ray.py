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
from lt_ray.tune import live
from lt_ray.tune.parse import parse_spec
from procutil import kill_session

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
    # the console: one line per finished trial, no Ray Tune status tables
    assert "[4/4] optim.momentum=" in res.output and "| val_acc " in res.output
    assert "Trial status" not in res.output and "Configuration for experiment" not in res.output
    # export again: idempotent
    before = trials.sort_values("trial_id").reset_index(drop=True)
    assert CliRunner().invoke(main, ["export", str(folder)]).exit_code == 0
    after = pd.read_parquet(folder / "trials.parquet").sort_values("trial_id")
    pd.testing.assert_frame_equal(before, after.reset_index(drop=True))
    # the same study again without --resume is refused, nothing changes
    res = CliRunner().invoke(main, ["sweep", path, "--storage", str(tmp_path / "res")])
    assert res.exit_code == 2 and "already exists" in res.output


def test_failing_trial_is_recorded_not_retried_and_told_to_optuna_as_failed(tmp_path):
    raw = study("fails", grid={"optim.lr": [0.05, 1.0e30]},
                space={"optim.momentum": {"choice": [0.9]}})
    raw["search"]["num_samples"] = 1
    raw["max_failures"] = 2  # retries lost nodes only: a NaN run is not retried
    journal = tmp_path / "optuna.log"
    res = CliRunner().invoke(main, ["sweep", write(tmp_path, raw), "--storage",
                                    str(tmp_path / "res"), "--no-dashboard",
                                    "--optuna-storage", str(journal)])
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / "res" / "fails" / "trials.parquet")
    by_lr = trials.set_index("cfg.optim.lr")
    assert by_lr.loc[0.05, "status"] == "completed"
    assert by_lr.loc[1.0e30, "status"] == "failed"
    assert "NaN/inf" in by_lr.loc[1.0e30, "error"]
    assert by_lr.loc[1.0e30, "git_sha"] == by_lr.loc[0.05, "git_sha"]  # provenance on failures
    assert "FAILED" in res.output
    failed_dir = next((tmp_path / "res" / "fails" / "tune").glob(
        f"{by_lr.loc[1.0e30, 'trial_id']}*"))
    assert not (failed_dir / "error.txt").exists()  # Tune saw no error: nothing to retry
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(journal)))
    states = {s.study_name: [t.state.name for t in optuna.load_study(
        study_name=s.study_name, storage=storage).trials]
        for s in optuna.get_all_study_summaries(storage)}
    assert states == {"fails-cell-00": ["COMPLETE"], "fails-cell-01": ["FAIL"]}
    # the live view (the web UI's) reads the same statuses from Tune's state: Tune itself
    # has the failed run as TERMINATED, it reported its error
    progress = live.trial_progress(str(tmp_path / "res" / "fails")).set_index("trial_id")
    assert progress["status"].to_dict() == trials.set_index("trial_id")["status"].to_dict()
    assert not live.is_running(progress)


def test_resume_on_missing_study_and_unreachable_address(tmp_path):
    path = write(tmp_path, study("nothing"))
    res = CliRunner().invoke(main, ["sweep", path, "--storage", str(tmp_path), "--resume"])
    assert res.exit_code == 2 and "holds no study" in res.output
    res = CliRunner().invoke(main, ["sweep", path, "--storage", str(tmp_path / "r"),
                                    "--address", "127.0.0.1:1"])
    assert res.exit_code == 2 and "cannot start or reach Ray" in res.output
    assert not (tmp_path / "r" / "nothing" / "study.json").exists()


def _spans(results) -> list[tuple[float, float]]:
    return [(r.metrics["timestamp"] - r.metrics["time_total_s"], r.metrics["timestamp"])
            for r in results]


def test_fake_gpu_runs_sixteen_quarter_gpu_trials_of_four_cells_at_once(tmp_path):
    import ray

    from lt_ray.tune.ray_runtime import check_resources, start_ray, stop_ray
    from lt_ray.tune.tuner import fit_study

    raw = study("pack", grid={"optim.momentum": [0.0, 0.5, 0.8, 0.9]},
                resources={"cpu": 0.125, "gpu": 0.25})
    raw["search"].update(num_samples=4, max_concurrent=16)
    raw["base"] = {**TINY, "train": {**TINY["train"], "epochs": 3}}
    spec = parse_spec(raw)
    start_ray(None, dashboard=False, num_cpus=2, num_gpus=4)
    try:
        # the embedded local Ray lives on the loopback interface only
        assert {n["NodeManagerAddress"] for n in ray.nodes()} == {"127.0.0.1"}
        assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")
        assert check_resources(spec) == 16
        results = fit_study(spec, tmp_path / "pack", resume=False, data_root=None,
                            optuna_storage=None)
        spans = _spans(results)
        assert len(spans) == 16 and all(r.error is None for r in results)
        assert {r.config["_cell"] for r in results} == {0, 1, 2, 3}
        assert {r.metrics["device"] for r in results} == {"cpu"}  # fake GPUs: no CUDA here
        assert max(s for s, _ in spans) < min(e for _, e in spans)  # all 16 in flight at once
    finally:
        stop_ray()
    start_ray(None, dashboard=False, num_cpus=2, num_gpus=0)
    try:
        with pytest.raises(LTRayError, match="gpu=0.25 but no node"):
            check_resources(spec)
    finally:
        stop_ray()


def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path):
    from ray.cluster_utils import Cluster

    from lt_ray.tune.ray_runtime import check_resources, keep_on_loopback, stop_ray
    from lt_ray.tune.tuner import fit_study

    keep_on_loopback()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "node_ip_address": "127.0.0.1"})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1")
    import ray

    ray.init(address=cluster.address)
    try:
        cluster.wait_for_nodes()
        raw = study("nodes", resources={"cpu": 1})
        # trials of several seconds: longer than starting a worker on the second node, so the
        # first trial's worker is not simply reused for the second one
        raw["base"] = {**TINY, "train": {**TINY["train"], "epochs": 20},
                       "data": {**TINY["data"], "synthetic": {**TINY["data"]["synthetic"],
                                                              "n_max": 400}}}
        spec = parse_spec(raw)
        assert check_resources(spec) == 2
        results = fit_study(spec, tmp_path / "nodes", resume=False, data_root=None,
                            optuna_storage=None)
        spans = _spans(results)
        # each node has one CPU and each trial needs one: overlap means both nodes ran one
        assert max(s for s, _ in spans) < min(e for _, e in spans)
        assert len({r.metrics["pid"] for r in results}) == 2
        assert {r.metrics["node_ip"] for r in results} == {"127.0.0.1"}
    finally:
        stop_ray()
        cluster.shutdown()


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # what a shell does to a background job


def _wait_for_new_checkpoint(tune_dir: Path, proc: subprocess.Popen) -> None:
    """Until a trial checkpoint appears that was not there when this was called."""
    before = set(tune_dir.glob("*/checkpoint_*"))
    deadline = time.time() + 240
    while not set(tune_dir.glob("*/checkpoint_*")) - before:
        if time.time() > deadline or proc.poll() is not None:
            pytest.fail(f"no new trial checkpoint (driver exit code {proc.poll()})")
        time.sleep(0.2)


def test_killed_driver_then_sigint_to_a_background_resume_then_resume_completes_all(tmp_path):
    """A driver killed outright (no chance to save) resumes. SIGINT reaches a sweep started as a
    background job (its SIGINT ignored): Tune stops, the ended trials are exported, the resume
    command is printed, exit 130. The last resume finishes every trial, none started over."""
    raw = study("resume")
    raw["search"].update(num_samples=4, max_concurrent=2)
    data = {**TINY["data"], "synthetic": {**TINY["data"]["synthetic"], "n_max": 400}}
    raw["base"] = {**TINY, "data": data, "train": {**TINY["train"], "epochs": 6}}
    path = write(tmp_path, raw)
    env = {**os.environ, "LT_RAY_TEMP_DIR": f"/tmp/ltr{os.getpid()}"}
    storage = tmp_path / "res"
    cmd = [sys.executable, "-m", "lt_ray.cli", "sweep", path, "--storage", str(storage),
           "--no-dashboard"]
    tune_dir = storage / "resume" / "tune"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        _wait_for_new_checkpoint(tune_dir, proc)
    finally:
        kill_session(proc.pid)  # the driver and the local Ray it started
        proc.wait()

    resumed = subprocess.Popen(cmd + ["--resume"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=_ignore_sigint)
    try:
        _wait_for_new_checkpoint(tune_dir, resumed)
        resumed.send_signal(signal.SIGINT)  # the driver only, as `kill -INT <pid>` does
        _, err = resumed.communicate(timeout=120)
    finally:
        kill_session(resumed.pid)
    assert resumed.returncode == 130, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGINT with ") and last.endswith(  # as it was given
        f"resume with: lt-ray sweep {path} --storage {storage} --resume --no-dashboard"), last
    trials = pd.read_parquet(storage / "resume" / "trials.parquet")
    assert set(trials.status) <= {"completed", "interrupted"}
    assert f"{(trials.status == 'completed').sum()} of 4 trials ended" in last

    resumed = subprocess.Popen(cmd + ["--resume"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = resumed.communicate(timeout=480)
    finally:
        kill_session(resumed.pid)
    assert resumed.returncode == 0, out[-3000:]
    trials = pd.read_parquet(storage / "resume" / "trials.parquet")
    assert len(trials) == 4 and set(trials.status) == {"completed"}
    epochs = pd.read_parquet(storage / "resume" / "epochs.parquet")
    assert sorted(epochs.groupby("trial_id").epoch.apply(list).map(tuple)) == [
        (1, 2, 3, 4, 5, 6)] * 4
    for trial_dir in tune_dir.iterdir():
        if trial_dir.is_dir():
            lines = (trial_dir / "result.json").read_text().splitlines()
            seen = [json.loads(line)["epoch"] for line in lines]
            # resumed, never restarted: an epoch reported just before the kill, but not yet
            # in Tune's saved state, may be reported once more; none from before it
            assert seen == sorted(seen) and set(seen) == set(range(1, 7)), (trial_dir.name, seen)


def test_smoke_runs_two_one_epoch_trials_of_the_first_cell(tmp_path):
    raw = study("smoke", grid={"method.name": ["ce", "bsce"]})
    raw["search"]["num_samples"] = 8
    res = CliRunner().invoke(main, ["sweep", write(tmp_path, raw), "--smoke", "--storage",
                                    str(tmp_path / "res"), "--no-dashboard"])
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / "res" / "smoke" / "trials.parquet")
    assert len(trials) == 2 and set(trials["cfg.method.name"]) == {"ce"}
    assert set(trials.epochs_completed) == {1} and set(trials.status) == {"completed"}


def test_asha_stops_trials_per_cell_after_the_last_phase_and_optuna_sees_them_pruned(tmp_path):
    # base epochs 2, the grid cell's 4: ASHA's max_t must be the cell's own epoch count
    raw = study("asha", grid={"train.epochs": [4]}, space={"optim.lr": {"choice": [0.1, 1e-6]}})
    raw["base"] = {**TINY, "optim": {"schedule": "constant"},
                   "data": {**TINY["data"], "synthetic": {**TINY["data"]["synthetic"],
                                                          "noise": 0.1, "n_max": 100}}}
    raw["search"].update(num_samples=3, max_concurrent=1, points_to_evaluate=[
        {"optim.lr": 0.1}, {"optim.lr": 1e-6}, {"optim.lr": 1e-6}])
    raw["scheduler"] = {"name": "asha", "grace_period": 2, "reduction_factor": 2}
    journal = tmp_path / "optuna.log"
    res = CliRunner().invoke(main, ["sweep", write(tmp_path, raw), "--storage",
                                    str(tmp_path / "res"), "--no-dashboard",
                                    "--optuna-storage", str(journal)])
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / "res" / "asha" / "trials.parquet")
    by_lr = trials.sort_values("cfg.optim.lr")
    assert by_lr.status.tolist() == ["early_stopped", "early_stopped", "completed"]
    assert by_lr.epochs_completed.tolist() == [2, 2, 4]  # the good trial ran all 4 epochs
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    ot = optuna.load_study(study_name="asha-cell-00",
                           storage=JournalStorage(JournalFileBackend(str(journal))))
    states = sorted((t.params["optim.lr"], t.state.name) for t in ot.trials)
    assert states == [(1e-6, "PRUNED"), (1e-6, "PRUNED"), (0.1, "COMPLETE")]
    # a changed study is not resumed: it names what changed
    raw["search"]["num_samples"] = 5
    res = CliRunner().invoke(main, ["sweep", write(tmp_path, raw), "--storage",
                                    str(tmp_path / "res"), "--resume"])
    assert res.exit_code == 2 and "search.num_samples: 3 -> 5" in res.output, res.output


def test_seed_repeats_rerun_each_cells_selected_config_with_every_seed(tmp_path):
    raw = study("repeats", grid={"optim.momentum": [0.0, 0.9]})
    raw["search"].update(num_samples=2, max_concurrent=4)
    raw["repeat"] = {"top_k": 1, "seeds": [1, 2]}
    res = CliRunner().invoke(main, ["sweep", write(tmp_path, raw), "--storage",
                                    str(tmp_path / "res"), "--no-dashboard"])
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / "res" / "repeats" / "trials.parquet")
    assert len(trials) == 8 and set(trials.status) == {"completed"}
    searched = trials[trials.repeat_of.isna()]
    repeats = trials[trials.repeat_of.notna()]
    assert len(searched) == 4 and len(repeats) == 4
    for cell, group in searched.groupby("cell"):
        best = group.sort_values("trial_id").loc[lambda g: g.val_acc.idxmax()]  # ties: 1st id
        again = repeats[repeats.repeat_of == best.trial_id]
        assert sorted(again["cfg.seed"]) == [1, 2] and set(again.cell) == {cell}
        assert (again["cfg.optim.lr"] == best["cfg.optim.lr"]).all()  # the selected config
    assert "repeats of" in res.output
