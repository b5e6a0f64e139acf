"""Checks of the cluster deployment files (cluster.yaml, launch/*.sh). No Ray is started: the
scripts run against a fake `ray` (RAY_BIN) that records its arguments or, for
local_cluster.sh, starts plain `sleep` processes in place of Ray's daemons."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from procutil import kill_session, session_pids

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
SCRIPTS = ["up.sh", "submit.sh", "local_cluster.sh"]
SPACE = "search_spaces/quickstart.yaml"
#: Variables of the caller that would change what the scripts do.
SCRIPT_ENV_VARS = ("LT_RAY_STORAGE", "LT_RAY_JOB_ADDRESS", "LT_RAY_JOB_ARGS", "RAY_AUTH_MODE",
                   "RAY_BIN", "LT_RAY_LOCAL_PORT", "LT_RAY_LOCAL_DASHBOARD", "LT_RAY_LOCAL_TMP",
                   "LT_RAY_LOCAL_AGENT_PORT", "LT_RAY_HEAD_CPUS", "LT_RAY_WORKER_CPUS",
                   "LT_RAY_WORKER_GPUS")


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


def test_setup_installs_project_and_puts_data_on_every_node(cluster):
    """setup_commands run on every node: CIFAR at the same absolute path everywhere, and
    LT_RAY_DATA naming it, so the driver resolves it and the trials (which never download)
    find it."""
    setup = "\n".join(cluster["setup_commands"])
    assert "pip install -e ~/lt-ray" in setup
    assert "export LT_RAY_DATA=/home/ubuntu/data" in setup
    download = [c for c in cluster["setup_commands"] if "download=True" in c]
    assert len(download) == 1
    assert "CIFAR10" in download[0] and "CIFAR100" in download[0]
    assert "'/home/ubuntu/data'" in download[0]
    # not head-only: every node needs the files
    assert not any("download" in c for c in cluster.get("head_setup_commands", []))


def test_s3_is_the_default_storage(cluster):
    """Workers get an instance profile (S3 credentials); the head keeps Ray's default one."""
    head, gpu = _head_and_gpu_types(cluster)
    assert "IamInstanceProfile" not in head["node_config"]  # Ray attaches ray-autoscaler-v1
    for worker in gpu:
        arn = worker["node_config"]["IamInstanceProfile"]["Arn"]
        assert re.fullmatch(r"arn:aws:iam::[^:]+:instance-profile/lt-ray-worker", arn), arn
    text = CLUSTER_YAML.read_text()
    assert "LT_RAY_STORAGE=s3://BUCKET/lt-ray launch/submit.sh" in text
    assert "mount -t nfs4" in text  # the EFS/NFS alternative is still there (commented)


def test_worker_resources_fit_quarter_gpu_trials(cluster):
    """{cpu: 1, gpu: 0.25} per trial packs 4 trials on a g5.xlarge worker (4 vCPU, 1 GPU)."""
    _, gpu = _head_and_gpu_types(cluster)
    worker = gpu[0]
    assert worker["node_config"]["InstanceType"] == "g5.xlarge"
    res = worker["resources"]
    assert res == {"CPU": 4, "GPU": 1}
    assert min(res["CPU"] // 1, int(res["GPU"] / 0.25)) == 4


def test_launch_docs_tell_one_storage_story():
    readme = (ROOT / "launch" / "README.md").read_text()
    up = (ROOT / "launch" / "up.sh").read_text()
    submit = (ROOT / "launch" / "submit.sh").read_text()
    for text in (readme, up, CLUSTER_YAML.read_text()):
        assert "LT_RAY_STORAGE=s3://BUCKET/lt-ray" in text
    assert "s3://BUCKET/lt-ray" in submit
    for text in (readme, up, submit, CLUSTER_YAML.read_text()):
        assert "not supported" not in text
    # the minimal bucket policy and the head's PassRole are spelled out
    for needle in ('"s3:ListBucket"', '"s3:GetObject"', '"s3:PutObject"', '"s3:DeleteObject"',
                   '"arn:aws:s3:::BUCKET"', '"arn:aws:s3:::BUCKET/*"', '"iam:PassRole"',
                   "role/lt-ray-worker"):
        assert needle in readme, needle
    policy = re.search(r"```json\n(\{.*?s3:ListBucket.*?\})\n```", readme, re.S)
    assert policy, "bucket policy block not found"
    stmts = json.loads(policy.group(1))["Statement"]
    assert {a for st in stmts for a in ([st["Action"]] if isinstance(st["Action"], str)
                                        else st["Action"])} == {
        "s3:ListBucket", "s3:GetObject", "s3:PutObject", "s3:DeleteObject"}


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
    head, gpu = _head_and_gpu_types(enabled)
    worker = gpu[0]
    assert "Arn" in worker["node_config"]["IamInstanceProfile"]
    assert head["node_config"]["IamInstanceProfile"]["Arn"].endswith("instance-profile/lt-ray-head")
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
    assert 'storage="${LT_RAY_STORAGE:-}"' in text  # no default: the user chooses the storage


def _code(name: str) -> str:
    """The script without its comment lines."""
    text = (ROOT / "launch" / name).read_text()
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))


def test_local_cluster_stops_by_session_not_by_pattern():
    code = _code("local_cluster.sh")
    # `ray stop` would kill every Ray instance of the user on the machine; pgrep/pkill/killall
    # select processes by name or command line.
    assert "ray stop" not in code and '"$ray" stop' not in code
    for word in ("pgrep", "pkill", "killall", "own_pids", "with_children", "cmdline"):
        assert word not in code, word
    assert "setsid" in code
    assert "/proc/" in code and "/stat" in code
    assert 'sessions="$tmp/sessions"' in code
    assert "--dashboard-host=127.0.0.1" in code
    assert code.count("--node-ip-address=127.0.0.1") == 2  # head and workers


@pytest.mark.parametrize("name", ["submit.sh", "local_cluster.sh"])
def test_scripts_print_usage_without_arguments(name):
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    res = subprocess.run([bash, str(ROOT / "launch" / name)], capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 2
    assert "Usage" in res.stderr or "usage" in res.stderr.lower()


# ---- running the scripts against a fake `ray` -----------------------------------------------

def _bash() -> str:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    return bash


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRIPT_ENV_VARS}
    env["HOME"] = str(tmp_path / "home")  # no real ~/.ray/auth_token
    env.update(extra)
    return env


@pytest.fixture
def fake_ray(tmp_path: Path) -> tuple[Path, Path]:
    """A `ray` that writes its arguments, one per line, to args.txt and exits 0."""
    args = tmp_path / "args.txt"
    ray = tmp_path / "ray"
    ray.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > {args}\n')
    ray.chmod(0o755)
    return ray, args


STORAGES = ["s3://my-lt-bucket/lt-ray", "s3://b/p?endpoint_override=http://127.0.0.1:9000",
            "gs://my-bucket/lt-ray", "file:///mnt/shared/results", "/home/ubuntu/results"]


@pytest.mark.parametrize("storage", STORAGES)
def test_submit_passes_uri_or_absolute_storage(tmp_path, fake_ray, storage):
    ray, args = fake_ray
    res = subprocess.run(
        [_bash(), str(ROOT / "launch" / "submit.sh"), SPACE, "--smoke"], cwd=ROOT,
        env=_env(tmp_path, RAY_BIN=str(ray), LT_RAY_STORAGE=storage),
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert args.read_text().splitlines() == [
        "job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", ".",
        "--runtime-env-json", '{"excludes": [".git"]}',
        "--", "lt-ray", "sweep", SPACE, "--address", "auto", "--storage", storage, "--smoke"]


def test_submit_job_address_and_args(tmp_path, fake_ray):
    ray, args = fake_ray
    res = subprocess.run(
        [_bash(), str(ROOT / "launch" / "submit.sh"), str(ROOT / SPACE)], cwd=ROOT / "launch",
        env=_env(tmp_path, RAY_BIN=str(ray), LT_RAY_STORAGE="s3://my-lt-bucket/x",
                 LT_RAY_JOB_ADDRESS="http://127.0.0.1:8266",
                 LT_RAY_JOB_ARGS="--no-wait --submission-id s1"),
        capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    argv = args.read_text().splitlines()
    assert argv[argv.index("--address") + 1] == "http://127.0.0.1:8266"
    assert argv[argv.index("--") - 3:argv.index("--")] == ["--no-wait", "--submission-id", "s1"]
    assert argv[argv.index("sweep") + 1] == SPACE  # made relative to the repo root


@pytest.mark.parametrize("storage, message", [
    (None, "LT_RAY_STORAGE is not set"),
    ("", "LT_RAY_STORAGE is not set"),
    ("s3://BUCKET/lt-ray", "names no bucket"),
    ("s3://", "names no bucket"),
    ("results", "neither a URI nor an absolute path"),
])
def test_submit_rejects_missing_or_unshared_storage(tmp_path, fake_ray, storage, message):
    ray, args = fake_ray
    extra = {"RAY_BIN": str(ray)}
    if storage is not None:
        extra["LT_RAY_STORAGE"] = storage
    res = subprocess.run([_bash(), str(ROOT / "launch" / "submit.sh"), SPACE], cwd=ROOT,
                         env=_env(tmp_path, **extra), capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    assert message in res.stderr and "s3://BUCKET/lt-ray" in res.stderr
    assert not args.exists()  # nothing submitted


def _config_with(tmp_path: Path, *replacements: tuple[str, str]) -> Path:
    text = CLUSTER_YAML.read_text()
    for old, new in replacements:
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


AMI = ("ami-REPLACE-WITH-YOUR-REGION-AMI", "ami-0123456789abcdef0")
ACCOUNT = ("REPLACE-WITH-ACCOUNT-ID", "123456789012")


@pytest.mark.parametrize("replacements, message", [
    ((), "set ImageId"),
    ((AMI,), "account id"),
])
def test_up_refuses_placeholders(tmp_path, fake_ray, replacements, message):
    ray, args = fake_ray
    config = _config_with(tmp_path, *replacements)
    res = subprocess.run([_bash(), str(ROOT / "launch" / "up.sh"), str(config)], cwd=tmp_path,
                         env=_env(tmp_path, RAY_BIN=str(ray)), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 2
    assert message in res.stderr
    assert not args.exists()


def test_up_runs_ray_up_and_prints_s3_next_steps(tmp_path, fake_ray):
    ray, args = fake_ray
    config = _config_with(tmp_path, AMI, ACCOUNT)
    res = subprocess.run([_bash(), str(ROOT / "launch" / "up.sh"), str(config)], cwd=tmp_path,
                         env=_env(tmp_path, RAY_BIN=str(ray)), capture_output=True, text=True,
                         timeout=60)
    assert res.returncode == 0, res.stderr
    assert args.read_text().splitlines() == ["up", "-y", str(config)]
    assert "LT_RAY_STORAGE=s3://BUCKET/lt-ray launch/submit.sh SPACE.yaml" in res.stdout
    assert '"lt-ray-worker"' in res.stdout and "iam:PassRole" in res.stdout


def test_launch_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed")
    scripts = [str(ROOT / "launch" / n) for n in [*SCRIPTS, "find_ray.sh"]]
    res = subprocess.run([shellcheck, "-x", *scripts], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# ---- local_cluster.sh: start/status/stop by process session, with `sleep` as Ray -----------

#: `ray start` leaves two daemons behind (one a child of the other, like a raylet and its
#: workers) and exits, as the real one does; `ray status` lists every node it has started.
FAKE_RAY_CLUSTER = """\
#!/usr/bin/env bash
state={state}
case "$1" in
  start)
    mkdir -p "$state"
    (sleep 300 & exec sleep 301) </dev/null >/dev/null 2>&1 &
    echo node >> "$state/nodes" ;;
  status)
    n=$(cat "$state/nodes" 2>/dev/null | wc -l)
    for ((i = 0; i < n; i++)); do echo " 1 node_$i"; done ;;
  get-auth-token) exit 1 ;;
  --version) echo "ray, version 0.0.0-fake" ;;
  *) echo "unexpected: $*" >&2; exit 3 ;;
esac
"""


def _start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (clock ticks since boot)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    return int(raw[raw.rfind(")") + 2:].split()[19])


def _recorded_sessions(path: Path) -> dict[str, int]:
    if not path.is_file():
        return {}
    return {line.split()[1]: int(line.split()[2]) for line in path.read_text().splitlines()
            if line.startswith("node ")}


@pytest.fixture
def local_cluster(tmp_path):
    if not sys.platform.startswith("linux") or shutil.which("setsid") is None:
        pytest.skip("local_cluster.sh needs Linux (/proc) and setsid")
    state = tmp_path / "fake-state"
    ray = tmp_path / "ray"
    ray.write_text(FAKE_RAY_CLUSTER.format(state=state))
    ray.chmod(0o755)
    cluster_tmp = tmp_path / "lc"
    env = _env(tmp_path, RAY_BIN=str(ray), LT_RAY_LOCAL_TMP=str(cluster_tmp))

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([_bash(), str(ROOT / "launch" / "local_cluster.sh"), *args],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)

    sessions = cluster_tmp / "sessions"
    seen: set[int] = set()
    try:
        yield run, sessions, seen
    finally:
        for sid in seen | set(_recorded_sessions(sessions).values()):
            kill_session(sid)  # test cleanup: whatever `stop` left of the recorded sessions


def test_local_cluster_start_status_stop_by_session(local_cluster):
    run, sessions, seen = local_cluster
    # a process of ours outside the cluster's sessions must survive `stop`
    bystander = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        res = run("start", "2")
        assert res.returncode == 0, res.stdout + res.stderr
        recorded = _recorded_sessions(sessions)
        seen.update(recorded.values())
        assert list(recorded) == ["head", "w1", "w2"]
        assert len(set(recorded.values())) == 3
        for sid in recorded.values():
            assert len(session_pids(sid)) == 2  # both daemons of each node, in its session
        assert sessions.read_text().startswith("boot ")

        res = run("status")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "head: session" in res.stdout and " node_2" in res.stdout

        res = run("start", "1")  # refuses a second cluster on the same temp dir
        assert res.returncode == 1 and "already runs" in res.stderr

        res = run("stop")
        assert res.returncode == 0, res.stdout + res.stderr
        for sid in recorded.values():
            assert session_pids(sid) == [], sid
        assert not sessions.exists()
        assert bystander.poll() is None, "stop ended a process outside the cluster's sessions"

        res = run("status")
        assert res.returncode == 1 and "No local cluster running" in res.stdout
        res = run("stop")
        assert res.returncode == 0 and "No local cluster" in res.stdout
    finally:
        bystander.kill()
        bystander.wait()


def test_local_cluster_stop_leaves_unverified_sessions_alone(local_cluster, tmp_path):
    """A sessions file whose recorded processes are gone (a stale file, the session id reused
    by someone else) must not make `stop` kill the session that now has that id."""
    run, sessions, _ = local_cluster
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        start = _start_time(other.pid)
        sessions.parent.mkdir(parents=True)
        # right session id, wrong start time of the recorded process
        sessions.write_text(f"boot {boot}\nnode head {other.pid} {other.pid}:{start - 1} \n")
        res = run("status")
        assert res.returncode == 1 and "leaving them alone" in res.stderr
        res = run("stop")
        assert res.returncode == 0 and "leaving them alone" in res.stderr
        time.sleep(0.3)
        assert other.poll() is None
        # right start time, but the file is from another boot
        sessions.write_text(f"boot not-this-boot\nnode head {other.pid} {other.pid}:{start} \n")
        res = run("stop")
        assert res.returncode == 0
        time.sleep(0.3)
        assert other.poll() is None
        # verified: the recorded process is alive with its start time, so the session is ours
        sessions.write_text(f"boot {boot}\nnode head {other.pid} {other.pid}:{start} \n")
        res = run("stop")
        assert res.returncode == 0, res.stdout + res.stderr
        other.wait(timeout=15)
        assert other.returncode == -signal.SIGTERM
        assert not sessions.exists()
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
