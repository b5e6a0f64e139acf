"""Static checks of the cluster deployment files (cluster.yaml, launch/*.sh). No Ray is started."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
SCRIPTS = ["up.sh", "submit.sh", "local_cluster.sh"]


@pytest.fixture(scope="module")
def cluster() -> dict:
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    assert isinstance(cfg, dict)
    return cfg


def _ray_schema_path() -> Path | None:
    """ray/autoscaler/ray-schema.json of the installed ray, found without importing ray."""
    spec = importlib.util.find_spec("ray")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "autoscaler" / "ray-schema.json"
    return path if path.is_file() else None


def _head_and_gpu_types(cfg: dict) -> tuple[dict, list[dict]]:
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    gpu = [t for name, t in types.items() if name != cfg["head_node_type"]
           and t.get("resources", {}).get("GPU", 0) >= 1]
    return head, gpu


def test_cluster_yaml_basics(cluster):
    assert cluster["cluster_name"] == "lt-ray"
    assert cluster["provider"]["type"]
    assert isinstance(cluster["max_workers"], int) and cluster["max_workers"] >= 1
    assert cluster["idle_timeout_minutes"] > 0
    assert cluster["file_mounts"].get("~/lt-ray") == "."


def test_head_has_no_cpu_for_trials_and_a_gpu_worker_exists(cluster):
    head, gpu = _head_and_gpu_types(cluster)
    assert head["resources"].get("CPU") == 0, "trials must not be scheduled on the head"
    assert head["resources"].get("GPU", 0) == 0
    assert gpu, "no worker type with GPU resources"
    worker = gpu[0]
    assert worker.get("min_workers", 0) == 0
    assert 1 <= worker["max_workers"] <= cluster["max_workers"]
    assert worker["resources"]["CPU"] >= 1
    assert worker["node_config"]  # provider-specific launch config present


def test_setup_installs_project_and_downloads_data(cluster):
    setup = "\n".join(cluster["setup_commands"])
    assert "pip install -e ~/lt-ray" in setup
    assert "LT_RAY_DATA=/home/ubuntu/data" in setup
    assert "CIFAR10" in setup and "CIFAR100" in setup and "download=True" in setup


def test_start_commands(cluster):
    head = " ".join(cluster["head_start_ray_commands"])
    assert "ray start --head" in head
    assert "--dashboard-host=127.0.0.1" in head
    assert "--port=6379" in head
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    workers = " ".join(cluster["worker_start_ray_commands"])
    assert "ray start --address=$RAY_HEAD_IP:6379" in workers


def test_cluster_yaml_matches_installed_ray_schema(cluster):
    schema_path = _ray_schema_path()
    if schema_path is None:
        pytest.skip("installed ray has no autoscaler/ray-schema.json")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(cluster, json.loads(schema_path.read_text()))


#: Commented-out options of cluster.yaml that the test switches on (matched on the comment text).
OPTIONAL = re.compile(
    r"^(docker:|image:|container_name:|pull_before_run:|run_options:|- --ulimit|"
    r'"~/.ray/auth_token":|- sudo apt-get install -y nfs-common|- mkdir -p /home/ubuntu/results|'
    r"- grep -qxF 'export RAY_AUTH_MODE=token'|IamInstanceProfile:|Arn:|"
    r"InstanceMarketOptions:|MarketType:)"
)


def _enable_optional(text: str) -> str:
    """Uncomment OPTIONAL lines: drop the "# " after the indentation, which keeps the nesting
    ("      #   Arn: x" becomes "        Arn: x")."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^(\s*)# (.*)$", line)
        if m and OPTIONAL.match(m.group(2).lstrip()):
            line = m.group(1) + m.group(2)
        out.append(line)
    return "\n".join(out)


def test_commented_alternatives_are_valid_when_enabled():
    """The docker block and the token / EFS / IAM / spot options, uncommented, still validate."""
    schema_path = _ray_schema_path()
    if schema_path is None:
        pytest.skip("installed ray has no autoscaler/ray-schema.json")
    jsonschema = pytest.importorskip("jsonschema")
    enabled = yaml.safe_load(_enable_optional(CLUSTER_YAML.read_text()))
    assert enabled["docker"]["image"].startswith("rayproject/ray:")
    assert enabled["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert any("RAY_AUTH_MODE=token" in c for c in enabled["setup_commands"])
    assert any("mount -t nfs4" in c for c in enabled["setup_commands"])
    worker = _head_and_gpu_types(enabled)[1][0]
    assert "Arn" in worker["node_config"]["IamInstanceProfile"]
    assert worker["node_config"]["InstanceMarketOptions"]["MarketType"] == "spot"
    jsonschema.validate(enabled, json.loads(schema_path.read_text()))


@pytest.mark.parametrize("name", SCRIPTS)
def test_launch_script_is_executable_and_parses(name):
    path = ROOT / "launch" / name
    assert path.is_file()
    assert os.access(path, os.X_OK), f"{path} is not executable (chmod +x)"
    text = path.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert "# Usage:" in text.split("set -euo pipefail")[0]
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    res = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


def test_submit_script_command_line():
    text = (ROOT / "launch" / "submit.sh").read_text()
    assert "job submit" in text
    assert "http://127.0.0.1:8265" in text
    assert "--working-dir ." in text
    assert 'lt-ray sweep "$space" --address auto --storage "$storage" "$@"' in text
    assert "${LT_RAY_STORAGE:-/home/ubuntu/results}" in text


def test_local_cluster_uses_targeted_stop():
    text = (ROOT / "launch" / "local_cluster.sh").read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    # `ray stop` would kill every Ray instance of the user on the machine.
    assert "ray stop" not in code and '"$ray" stop' not in code
    assert "--dashboard-host=127.0.0.1" in code


@pytest.mark.parametrize("name", ["submit.sh", "local_cluster.sh"])
def test_scripts_print_usage_without_arguments(name):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    res = subprocess.run([bash, str(ROOT / "launch" / name)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 2
    assert "Usage" in res.stderr or "usage" in res.stderr.lower()
