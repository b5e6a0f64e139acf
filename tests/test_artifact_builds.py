"""Interrupted stage builds leave no stray folder for long: a running build beats a heartbeat,
the next build or study removes build folders whose heartbeat stopped, and the next build of
the same stage resumes one that left a checkpoint."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import pytest

from lt_ray import artifacts


def test_stale_build_folders_are_swept_and_running_ones_kept(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("lt_ray"), "propagate", True)
    monkeypatch.setattr(logging.getLogger("lt_ray"), "disabled", False)
    monkeypatch.setattr(logging.getLogger(artifacts.log.name), "disabled", False)
    caplog.set_level(logging.INFO, logger=artifacts.log.name)
    now = time.time()
    stale = tmp_path / ".building-aaaa-1"  # killed before its first checkpoint
    stale.mkdir()
    os.utime(stale, (now - 3600, now - 3600))
    resumable = tmp_path / ".building-aaaa-4"  # killed after one: kept for its resume
    resumable.mkdir()
    (resumable / "checkpoint.pt").write_bytes(b"x")
    os.utime(resumable / "checkpoint.pt", (now - 3600, now - 3600))
    os.utime(resumable, (now - 3600, now - 3600))
    forgotten = tmp_path / ".building-aaaa-5"  # ... but not for ever
    forgotten.mkdir()
    (forgotten / "checkpoint.pt").write_bytes(b"x")
    old = now - artifacts.RESUMABLE_S - 60
    os.utime(forgotten / "checkpoint.pt", (old, old))
    os.utime(forgotten, (old, old))
    running = tmp_path / ".building-bbbb-2"
    running.mkdir()
    (running / artifacts.HEARTBEAT).touch()
    os.utime(running, (now - 3600, now - 3600))  # an old folder with a fresh heartbeat
    published = tmp_path / "cccc"
    published.mkdir()
    os.utime(published, (now - 3600, now - 3600))
    assert artifacts.sweep_stale_builds(str(tmp_path), now=now) == [stale, forgotten]
    assert running.exists() and published.exists() and resumable.exists()
    assert "removed the stale build folder" in caplog.text
    assert artifacts.sweep_stale_builds(str(tmp_path / "missing")) == []


def test_a_build_beats_its_heartbeat_and_leaves_none_behind(tmp_path, monkeypatch):
    monkeypatch.setattr(artifacts, "HEARTBEAT_S", 0.05)
    work = tmp_path / ".building-dddd-3"
    with artifacts.heartbeat(work):
        first = (work / artifacts.HEARTBEAT).stat().st_mtime_ns
        deadline = time.time() + 5
        while (work / artifacts.HEARTBEAT).stat().st_mtime_ns == first:
            assert time.time() < deadline, "the heartbeat never beat again"
            time.sleep(0.02)
        assert artifacts.sweep_stale_builds(str(tmp_path)) == []  # running: kept
    assert work.is_dir() and not (work / artifacts.HEARTBEAT).exists()


def _stage(epochs: int):
    from conftest import TINY
    from lt_ray.config import ExperimentConfig
    from lt_ray.resolution import resolve

    raw = {**TINY, "method": {"name": "ce"}, "train": {**TINY["train"], "epochs": epochs}}
    return resolve(ExperimentConfig.from_dict(raw))


def _stopped_build(root: str, stage) -> Path:
    """Build ``stage`` under ``root``, which a signal must stop; the build folder it keeps."""
    from lt_ray import experiment

    with pytest.raises(KeyboardInterrupt):
        experiment.build_artifact(root, stage)
    (kept,) = Path(root).glob(".building-*")
    return kept


def test_a_build_stopped_on_a_signal_keeps_its_checkpoint_and_the_next_one_resumes_it(
        tmp_path, monkeypatch):
    from lt_ray import engine, experiment

    stage, root = _stage(4), str(tmp_path / "artifacts")
    real_fit = engine.fit

    def fit_then_stop(method, data, cfg, **kwargs):  # Ctrl-C once epoch 2 is checkpointed
        def report(record, ckpt, per_class):
            if record["epoch"] == 2:
                raise KeyboardInterrupt

        return real_fit(method, data, cfg, **{**kwargs, "report": report})

    monkeypatch.setattr(experiment, "fit", fit_then_stop)
    kept = _stopped_build(root, stage)
    assert (kept / artifacts.INTERRUPTED).exists() and (kept / "checkpoint.pt").is_file()
    assert artifacts.sweep_stale_builds(root) == []  # resumable: not swept

    monkeypatch.setattr(experiment, "fit", real_fit)
    folder = experiment.build_artifact(root, stage)  # claims the stopped build, resumes it
    assert not list((tmp_path / "artifacts").glob(".building-*"))
    history = json.loads((Path(folder) / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # epochs 1-2 kept, 3-4 trained now
    fresh = experiment.build_artifact(str(tmp_path / "fresh"), stage)
    redo = json.loads((Path(fresh) / "metrics.json").read_text())["history"]
    assert [r["train_loss"] for r in history] == [r["train_loss"] for r in redo]


def test_a_build_stopped_while_it_writes_a_checkpoint_is_stopped_not_failed(
        tmp_path, monkeypatch):
    """The signal lands inside torch.save of epoch 2 (as Ray's cancel did in a CI run): the
    build keeps epoch 1's checkpoint, marked as stopped, for the next build to resume."""
    import torch
    from test_models_checkpoint import StopsOnThirdWrite

    from lt_ray import experiment

    stage, root = _stage(3), str(tmp_path / "artifacts")
    real_save, saves = torch.save, []

    def second_save_stops(obj, f, *args, **kwargs):
        saves.append(obj)
        if len(saves) == 2:
            real_save(obj, StopsOnThirdWrite(), *args, **kwargs)
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", second_save_stops)
    kept = _stopped_build(root, stage)
    assert sorted(p.name for p in kept.iterdir()) == [artifacts.INTERRUPTED, "checkpoint.pt",
                                                      "config.yaml", "progress.jsonl"]
    assert torch.load(kept / "checkpoint.pt", weights_only=False)["epoch"] == 1

    monkeypatch.setattr(torch, "save", real_save)
    folder = experiment.build_artifact(root, stage)
    history = json.loads((Path(folder) / "metrics.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3]


def test_a_running_build_is_never_claimed(tmp_path):
    stage = _stage(1)
    work = tmp_path / f".building-{stage.hash}-1"
    work.mkdir()
    (work / "checkpoint.pt").write_bytes(b"x")
    (work / artifacts.HEARTBEAT).touch()
    assert artifacts.claim_interrupted_build(str(tmp_path), stage) is None
    artifacts.mark_interrupted(work)
    claimed = artifacts.claim_interrupted_build(str(tmp_path), stage)
    assert claimed is not None and claimed != work and not work.exists()
    assert (claimed / "checkpoint.pt").is_file() and not (claimed / artifacts.INTERRUPTED).exists()
