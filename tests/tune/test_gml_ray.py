"""The GML plug-in as a study on Ray: stage artifacts built once by the driver, per-output
metrics in Parquet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from conftest import TINY
from lt_ray.cli import main
from procutil import kill_session

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]


def gml_study(name: str) -> dict:
    return {
        "name": name,
        "base": {**TINY, "method": {"name": "gml"}, "train": {**TINY["train"], "epochs": 2},
                 "pretrained": {"method": {"name": "ce"}, "train": {"epochs": 2}}},
        "grid": {"method.args.ensemble": ["none", "prob"]},  # two cells, one base
        "space": {"method.args.t1": {"loguniform": [0.5, 2.0]}},
        "search": {"metric": "val_hm_eps", "mode": "max", "num_samples": 2,
                   "max_concurrent": 2},
        "resources": {"cpu": 1},
    }


def run_study(tmp_path: Path, name: str) -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(gml_study(name)))
    res = CliRunner().invoke(main, ["sweep", str(path), "--storage", str(tmp_path / "res"),
                                    "--no-dashboard"])
    assert res.exit_code == 0, res.output
    return res.output


def test_gml_study_builds_its_base_once_and_reports_every_output(tmp_path):
    out = run_study(tmp_path, "gml_a")
    assert "built 1 stage artifact(s)" in out
    artifacts = [p for p in (tmp_path / "res" / "artifacts").iterdir() if p.is_dir()]
    assert len(artifacts) == 1 and (artifacts[0] / "artifact.json").is_file()
    assert list(artifacts[0].glob("features-*.pt"))  # the feature cache, beside its base
    # the build's epochs reached the driver's console while it ran, evaluated ones with val
    lines = [line for line in out.splitlines() if line.startswith(f"artifact {artifacts[0].name}")]
    assert [line.split(" | ")[0] for line in lines[:2]] == [
        f"artifact {artifacts[0].name} (ce): epoch 1/2", f"artifact {artifacts[0].name} (ce): "
        "epoch 2/2"], out
    assert all(" | val_hm " in line and " | eta " in line for line in lines[:2])
    trials = pd.read_parquet(tmp_path / "res" / "gml_a" / "trials.parquet")
    assert len(trials) == 4 and set(trials.status) == {"completed"}
    for output in ("old", "new", "ens"):
        assert trials[f"test_hm_{output}"].notna().all()
    # the old head is the same base for every trial: identical old metrics
    assert trials["test_acc_old"].nunique() == 1
    by_mode = trials.set_index("cfg.method.args.ensemble")
    assert (by_mode.loc["none", "test_acc"] == by_mode.loc["none", "test_acc_new"]).all()
    assert (by_mode.loc["prob", "test_acc"] == by_mode.loc["prob", "test_acc_ens"]).all()
    per_class = pd.read_parquet(tmp_path / "res" / "gml_a" / "per_class.parquet")
    assert set(per_class.output.dropna()) == {"old", "new", "ens"}
    # the outputs are declared with the study, for lt-ray analyze
    study = json.loads((tmp_path / "res" / "gml_a" / "study.json").read_text())
    assert [o["name"] for o in study["outputs"]["gml"]] == ["old", "new", "ens"]
    assert all(o["meaning"] for o in study["outputs"]["gml"])
    # a second study finds the artifact and trains no base
    out = run_study(tmp_path, "gml_b")
    assert "stage artifact" not in out
    assert len([p for p in (tmp_path / "res" / "artifacts").iterdir() if p.is_dir()]) == 1


def test_sigterm_during_a_stage_build_stops_it_and_the_resumed_study_continues_it(tmp_path):
    """SIGTERM while the driver waits for a stage build: the build task is cancelled, keeps its
    last epoch checkpoint (marked as stopped), Ray stops, one line says how to resume, exit 143.
    The resumed study continues that build from its checkpoint and leaves no build folder."""
    raw = gml_study("gml_stop")
    raw["base"]["pretrained"]["train"] = {"epochs": 150, "eval_every": 50}
    path = tmp_path / "gml_stop.yaml"
    path.write_text(yaml.safe_dump(raw))
    storage = tmp_path / "res"
    env = {**os.environ, "LT_RAY_TEMP_DIR": f"/tmp/ltr{os.getpid()}"}
    cmd = [sys.executable, "-m", "lt_ray.cli", "sweep", str(path), "--storage", str(storage),
           "--no-dashboard"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while not list((storage / "artifacts").glob(".building-*/checkpoint.pt")):
            assert time.time() < deadline and proc.poll() is None, "no build checkpointed"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        kill_session(proc.pid)
    assert proc.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"interrupted by SIGTERM before its trials started; resume with: lt-ray sweep {path} "
        f"--storage {storage} --no-dashboard --resume")
    (kept,) = (storage / "artifacts").iterdir()
    assert kept.name.startswith(".building-") and (kept / ".interrupted").exists()
    assert not (storage / "gml_stop" / "tune").exists()

    res = CliRunner().invoke(main, cmd[3:] + ["--resume"])
    assert res.exit_code == 0, res.output
    assert "resumed from" in res.output  # the build's own line, through the driver's console
    (artifact,) = (storage / "artifacts").iterdir()
    assert not artifact.name.startswith(".building-")
    history = json.loads((artifact / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == list(range(1, 151))
