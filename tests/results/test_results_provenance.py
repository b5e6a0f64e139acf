"""collect_provenance: the keys, git state, and no exception outside a git checkout."""

from __future__ import annotations

import subprocess

import pytest

import lt_ray
from lt_ray.results import provenance
from lt_ray.results.provenance import collect_provenance
from lt_ray.results.schema import PROVENANCE_COLUMNS


def test_keys_and_values_outside_git(tmp_path, monkeypatch):
    monkeypatch.setattr(provenance, "PACKAGE_DIR", tmp_path)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    out = collect_provenance({"cpu": 2, "gpu": 0.5})
    assert tuple(out) == PROVENANCE_COLUMNS
    assert out["git_sha"] is None and out["git_dirty"] is None
    assert out["lt_ray_version"] == lt_ray.__version__
    assert out["torch_version"] is not None
    assert out["device"] in ("cuda", "cpu")
    assert (out["resources_cpu"], out["resources_gpu"]) == (2.0, 0.5)
    assert isinstance(out["hostname"], str)


def test_no_resources_and_missing_git_binary(monkeypatch, tmp_path):
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(subprocess, "run", no_git)
    out = collect_provenance(None)
    assert out["git_sha"] is None and out["resources_cpu"] is None and out["resources_gpu"] is None


def test_uninstalled_package_version_is_none():
    assert provenance._version("surely-not-an-installed-package-xyz") is None


def test_git_checkout_gives_sha_and_dirty_flag(tmp_path, monkeypatch):
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false",
           "-C", str(tmp_path)]
    try:
        subprocess.run([*git, "init", "-q"], check=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        pytest.skip("git is not available")
    pkg = tmp_path / "lt_ray"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    subprocess.run([*git, "add", "."], check=True, timeout=10)
    subprocess.run([*git, "commit", "-qm", "x"], check=True, timeout=10)
    monkeypatch.setattr(provenance, "PACKAGE_DIR", pkg)
    out = collect_provenance(None)
    assert isinstance(out["git_sha"], str) and len(out["git_sha"]) == 40
    assert out["git_dirty"] is False
    (pkg / "new.py").write_text("")
    assert collect_provenance(None)["git_dirty"] is True
    # a folder inside a checkout that does not track it (a venv) reports no sha
    venv_pkg = tmp_path / "venv" / "lt_ray"
    venv_pkg.mkdir(parents=True)
    (venv_pkg / "__init__.py").write_text("")
    (tmp_path / ".gitignore").write_text("venv/\n")
    assert provenance.git_state(venv_pkg) == (None, None)
