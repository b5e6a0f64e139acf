"""SIGINT and SIGTERM stop a sweep the same way, however it was started.

A sweep started as a background job of a non-interactive shell inherits an ignored SIGINT, and
``ray.init`` replaces the driver's SIGTERM handler with one that exits on the spot. Inside
:class:`StopSignals` both signals are handled by lt-ray, by phase:

- before the trials start (data check, Ray start-up, stage builds) the sweep raises
  :class:`SweepInterrupted` at once; the stage builds in flight are cancelled by the driver, so
  their working folders are removed;
- while the Tuner runs (:meth:`StopSignals.tune_running`) the signal is handed to Tune's own
  interrupt: the trials stop, the experiment state is saved, ``fit`` returns;
- while the finished trials are exported (:meth:`StopSignals.deferred`) it is only recorded.

A second signal raises at once in every phase. The caller checks :attr:`StopSignals.received`
after the export and ends with :class:`SweepInterrupted`: the CLI prints how to resume and
exits with 128 + the signal's number (130 for SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_SIGINT_SWITCH = "TUNE_DISABLE_SIGINT_HANDLER"  # Tune leaves SIGINT to us; SIGUSR1 stays


class SweepInterrupted(KeyboardInterrupt):
    """The sweep was stopped by ``signum``; ``finished`` of ``total`` trials had ended (both
    ``None`` when it stopped before its trials started)."""

    def __init__(self, signum: int, finished: int | None = None, total: int | None = None):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.finished = finished
        self.total = total

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name


class StopSignals:
    """Context manager: SIGINT and SIGTERM handled as the module says, the previous handlers
    (and Tune's SIGINT switch) restored on exit. Outside the main thread (a sweep run by an
    app's worker thread) it changes nothing: only the main thread may set handlers."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._switch: str | None = None
        self._tune_usr1: Any = None  # SIGUSR1's handler before Tune ran; None: Tune not running
        self._defer = False

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self
        self._previous = {s: signal.getsignal(s) for s in SIGNALS}
        self._switch = os.environ.get(TUNE_SIGINT_SWITCH)
        os.environ[TUNE_SIGINT_SWITCH] = "1"
        self.install()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._previous:
            return
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._switch is None:
            os.environ.pop(TUNE_SIGINT_SWITCH, None)
        else:
            os.environ[TUNE_SIGINT_SWITCH] = self._switch

    def install(self) -> None:
        """(Re)install the handlers: again after ``ray.init``, which sets its own SIGTERM."""
        if not self._previous:  # not entered in the main thread
            return
        for signum in SIGNALS:
            signal.signal(signum, self._handle)

    @contextmanager
    def tune_running(self) -> Iterator[None]:
        """While Tune's loop runs: a first signal becomes Tune's interrupt (the handler Tune
        installs for SIGUSR1 when its run starts)."""
        self._tune_usr1 = signal.getsignal(signal.SIGUSR1)
        try:
            yield
        finally:
            self._tune_usr1 = None

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """While this block runs a first signal is only recorded (an export finishes)."""
        self._defer = True
        try:
            yield
        finally:
            self._defer = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is not None:  # the second signal: stop now
            raise SweepInterrupted(self.received)
        self.received = signum
        if self._defer:
            return
        if self._tune_usr1 is not None:
            tune_handler = signal.getsignal(signal.SIGUSR1)
            if callable(tune_handler) and tune_handler is not self._tune_usr1:
                tune_handler(signum, frame)  # Tune stops its trials and saves its state
                return
        raise SweepInterrupted(signum)
