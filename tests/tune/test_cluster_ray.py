"""The cluster path: a lost node, a multi-node cluster with S3 storage, scale from zero.

Each test starts its own Ray processes on 127.0.0.1 and stops exactly those (by pid, or by the
process session they were started in); nothing is matched by name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import TINY
from lt_ray import storage
from lt_ray.tune.parse import parse_spec
from procutil import free_port, kill_session

pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]


def tiny_study(name: str, epochs: int, **extra) -> dict:
    raw = {
        "name": name,
        "base": {**TINY, "train": {**TINY["train"], "epochs": epochs}},
        "space": {"optim.lr": {"loguniform": [0.01, 0.1]}},
        "search": {"metric": "val_acc", "mode": "max", "num_samples": 1, "max_concurrent": 1},
        "resources": {"cpu": 1},
    }
    raw.update(extra)
    return raw


def test_trial_on_a_killed_node_resumes_from_its_checkpoint_on_the_other_node(tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from lt_ray.tune.export import export
    from lt_ray.tune.ray_runtime import keep_on_loopback, stop_ray
    from lt_ray.tune.study_folder import write_study_file
    from lt_ray.tune.tuner import fit_study

    keep_on_loopback()
    # the GCS declares a node dead after 3 missed health checks of 0.5 s (Ray's default: ~30 s)
    fast = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
            "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1",
                                      "_system_config": fast})
    workers = [cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1") for _ in range(2)]
    ray.init(address=cluster.address)
    raw = tiny_study("lost", epochs=30, max_failures=1)
    raw["base"]["data"] = {**TINY["data"], "synthetic": {**TINY["data"]["synthetic"],
                                                         "n_max": 400}}  # ~0.2 s an epoch
    spec = parse_spec(raw)
    study_dir = tmp_path / "lost"
    write_study_file(str(study_dir), spec, {}, str(tmp_path / "artifacts"))
    killed: dict[str, int] = {}

    def kill_the_raylet_of_the_trial() -> None:
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            for result in (study_dir / "tune").glob("*/result.json"):
                lines = result.read_text().splitlines()
                if len(lines) >= 2:  # mid-trial: 2 epochs reported and checkpointed
                    pid = json.loads(lines[-1])["pid"]
                    raylet = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1]
                                 .split()[1])  # the trial worker's parent is its node's raylet
                    assert raylet in {w.all_processes["raylet"][0].process.pid for w in workers}
                    os.kill(raylet, signal.SIGKILL)
                    killed["raylet"] = raylet
                    return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_raylet_of_the_trial, daemon=True)
    try:
        cluster.wait_for_nodes()
        killer.start()
        results = fit_study(spec, study_dir, resume=False, data_root=None,
                            optuna_storage=None)
        _, records = export(str(study_dir), results)
    finally:
        killer.join(timeout=5)
        stop_ray()
        cluster.shutdown()
    assert killed, "the trial finished before its node could be killed"
    assert [r.status for r in records] == ["completed"]
    epochs = pd.read_parquet(study_dir / "epochs.parquet")
    assert epochs.epoch.tolist() == list(range(1, 31))  # each epoch once, after the restart
    lines = next((study_dir / "tune").glob("*/result.json")).read_text().splitlines()
    pids = {json.loads(line)["pid"] for line in lines}
    assert len(pids) == 2  # trained by two processes: before and after the node was lost
    first_after_restart = [json.loads(line)["epoch"] for line in lines]
    assert first_after_restart == sorted(first_after_restart)  # resumed, not started over


def test_three_node_cluster_with_s3_storage_overlaps_cells_and_resumes_once(tmp_path, s3):
    """launch/local_cluster.sh (head + 2 workers), --storage s3:// on a local S3 server: cells
    overlap in time; the driver is killed and --resume finishes every trial exactly once."""
    port, dash, agent = free_port(), free_port(), free_port()
    ray_tmp = f"/tmp/lc{os.getpid()}"
    env = {**os.environ, **s3.env(), "RAY_BIN": str(Path(sys.executable).parent / "ray"),
           "LT_RAY_LOCAL_PORT": str(port), "LT_RAY_LOCAL_DASHBOARD": str(dash),
           "LT_RAY_LOCAL_AGENT_PORT": str(agent), "LT_RAY_LOCAL_TMP": ray_tmp,
           "LT_RAY_WORKER_CPUS": "2", "RAY_AUTH_MODE": "disabled"}
    script = str(REPO / "launch" / "local_cluster.sh")
    up = subprocess.run([script, "start", "2"], env=env, capture_output=True, text=True,
                        timeout=180)
    assert up.returncode == 0, up.stdout + up.stderr
    raw = tiny_study("s3cells", epochs=4, grid={"optim.momentum": [0.0, 0.5, 0.9]})
    raw["search"].update(num_samples=2, max_concurrent=4)
    space = tmp_path / "s3cells.yaml"
    space.write_text(yaml.safe_dump(raw))
    uri = s3.uri("studies")
    cmd = [sys.executable, "-m", "lt_ray.cli", "sweep", str(space), "--storage", uri,
           "--address", f"127.0.0.1:{port}"]
    try:
        driver = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.time() + 300
            tune_dir = storage.join(uri, "s3cells", "tune")
            while time.time() < deadline:  # until a trial has persisted a checkpoint
                names = storage.list_names(tune_dir) if storage.exists(tune_dir) else []
                if any(storage.list_names(storage.join(tune_dir, n)) and any(
                        c.startswith("checkpoint_")
                        for c in storage.list_names(storage.join(tune_dir, n)))
                       for n in names if not n.endswith((".json", ".pkl", ".csv"))):
                    break
                time.sleep(1)
            else:
                pytest.fail("no checkpoint reached S3 within 300 s")
        finally:
            kill_session(driver.pid)
            driver.wait()
        resumed = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True,
                                 timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    finally:
        subprocess.run([script, "stop"], env=env, capture_output=True, timeout=120)
    trials = storage.read_parquet(storage.join(uri, "s3cells", "trials.parquet")).to_pandas()
    failed = trials[trials.status != "completed"][["trial_id", "status", "error"]]
    assert len(trials) == 6 and failed.empty, failed.to_string() + resumed.stdout[-3000:]
    assert trials.trial_id.is_unique and trials.groupby("cell").size().tolist() == [2, 2, 2]
    epochs = storage.read_parquet(storage.join(uri, "s3cells", "epochs.parquet")).to_pandas()
    assert (epochs.groupby("trial_id").epoch.apply(list).map(tuple) == (1, 2, 3, 4)).all()
    # cells run side by side: some trials of different cells were in flight together (a trial
    # that started over after the driver was killed counts its time from its restart, so not
    # every pair of cells need overlap in the exported times)
    spans = [(r.cell, r.started_at, r.ended_at) for r in trials.itertuples()]
    assert any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in spans for b in spans)


def test_study_scales_from_zero_on_an_autoscaling_cluster_and_fails_fast_on_a_local_ray(
        tmp_path, monkeypatch):
    from click.testing import CliRunner

    from fake_autoscaler import fake_autoscaling_cluster
    from lt_ray.cli import main

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    raw = tiny_study("zero", epochs=1)
    raw["search"].update(num_samples=2, max_concurrent=2)
    space = tmp_path / "zero.yaml"
    space.write_text(yaml.safe_dump(raw))
    with fake_autoscaling_cluster(tmp_path, worker_cpus=1, max_workers=2) as address:
        res = CliRunner().invoke(main, ["sweep", str(space), "--storage", str(tmp_path / "r"),
                                        "--address", address])
    assert res.exit_code == 0, res.output
    trials = pd.read_parquet(tmp_path / "r" / "zero" / "trials.parquet")
    assert len(trials) == 2 and set(trials.status) == {"completed"}
    # the same request on a local Ray whose nodes cannot hold it: refused before any trial
    raw["resources"] = {"cpu": 1, "gpu": 1}
    space.write_text(yaml.safe_dump(raw))
    started = time.time()
    res = CliRunner().invoke(main, ["sweep", str(space), "--storage", str(tmp_path / "l"),
                                    "--no-dashboard"])
    assert res.exit_code == 2 and "no node of this Ray cluster" in res.output, res.output
    assert time.time() - started < 60
    assert not (tmp_path / "l" / "zero" / "study.json").exists()
