"""The Ray lifecycle of a study driver: start a local Ray on loopback or join a cluster, stop
it, tell how to open its dashboard, and check that the cluster can hold a trial (now, or once
its autoscaler adds a node: :mod:`lt_ray.tune.cluster`). Ray itself is imported only when
called (``lt-ray --help`` and ``--dry-run`` stay fast).
"""

from __future__ import annotations

import logging
import math
import os
import socket
from pathlib import Path
from typing import Any

from lt_ray.errors import LTRayError
from lt_ray.tune.cluster import launchable_node_types
from lt_ray.tune.spec import SweepSpec

log = logging.getLogger(__name__)
LOCAL_IP = "127.0.0.1"  # the embedded local Ray listens on loopback only

#: Ray 2.60 swaps a node IP of 127.0.0.1 for the machine's routable address
#: (services.resolve_ip_for_localhost) unless this switch is off; off, a single-node Ray binds
#: and talks on the loopback interface only (every port of gcs_server, raylet, workers, agents).
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_restore: list[tuple[str, str | None, bool]] = []


def keep_on_loopback() -> None:
    """Make a Ray started from this process (and its children) use 127.0.0.1 only; undone by
    :func:`stop_ray`. Only for Rays started here: a multi-node ``ray start`` refuses it."""
    from ray._private import ray_constants

    if not _restore:
        _restore.append((LOOPBACK_SWITCH, os.environ.get(LOOPBACK_SWITCH),
                         ray_constants.ENABLE_RAY_CLUSTER))
    os.environ[LOOPBACK_SWITCH] = "0"  # the processes Ray starts from here
    ray_constants.ENABLE_RAY_CLUSTER = False  # this process: read when Ray picks the node IP


def stop_ray() -> None:
    """``ray.shutdown()``, and undo :func:`keep_on_loopback`."""
    import ray
    from ray._private import ray_constants

    ray.shutdown()
    while _restore:
        name, value, enabled = _restore.pop()
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
        ray_constants.ENABLE_RAY_CLUSTER = enabled


def start_ray(address: str | None, *, dashboard: bool, num_cpus: int | None = None,
              num_gpus: int | None = None, verbose: bool = True) -> str | None:
    """Join ``address`` (or $RAY_ADDRESS), else start a local Ray that listens on 127.0.0.1
    only; return the dashboard URL. Stop it with :func:`stop_ray`. Without ``verbose`` the
    trials' log lines stay in Ray's log files instead of the console."""
    import ray

    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "configure_logging": True,
                              "logging_level": logging.WARNING if verbose else logging.ERROR}
    if address is None:
        keep_on_loopback()
        temp_dir = os.environ.get("LT_RAY_TEMP_DIR")
        kwargs.update(address="local", include_dashboard=dashboard, dashboard_host=LOCAL_IP,
                      num_cpus=num_cpus, num_gpus=num_gpus, _node_ip_address=LOCAL_IP)
        if temp_dir:
            kwargs["_temp_dir"] = temp_dir
    else:
        _probe(address)
        kwargs["address"] = address
    try:
        context = ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        stop_ray()
        where = address or "a local Ray"
        raise LTRayError(
            f"cannot start or reach Ray at {where}: {str(exc).splitlines()[0][:200]} "
            "(start a cluster with `ray start --head` or `ray up cluster.yaml`, and check "
            "--address)"
        ) from None
    url = getattr(context, "dashboard_url", None)
    return f"http://{url}" if url and not url.startswith("http") else url


def _probe(address: str) -> None:
    """Fail fast on an unreachable ``host:port`` (ray.init would wait for minutes)."""
    target = address.split("://", 1)[-1]
    host, _, port = target.rpartition(":")
    if address == "auto" or not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise LTRayError(
            f"cannot start or reach Ray at {address}: {exc.strerror or exc} (start a cluster "
            "with `ray start --head` or `ray up cluster.yaml`, and check --address)"
        ) from None


def _fits(resources: dict[str, float], spec: SweepSpec) -> int:
    """How many trials one node with ``resources`` holds at once (0: not even one)."""
    cpu, gpu = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if cpu + 1e-9 < spec.cpu or gpu + 1e-9 < spec.gpu:
        return 0
    per_node = math.floor(cpu / spec.cpu + 1e-9) if spec.cpu else 10**6
    if spec.gpu:
        per_node = min(per_node, math.floor(gpu / spec.gpu + 1e-9))
    return per_node


def dashboard_access() -> str:
    """How to get past the dashboard's "Authentication Token Required" dialog (Ray 2.60 token
    auth), or "" when the cluster does not use tokens."""
    try:
        from ray._private.authentication.authentication_utils import is_token_auth_enabled

        enabled = is_token_auth_enabled()
    except ImportError:  # another Ray: say it anyway when a token is configured
        enabled = os.environ.get("RAY_AUTH_MODE") == "token"
    if not enabled:
        return ""
    path = os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
    where = "$RAY_AUTH_TOKEN" if os.environ.get("RAY_AUTH_TOKEN") else path
    return (f"token auth is on: paste the token from {where} (`ray get-auth-token` prints it) "
            "into the dashboard's 'Authentication Token Required' dialog")


def has_gpus() -> bool:
    """Whether an alive node or a launchable node type of the connected cluster has a GPU."""
    import ray

    alive = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    return any(r.get("GPU", 0) > 0 for r in [*alive, *(t["resources"]
                                                       for t in launchable_node_types())])


def check_resources(spec: SweepSpec) -> int:
    """How many trials fit at once now; raise if neither the alive nodes nor any node type the
    cluster's autoscaler can launch holds one trial (on a local Ray: the alive nodes only)."""
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    slots = sum(_fits(n, spec) for n in nodes)
    if slots:
        return min(slots, spec.max_concurrent)
    launchable = launchable_node_types()
    growable = [t for t in launchable if _fits(t["resources"], spec)]
    if growable:
        potential = sum(_fits(t["resources"], spec) * int(t["max_workers"]) for t in growable)
        log.info("no alive node holds a trial yet; the autoscaler can launch %s",
                 ", ".join(t["name"] for t in growable))
        return min(potential, spec.max_concurrent)

    def show(res: dict[str, float]) -> str:
        return f"{{CPU: {res.get('CPU', 0):g}, GPU: {res.get('GPU', 0):g}}}"

    have = ", ".join(show(n) for n in nodes) or "none"
    types = ", ".join(f"{t['name']} {show(t['resources'])}" for t in launchable)
    raise LTRayError(
        f"resources: a trial asks for cpu={spec.cpu:g}, gpu={spec.gpu:g} but no node of this "
        f"Ray cluster has that (alive nodes: {have}; launchable node types: {types or 'none'})"
        "; lower resources.cpu/gpu in the study YAML or add such nodes"
    )
