"""What the connected Ray cluster's autoscaler can add: its launchable worker node types.

Ray 2.60 has no public API for this (ray-project/ray#52033). Two places hold it:

1. The GCS internal KV entry ``__autoscaler_cluster_config`` (namespace ``__autoscaler``), read
   with ``ray._private.state.state.get_cluster_config()``: an ``autoscaler_pb2.ClusterConfig``
   with one ``NodeGroupConfig`` (name, resources, min_count, max_count) per node type. Ray Data
   and Ray Train v2 read their cluster limits there, but it is filled only by an autoscaler that
   calls ``GcsClient.report_cluster_config``; Ray 2.60's own autoscalers (v1 and v2 ``monitor.py``)
   never do, so on a ``ray up`` / ``ray start --autoscaling-config`` cluster it is empty.
2. The autoscaling config file itself: ``ray start --head --autoscaling-config=FILE`` (what
   ``ray up`` runs, with FILE = ``~/ray_bootstrap_config.yaml``) starts the autoscaler as
   ``python .../autoscaler/{_private,v2}/monitor.py --gcs-address=H:P --autoscaling-config=FILE``
   on the head node. Its ``available_node_types`` are what the autoscaler may launch. The file is
   found through that process's command line in /proc, so this works where the driver runs on
   the head node (``ray job submit`` entrypoints, ``ray.init("auto")`` there), which is how
   lt-ray runs studies on a cluster.

Neither is found for a plain local ``ray.init()`` (its monitor has no config: read-only
provider), for a driver off the head node, or on KubeRay (the autoscaler runs in its own
container): then there is nothing to launch as far as the driver can tell, and the result is [].
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
_MONITOR_SCRIPTS = ("autoscaler/_private/monitor.py", "autoscaler/v2/monitor.py")
_CONFIG_FLAG = "--autoscaling-config"


def launchable_node_types() -> list[dict[str, Any]]:
    """Worker node types the autoscaler of the connected cluster can launch (call after
    ``ray.init``).

    Each entry: ``{"name": str, "resources": {"CPU": 4.0, "GPU": 1.0, ...}, "min_workers": int,
    "max_workers": int}``; only non-head types with ``max_workers > 0`` (capped by the config's
    cluster-wide ``max_workers``; ``sys.maxsize`` for an unbounded group). [] when the cluster
    has no autoscaler the driver can see (see the module docstring); never raises for that.
    """
    import ray

    gcs_address = ray.get_runtime_context().gcs_address  # RuntimeError if not connected
    for source in (_from_gcs_cluster_config, _from_monitor_config):
        try:
            types = source(gcs_address)
        except Exception:  # an internal Ray API moved, unreadable file ...: try the next source
            log.debug("launchable node types: %s failed", source.__name__, exc_info=True)
            continue
        if types is not None:
            return types
    return []


def _from_gcs_cluster_config(gcs_address: str) -> list[dict[str, Any]] | None:
    """Node groups an autoscaler reported to the GCS (None: nothing reported)."""
    from ray._private.state import state

    config = state.get_cluster_config()
    if config is None or not config.node_group_configs:
        return None
    head_group = _head_node_group()
    types = []
    for group in config.node_group_configs:
        max_count = sys.maxsize if group.max_count < 0 else int(group.max_count)
        if max_count == 0 or (head_group and group.name == head_group):
            continue
        types.append({"name": group.name,
                      "resources": {k: float(v) for k, v in group.resources.items()},
                      "min_workers": int(group.min_count), "max_workers": max_count})
    return types


def _head_node_group() -> str | None:
    """Node type name (label ``ray.io/node-group``) of the alive head node, if it has one."""
    import ray

    for node in ray.nodes():
        resources = node.get("Resources", {})
        if node.get("Alive") and "node:__internal_head__" in resources:
            return (node.get("Labels") or {}).get("ray.io/node-group")
    return None


def _from_monitor_config(gcs_address: str) -> list[dict[str, Any]] | None:
    """Worker node types of the autoscaling config file of this cluster's autoscaler process
    (None: no such process on this machine, or it runs without a config file)."""
    path = _monitor_config_path(gcs_address)
    if path is None:
        return None
    import yaml

    config = yaml.safe_load(path.read_text()) or {}
    node_types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    cluster_max = config.get("max_workers")
    types = []
    for name, node_type in node_types.items():
        if name == head:
            continue
        # Ray's default for a type without max_workers is the cluster-wide max_workers
        # (ray.autoscaler._private.util.fill_node_type_min_max_workers), which also caps it
        max_workers = node_type.get("max_workers", cluster_max)
        if max_workers is None:
            max_workers = sys.maxsize
        if cluster_max is not None:
            max_workers = min(int(max_workers), int(cluster_max))
        if int(max_workers) <= 0:
            continue
        types.append({"name": str(name),
                      "resources": {k: float(v) for k, v in
                                    (node_type.get("resources") or {}).items()},
                      "min_workers": int(node_type.get("min_workers", 0)),
                      "max_workers": int(max_workers)})
    return types


def _monitor_config_path(gcs_address: str) -> Path | None:
    """``--autoscaling-config`` of the autoscaler (monitor.py) serving ``gcs_address``, found in
    /proc (it runs on the head node: only visible to a driver on that machine)."""
    host, _, port = gcs_address.rpartition(":")
    if not (Path("/proc").is_dir() and _is_local_address(host)):
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace")
        except OSError:  # exited meanwhile, or not ours to read
            continue
        args = argv.split("\0")
        if not any(a.endswith(_MONITOR_SCRIPTS) for a in args):
            continue
        address = _flag(args, "--gcs-address")
        if address is None or (address != gcs_address and not (
                address.rpartition(":")[2] == port
                and _is_local_address(address.rpartition(":")[0]))):
            continue
        config = _flag(args, _CONFIG_FLAG)
        if not config:
            return None  # the autoscaler runs without a config: read-only provider
        path = Path(config).expanduser()
        if not path.is_absolute():
            path = Path(os.readlink(f"/proc/{entry}/cwd")) / path
        return path
    return None


def _flag(args: list[str], name: str) -> str | None:
    """Value of ``name=VALUE`` or ``name VALUE`` in a command line."""
    for i, arg in enumerate(args):
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
        if arg == name and i + 1 < len(args):
            return args[i + 1]
    return None


def _is_local_address(host: str) -> bool:
    """Whether ``host`` is an address of this machine (a socket can bind to it)."""
    host = host.strip("[]")
    if host in ("", "localhost"):
        return True
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
        return True
    except OSError:
        return False
