"""The one exception type for bad user input (exit code 2 at the CLI)."""

from __future__ import annotations

LINE_BREAKS = "\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


def one_line(text: str) -> str:
    """``text`` with line breaks escaped: a message quoting the user's input stays one line."""
    return "".join(repr(c)[1:-1] if c in LINE_BREAKS else c for c in text)


class LTRayError(Exception):
    """A problem with what the user asked for: config, data, checkpoint, paths.

    The message says what is wrong, where, and how to fix it. The CLI prints it on one line and
    exits with code 2; library callers can catch it like any exception.
    """


class ConfigError(LTRayError, ValueError):
    """An invalid configuration value or key (message names the dotted path)."""


class DataError(LTRayError, FileNotFoundError):
    """A dataset folder that is missing, incomplete or unreadable."""


class CheckpointError(LTRayError):
    """A checkpoint that is corrupt or does not match the requested model."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; carries the epoch and step where it happened."""
