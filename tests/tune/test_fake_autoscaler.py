"""Launchable node types on a fake autoscaling Ray cluster (and on a local Ray without one)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import yaml

from fake_autoscaler import WORKER_TYPE, fake_autoscaling_cluster
from lt_ray.tune.cluster import _from_monitor_config, launchable_node_types
from procutil import free_port, kill_session, session_pids

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def alive_cpus() -> list[float]:
    import ray

    return [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]]


def test_session_helpers_kill_only_their_session():
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        assert session_pids(proc.pid) == [proc.pid]
        assert os.getpid() not in session_pids(proc.pid)
        assert os.getpid() in session_pids(os.getsid(0))
        kill_session(proc.pid)
        assert proc.wait(timeout=10) != 0
        assert session_pids(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_config_file_of_a_v2_autoscaler_process_is_read(tmp_path):
    # a stand-in for `python .../autoscaler/v2/monitor.py` (what `ray up` starts since Ray 2.50),
    # with a relative config path resolved against its working directory
    script = tmp_path / "ray" / "autoscaler" / "v2" / "monitor.py"
    script.parent.mkdir(parents=True)
    script.write_text("import time\ntime.sleep(120)\n")
    cwd = tmp_path / "head"
    cwd.mkdir()
    (cwd / "bootstrap.yaml").write_text(yaml.safe_dump({
        "max_workers": 3,
        "head_node_type": "head",
        "available_node_types": {
            "head": {"resources": {"CPU": 0}, "node_config": {}},
            "gpu_worker": {"resources": {"CPU": 4, "GPU": 1}, "node_config": {},
                           "min_workers": 1, "max_workers": 4},
            "cpu_worker": {"resources": {"CPU": 8}, "node_config": {}},
            "off": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
        },
    }))
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(script), f"--gcs-address=localhost:{port}",
                             "--autoscaling-config", "bootstrap.yaml"],
                            cwd=cwd, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while _from_monitor_config(f"127.0.0.1:{port}") is None:
            assert time.monotonic() < deadline, "stand-in monitor not found in /proc"
            time.sleep(0.2)
        types = sorted(_from_monitor_config(f"127.0.0.1:{port}"), key=lambda t: t["name"])
        assert types == [
            {"name": "cpu_worker", "resources": {"CPU": 8.0},
             "min_workers": 0, "max_workers": 3},  # Ray's default: the cluster-wide value
            {"name": "gpu_worker", "resources": {"CPU": 4.0, "GPU": 1.0},
             "min_workers": 1, "max_workers": 3},  # capped by the cluster-wide max_workers
        ]
        assert _from_monitor_config(f"127.0.0.1:{free_port()}") is None  # another cluster
    finally:
        kill_session(proc.pid)
        proc.wait()


def test_launchable_types_reported_before_any_worker_exists(tmp_path):
    import ray

    with fake_autoscaling_cluster(tmp_path) as address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            assert alive_cpus() == [0.0]  # the head only, with no CPU
            types = launchable_node_types()
            assert types == [{"name": WORKER_TYPE, "resources": {"CPU": 1.0},
                              "min_workers": 0, "max_workers": 2}]
        finally:
            ray.shutdown()


def test_task_gets_a_node_launched(tmp_path):
    import ray

    with fake_autoscaling_cluster(tmp_path, worker_cpus=2, max_workers=1) as address:
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        try:
            head = ray.get_runtime_context().get_node_id()
            assert [(t["name"], t["resources"], t["max_workers"])
                    for t in launchable_node_types()] == [(WORKER_TYPE, {"CPU": 2.0}, 1)]

            @ray.remote(num_cpus=1)
            def where() -> str:
                return ray.get_runtime_context().get_node_id()

            start = time.monotonic()
            node = ray.get(where.remote(), timeout=300)
            print(f"worker node launched and task done in {time.monotonic() - start:.1f}s")
            assert node != head
            assert sorted(alive_cpus()) == [0.0, 2.0]
        finally:
            ray.shutdown()


def test_local_ray_has_no_launchable_types():
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False)
    try:
        assert launchable_node_types() == []
    finally:
        ray.shutdown()
