"""Where a result came from: lt-ray version and git state, library versions, device, host."""

from __future__ import annotations

import socket
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import lt_ray

# The lt_ray package folder whose git checkout is recorded (a module attribute for tests).
PACKAGE_DIR = Path(lt_ray.__file__).resolve().parent
GIT_TIMEOUT_S = 5.0


def collect_provenance(resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """The provenance columns of ``trials.parquet`` for this process; never raises.

    ``resources`` is the trial's resource request (``{"cpu": 1, "gpu": 0.25}``). Git fields are
    None when lt_ray is not running from a git checkout; versions are None when the package
    is not installed (ray and optuna are looked up, not imported).
    """
    sha, dirty = git_state(PACKAGE_DIR)
    device, gpu_name = _device()
    resources = resources or {}
    return {
        "lt_ray_version": lt_ray.__version__,
        "git_sha": sha,
        "git_dirty": dirty,
        "torch_version": _version("torch"),
        "ray_version": _version("ray"),
        "optuna_version": _version("optuna"),
        "device": device,
        "gpu_name": gpu_name,
        "hostname": _hostname(),
        "resources_cpu": _number(resources, "cpu"),
        "resources_gpu": _number(resources, "gpu"),
    }


def git_state(package_dir: Path) -> tuple[str | None, bool | None]:
    """(HEAD sha, dirty flag) of the git checkout that tracks ``package_dir``, else (None, None).

    A package installed into a folder that merely lies inside some other repository (a venv in
    a project) is not tracked there, so it reports None rather than that repository's sha.
    """
    tracked = _git(package_dir, "ls-files", "--error-unmatch", "__init__.py")
    sha = _git(package_dir, "rev-parse", "HEAD") if tracked is not None else None
    if sha is None:
        return None, None
    status = _git(package_dir, "status", "--porcelain")
    return sha.strip(), (None if status is None else bool(status.strip()))


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", str(cwd), *args],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    return out.stdout if out.returncode == 0 else None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except Exception:  # PackageNotFoundError, or broken metadata
        return None


def _device() -> tuple[str, str | None]:
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda", torch.cuda.get_device_name(torch.cuda.current_device())
    except Exception:  # a broken CUDA setup still gets a provenance row
        pass
    return "cpu", None


def _hostname() -> str | None:
    try:
        return socket.gethostname()
    except OSError:
        return None


def _number(resources: dict[str, Any], key: str) -> float | None:
    value = resources.get(key, resources.get(key.upper()))
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None
