"""Live progress of the stage builds: their epoch lines reach the driver's console.

A stage build runs as a Ray task, far from the console. Its engine logs one line per epoch
(:func:`lt_ray.engine.fit`: epoch, lr, loss, val/test figures when evaluated, speed, time
left). :class:`BuildLines` (installed in the task) writes those lines to the task's log and
sends them to a :class:`BuildProgress` actor of the driver: every evaluated epoch, the last, and
otherwise at most one every :data:`EVERY_S` seconds; the driver takes them while it waits.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray

EVERY_S = 30.0  # an unevaluated epoch's line reaches the console at most this often per build
ENGINE_LOGGER = "lt_ray.engine"


@ray.remote(num_cpus=0)
class BuildProgress:
    """The driver's mailbox of build lines (no CPU: it only holds strings)."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def add(self, line: str) -> None:
        self._lines.append(line)

    def take(self) -> list[str]:
        lines, self._lines = self._lines, []
        return lines


class BuildLines(logging.Handler):
    """In a build task: each engine line, prefixed with ``label``, to the task's log (stderr)
    and, throttled as the module says, to ``progress``."""

    def __init__(self, label: str, progress: Any, every_s: float = EVERY_S) -> None:
        super().__init__(logging.INFO)
        self.label, self.progress, self.every_s = label, progress, every_s
        self._last_sent = -float("inf")

    def emit(self, record: logging.LogRecord) -> None:
        line = f"{self.label}: {record.getMessage()}"
        print(line, file=sys.stderr, flush=True)
        now = time.monotonic()
        if getattr(record, "evaluated", True) or now - self._last_sent >= self.every_s:
            self._last_sent = now
            self.progress.add.remote(line)


@contextmanager
def build_lines(label: str, progress: Any) -> Iterator[None]:
    """While the block runs, the engine's lines go through a :class:`BuildLines`."""
    logger = logging.getLogger(ENGINE_LOGGER)
    handler = BuildLines(label, progress)
    previous = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.disabled = False  # a dictConfig in this process may have disabled it
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous[0])
        logger.disabled = previous[1]
