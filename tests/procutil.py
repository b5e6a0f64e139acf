"""Stop what a test started, and only that: processes are found by their session id.

Tests start drivers and Ray heads with ``start_new_session=True`` (setsid), so every process
they spawn (gcs_server, raylets, workers) shares the new session id, the leader's pid. Nothing
here matches processes by name or command line.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state is [0], session id [3])."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2:].split()


def session_pids(sid: int) -> list[int]:
    """Pids of the live (non-zombie) processes whose session id is ``sid``, read from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields and fields[0] != "Z" and int(fields[3]) == sid:
            pids.append(int(entry))
    return sorted(pids)


def _signal_session(sid: int, sig: int) -> None:
    """Send ``sig`` to every process of session ``sid``, checked again through a pidfd."""
    for pid in session_pids(sid):
        try:
            fd = os.pidfd_open(pid)
        except OSError:  # already gone
            continue
        try:
            # the pidfd pins this process: if it still belongs to the session now, it is ours
            fields = _stat_fields(pid)
            if fields and int(fields[3]) == sid:
                signal.pidfd_send_signal(fd, sig)
        except OSError:
            pass
        finally:
            os.close(fd)


def kill_session(sid: int, *, grace_s: float = 1.0, timeout_s: float = 30.0) -> None:
    """SIGTERM the processes of session ``sid``, SIGKILL what is left, wait until none remain."""
    _signal_session(sid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.2)
    deadline = time.monotonic() + timeout_s
    while session_pids(sid):
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of session {sid} survive SIGKILL: {session_pids(sid)}")
        _signal_session(sid, signal.SIGKILL)
        time.sleep(0.2)
