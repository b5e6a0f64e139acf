"""Every script under benchmarks/ runs end to end at tiny sizes, so none of them rots: each is
started as its README command is, as a process, and its output is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cifar_files import make_cifar10

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def run_script(name: str, *args: str, cwd: Path = ROOT, timeout: int = 300) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("LT_RAY_DATA", None)
    res = subprocess.run([sys.executable, str(BENCH / name), *args], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def last_json(stdout: str) -> dict:
    """The JSON object a script prints last (after its progress lines)."""
    return json.loads(stdout[stdout.rindex("\n{") + 1 if "\n{" in stdout else stdout.index("{"):])


@pytest.fixture(scope="module")
def fake_cifar(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    make_cifar10(root, per_class_per_batch=12, test_per_class=10)
    return root


def test_device_check_smoke(tmp_path):
    out = run_script("device_check.py", "run", "--smoke", "--out", str(tmp_path))
    summary = json.loads((tmp_path / "device_check.json").read_text())
    tp, pk = summary["throughput"], summary["packing"]
    assert "skipped" in summary["trace"]  # the kernel timeline exists on a GPU only
    assert {"ce_fp32_b32", "ce_fp32_b64", "hand_loop", "ride", "paco"} <= tp.keys()
    assert all(v["images_per_s"] > 0 for v in tp.values() if "skipped" not in v)
    assert 0.5 < tp["hand_loop"]["engine_ratio"] < 2
    assert [r["method"] for r in pk["runs"]] == ["ce", "bsce", "ldam_drw", "lade"]
    assert all(1 <= r["epochs"] <= 2 and 0 <= r["acc"] <= 100 for r in pk["runs"])
    assert pk["packing_ratio"] > 0 and pk["baseline"]["method"] == "ce"
    md = (tmp_path / "device_check.md").read_text()
    assert "| lade |" in md and "packing ratio" in md
    assert "checksum ok" in out


def test_device_check_refuses_without_cuda(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    res = subprocess.run([sys.executable, str(BENCH / "device_check.py"), "run", "--out",
                          str(tmp_path)], env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: no CUDA device here; run it on the GPU machine, or use --smoke"]
    assert not (tmp_path / "device_check.json").exists()


def test_throughput_smoke():
    got = last_json(run_script("throughput.py", "--images", "300", "--epochs", "2"))
    assert got["train_images"] >= 300 // 2 and got["model"] == "resnet32"
    for key in ("engine_images_per_s", "plain_loop_images_per_s", "original_style_images_per_s"):
        assert got[key] > 0
    assert 0.3 < got["engine_vs_plain"] < 3


def test_methods_smoke():
    got = last_json(run_script("methods.py", "--images", "200", "--epochs", "2",
                               "--methods", "ce,ride_ea,paco", "--threads", "1"))
    assert set(got["images_per_s"]) == {"ce", "ride_ea", "paco"}
    assert all(v > 0 for v in got["images_per_s"].values())


def test_gml_trial_smoke(fake_cifar):
    got = last_json(run_script("gml_trial.py", "--data-root", str(fake_cifar)))
    assert got["gml_trial_30_epochs_s"] > 0 and 0 <= got["gml_test_acc_new"] <= 1


def test_fidelity_smoke(fake_cifar, tmp_path):
    out = run_script("fidelity.py", "run", "--data-root", str(fake_cifar), "--out",
                     str(tmp_path), "--methods", "ce", "--precisions", "fp32", "--seeds", "0",
                     "--epochs", "1", "--workers", "1", "--threads", "1")
    rows = [line for line in out.splitlines() if line.startswith("| ce | 1 | fp32 | copy |")]
    assert len(rows) == 1, out
    assert (tmp_path / "ce-e1-fp32-copy-s0" / "evalcheck.json").is_file()


@pytest.mark.ray
def test_sweep_overhead_smoke():
    got = last_json(run_script("sweep_overhead.py", "--trials", "2", "--epochs", "1"))
    assert got["trials"] == 2 and got["sweep_s"] > 0 and got["sequential_s"] > 0
