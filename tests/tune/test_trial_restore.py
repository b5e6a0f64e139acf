"""A trial restored by Tune: a checkpoint gone from storage starts the trial over, storage
errors go to Tune (retried), and the exported history is the epochs of the run that finished."""

from __future__ import annotations

import logging

import pytest
from ray import tune

from lt_ray.experiment import CHECKPOINT_FILE
from lt_ray.tune import trainable
from lt_ray.tune.export import final_run


@pytest.fixture(autouse=True)
def lt_ray_logs_reach_caplog(monkeypatch):
    """Earlier tests of the session change lt_ray's logging: the CLI's setup_logging stops its
    records at its own handler, and a logging configuration (Ray's) may disable existing
    loggers; let the trainable's records reach pytest's capture again."""
    for name in ("lt_ray", "lt_ray.tune", trainable.log.name):
        monkeypatch.setattr(logging.getLogger(name), "propagate", True)
        monkeypatch.setattr(logging.getLogger(name), "disabled", False)
    monkeypatch.setattr(logging.getLogger("lt_ray"), "level", logging.INFO)


def test_missing_checkpoint_starts_the_trial_over(tmp_path, caplog):
    gone = tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000003"))
    work = tmp_path / "work"
    work.mkdir()
    assert trainable.restore_checkpoint(gone, work) is False
    assert not (work / CHECKPOINT_FILE).exists()
    assert "no longer in the storage" in caplog.text and "starts over" in caplog.text


class _Restorable:
    def restore(self, checkpoint_path):
        self.restored = checkpoint_path


class _Trial(trainable.RestartWhenCheckpointGone, _Restorable):
    pass


class _Result:
    def __init__(self, checkpoint):
        self.checkpoint = checkpoint


def test_tune_restore_of_a_gone_checkpoint_starts_the_trial_over(tmp_path, caplog):
    """Tune's own restore (before the run starts) raises for a checkpoint gone from storage;
    the study's trainable skips it instead, so the trial starts over."""
    trial = _Trial()
    trial.restore(_Result(tune.Checkpoint.from_directory(str(tmp_path / "checkpoint_000002"))))
    assert not hasattr(trial, "restored")
    assert "no longer in the storage" in caplog.text
    present = tmp_path / "checkpoint_000001"
    present.mkdir()
    result = _Result(tune.Checkpoint.from_directory(str(present)))
    trial.restore(result)
    assert trial.restored is result
    assert trainable.train_trial.__mixins__ == (trainable.RestartWhenCheckpointGone,)


def test_present_checkpoint_is_copied_for_resume(tmp_path):
    folder = tmp_path / "checkpoint_000001"
    folder.mkdir()
    (folder / CHECKPOINT_FILE).write_bytes(b"state")
    work = tmp_path / "work"
    work.mkdir()
    assert trainable.restore_checkpoint(tune.Checkpoint.from_directory(str(folder)), work)
    assert (work / CHECKPOINT_FILE).read_bytes() == b"state"
    assert trainable.restore_checkpoint(None, work) is False


def test_storage_errors_go_to_tune_and_run_errors_are_reported(monkeypatch):
    reports: list[dict] = []

    def failing_report(metrics, checkpoint=None):
        if "trial_error" in metrics:
            reports.append(metrics)
            return
        raise OSError("S3 unreachable")

    def run_that_reports(*args, **kwargs):
        trainable._report({"epoch": 1}, None)

    monkeypatch.setattr(trainable.tune, "report", failing_report)
    monkeypatch.setattr(trainable, "_train", run_that_reports)
    kwargs = dict(base={}, cells=[{}], data_root=None, resources={}, objective=["val_acc"],
                  artifacts="")
    with pytest.raises(OSError, match="S3 unreachable"):  # Tune retries it (max_failures)
        trainable.train_trial({"_cell": 0}, **kwargs)
    assert reports == []

    def run_that_raises(*args, **kwargs):
        raise ValueError("loss is NaN")

    monkeypatch.setattr(trainable, "_train", run_that_raises)
    trainable.train_trial({"_cell": 0}, **kwargs)  # deterministic: reported, not raised
    assert reports[0]["trial_error"] == "ValueError: loss is NaN"


@pytest.mark.parametrize(("reported", "expected"), [
    ([1, 2, 3, 4], [1, 2, 3, 4]),
    ([1, 2, 3, 2, 3, 4], [1, 2, 3, 4]),        # restored from the epoch-1 checkpoint
    ([1, 2, 1, 2, 3, 4], [1, 2, 3, 4]),        # checkpoint gone: started over
    ([1, 2, 3, 3, 4], [1, 2, 3, 4]),
])
def test_history_keeps_the_epochs_of_the_run_that_finished(reported, expected):
    rows = [{"epoch": e, "run": i} for i, e in enumerate(reported)]
    kept = final_run(rows)
    assert [r["epoch"] for r in kept] == expected
    assert kept[-1]["run"] == len(reported) - 1  # the latest report of each epoch wins
    assert [r["run"] for r in kept] == sorted(r["run"] for r in kept)


