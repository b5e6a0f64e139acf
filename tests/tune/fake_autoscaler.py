"""A local autoscaling Ray cluster (Ray's ``fake_multinode`` provider) for tests.

The head is started with ``RAY_FAKE_CLUSTER=1 ray start --head --autoscaling-config=...`` in a
new process session; its autoscaler (the v1 monitor, the default of ``ray start``) "launches"
worker nodes as extra raylets on this machine. On exit exactly the processes of that session
are killed: never ``ray stop`` (it would stop every Ray on the machine).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from procutil import free_port, kill_session

# The fake provider tags the head it did not launch with this type name
# (ray.autoscaler._private.fake_multi_node.node_provider.FAKE_HEAD_NODE_TYPE).
HEAD_TYPE = "ray.head.default"
WORKER_TYPE = "cpu_worker"
START_TIMEOUT_S = 180.0


def cluster_config(gcs_address: str, *, worker_cpus: float = 1, max_workers: int = 2,
                   worker_gpus: float = 0) -> dict[str, Any]:
    """A complete cluster config for the fake provider (the v1 monitor reads it as is)."""
    worker_resources: dict[str, float] = {"CPU": worker_cpus}
    if worker_gpus:
        worker_resources["GPU"] = worker_gpus
    return {
        "cluster_name": "fake-lt-ray",
        "max_workers": max_workers,
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 1,
        "docker": {},
        "provider": {
            "type": "fake_multinode",
            "gcs_address": gcs_address,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "auth": {},
        "head_node_type": HEAD_TYPE,
        "available_node_types": {
            HEAD_TYPE: {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            WORKER_TYPE: {"resources": worker_resources, "node_config": {},
                          "min_workers": 0, "max_workers": max_workers},
        },
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1.0):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"GCS on 127.0.0.1:{port} accepts no connection")
        time.sleep(0.2)


@contextlib.contextmanager
def fake_autoscaling_cluster(tmp_path: Path, *, worker_cpus: float = 1, max_workers: int = 2,
                             worker_gpus: float = 0) -> Iterator[str]:
    """Start a fake autoscaling cluster (head with CPU 0), yield its GCS address "127.0.0.1:PORT".

    Worker type ``cpu_worker`` (``worker_cpus`` CPUs, ``worker_gpus`` GPUs, min 0, at most
    ``max_workers`` nodes) is launched by the autoscaler on demand.
    """
    port = free_port()
    address = f"127.0.0.1:{port}"
    cfg = tmp_path / "fake_cluster.yaml"
    cfg.write_text(yaml.safe_dump(cluster_config(
        address, worker_cpus=worker_cpus, max_workers=max_workers, worker_gpus=worker_gpus)))
    temp_dir = tempfile.mkdtemp(prefix="fk", dir="/tmp")  # short: Ray's socket paths live here
    log = tmp_path / "ray_start.log"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # the v1 autoscaler (`ray start`'s default): v2 prepares the config with the fake provider's
    # defaults file, fake_multi_node/example.yaml, which the Ray 2.60 wheel does not ship
    env.update(RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
               RAY_enable_autoscaler_v2="0")
    # `ray start` turns token auth on when ~/.ray/auth_token exists (any local ray.init() may
    # write it), while a driver without RAY_AUTH_MODE connects without a token: keep both sides
    # on the driver's mode, "disabled" when unset
    env.setdefault("RAY_AUTH_MODE", "disabled")
    ray_exe = Path(sys.executable).with_name("ray")
    if not ray_exe.is_file():
        ray_exe = Path(shutil.which("ray") or "ray")
    cmd = [str(ray_exe), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
           "--num-cpus=0", "--num-gpus=0", f"--autoscaling-config={cfg}",
           f"--temp-dir={temp_dir}", "--include-dashboard=false", f"--dashboard-port={free_port()}",
           "--disable-usage-stats",
           f"--ray-client-server-port={free_port()}", "--dashboard-agent-listen-port=0",
           f"--object-store-memory={100 * 1024**2}"]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    sid = proc.pid  # the new session's id: every Ray process of this cluster inherits it
    try:
        rc = proc.wait(timeout=START_TIMEOUT_S)
        if rc != 0:
            raise RuntimeError(f"`ray start` failed ({rc}):\n{log.read_text()[-3000:]}")
        _wait_for_port(port, 60.0)
        yield address
    finally:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)  # reap our direct child if it is still running
        kill_session(sid)
        if proc.poll() is None:
            proc.wait()
        shutil.rmtree(temp_dir, ignore_errors=True)
