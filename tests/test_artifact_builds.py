"""Interrupted stage builds leave no stray folder for long: a running build beats a heartbeat,
and the next build or study removes build folders whose heartbeat stopped."""

from __future__ import annotations

import logging
import os
import time

from lt_ray import artifacts


def test_stale_build_folders_are_swept_and_running_ones_kept(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(logging.getLogger("lt_ray"), "propagate", True)
    monkeypatch.setattr(logging.getLogger("lt_ray"), "disabled", False)
    monkeypatch.setattr(logging.getLogger(artifacts.log.name), "disabled", False)
    caplog.set_level(logging.INFO, logger=artifacts.log.name)
    now = time.time()
    stale = tmp_path / ".building-aaaa-1"
    stale.mkdir()
    (stale / "checkpoint.pt").write_bytes(b"x")
    os.utime(stale / "checkpoint.pt", (now - 3600, now - 3600))
    os.utime(stale, (now - 3600, now - 3600))
    running = tmp_path / ".building-bbbb-2"
    running.mkdir()
    (running / artifacts.HEARTBEAT).touch()
    os.utime(running, (now - 3600, now - 3600))  # an old folder with a fresh heartbeat
    published = tmp_path / "cccc"
    published.mkdir()
    os.utime(published, (now - 3600, now - 3600))
    assert artifacts.sweep_stale_builds(str(tmp_path), now=now) == [stale]
    assert not stale.exists() and running.exists() and published.exists()
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
