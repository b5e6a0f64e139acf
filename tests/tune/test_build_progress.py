"""Stage builds' epoch lines: to the task log always, to the driver throttled (no Ray started:
the actor is replaced by a recorder)."""

from __future__ import annotations

import logging

from lt_ray.tune.build_progress import ENGINE_LOGGER, BuildLines, build_lines


class Recorder:
    """Stands in for the BuildProgress actor handle: ``add.remote(line)`` records the line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.add = self

    def remote(self, line: str) -> None:
        self.lines.append(line)


def test_evaluated_epochs_always_reach_the_driver_others_at_most_every_interval(capsys):
    progress = Recorder()
    logger = logging.getLogger(ENGINE_LOGGER)
    with build_lines("artifact abc (ce)", progress):
        assert logger.level == logging.INFO
        for epoch, evaluated in [(1, False), (2, False), (3, True), (4, False)]:
            logger.info("epoch %d/4", epoch, extra={"evaluated": evaluated})
    assert not any(isinstance(h, BuildLines) for h in logger.handlers)
    # epoch 1: the first line; 2: within the interval, held back; 3: evaluated; 4: held back
    assert progress.lines == ["artifact abc (ce): epoch 1/4", "artifact abc (ce): epoch 3/4"]
    task_log = capsys.readouterr().err.splitlines()
    assert task_log == [f"artifact abc (ce): epoch {e}/4" for e in (1, 2, 3, 4)]


def test_with_no_interval_every_epoch_reaches_the_driver():
    progress = Recorder()
    handler = BuildLines("b", progress, every_s=0.0)
    for epoch in (1, 2):
        handler.emit(logging.LogRecord("x", logging.INFO, "", 0, f"epoch {epoch}", None, None))
    assert progress.lines == ["b: epoch 1", "b: epoch 2"]
