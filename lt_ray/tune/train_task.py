"""``lt-ray train`` as a Ray task: what the web UI's Train tab starts, watches and stops.

The task runs the very command a user would type, in its own process group on whichever node
Ray schedules it (with the CPUs/GPUs it asked for), so the page stays responsive and a
cluster's worker does the work. Stopping is Ctrl-C: Ray's cancel interrupts the task, which
sends SIGINT to the run; the run keeps its last finished epoch in ``checkpoint.pt`` and ends
with the line that says how to continue it (exit 130).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

STOP_WAIT_S = 120.0  # how long a stopped run may take to write its checkpoint and exit
POLL_S = 0.2
OUTPUT_CHARS = 20_000  # the tail of stdout/stderr that comes back


@dataclass(frozen=True)
class TrainOutcome:
    """How one ``lt-ray train`` ended: its exit code and the tails of what it printed."""

    returncode: int
    stdout: str
    stderr: str
    stopped: bool  # ended by a stop request

    @property
    def message(self) -> str:
        """The run's own last word: its ``error:``/``interrupted:`` line, else its last line."""
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith(("error:", "interrupted:")):
                return line
        out = [line for line in self.stdout.splitlines() if line.strip()]
        return (lines or out or [f"exit code {self.returncode}"])[-1]


def _child_signals() -> None:
    """In the run's process: SIGINT back to its default (Ray's worker ignores and blocks it,
    and both are inherited), so Ctrl-C semantics hold."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def run_train_command(argv: Sequence[str]) -> TrainOutcome:
    """Run ``lt-ray train ARGV`` and wait for it. An interrupt of this call (Ray's cancel, or
    Ctrl-C) becomes SIGINT of the run's process group; the outcome then says ``stopped``."""
    command = [sys.executable, "-m", "lt_ray.cli", "train", *argv]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, text=True, process_group=0,
                                preexec_fn=_child_signals)
        stopped = False
        try:
            while proc.poll() is None:
                time.sleep(POLL_S)
        except KeyboardInterrupt:
            stopped = True
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(STOP_WAIT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        out.seek(0)
        err.seek(0)
        return TrainOutcome(proc.returncode, out.read()[-OUTPUT_CHARS:],
                            err.read()[-OUTPUT_CHARS:], stopped)


def start_train(argv: Sequence[str], *, cpus: float = 1.0, gpus: float = 0.0) -> Any:
    """Start ``lt-ray train ARGV`` as a Ray task (Ray must be up); its ObjectRef."""
    import ray

    task = ray.remote(run_train_command).options(
        num_cpus=cpus, num_gpus=gpus, max_retries=0, name="lt-ray train")
    return task.remote(list(argv))


def stop_train(ref: Any) -> None:
    """Ask the run of ``ref`` to stop (it checkpoints and exits); a queued one never starts."""
    import ray

    ray.cancel(ref, force=False)


def train_outcome(ref: Any) -> TrainOutcome | None:
    """The outcome of the run of ``ref``; None while it runs or waits for resources."""
    import ray
    from ray.exceptions import RayError, TaskCancelledError

    ready, _ = ray.wait([ref], timeout=0)
    if not ready:
        return None
    try:
        return ray.get(ref)
    except TaskCancelledError:
        return TrainOutcome(130, "", "interrupted: stopped before it started", True)
    except RayError as exc:
        first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
        return TrainOutcome(1, "", f"error: the Ray task failed: {first[:300]}", False)
