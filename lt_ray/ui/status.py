"""One status line per tab: what happened, or lt-ray's one-line error; a handler never takes
the server down."""

from __future__ import annotations

import functools
import html
import logging
from collections.abc import Callable
from typing import Any

from lt_ray.errors import LTRayError, one_line

log = logging.getLogger(__name__)


def ok(text: str) -> str:
    return f'<div class="lt-status lt-ok">{html.escape(one_line(text))}</div>'


def error(text: str) -> str:
    return f'<div class="lt-status lt-error">error: {html.escape(one_line(text))}</div>'


def shows_errors(status: Any) -> Callable[[Callable[..., dict[Any, Any]]],
                                          Callable[..., dict[Any, Any]]]:
    """Wrap a handler that returns ``{component: value}``: an LTRayError becomes its one line
    in ``status``; anything else too (logged with its traceback), and the server goes on."""

    def wrap(fn: Callable[..., dict[Any, Any]]) -> Callable[..., dict[Any, Any]]:
        @functools.wraps(fn)
        def handler(*args: Any, **kwargs: Any) -> dict[Any, Any]:
            try:
                return fn(*args, **kwargs)
            except LTRayError as exc:
                return {status: error(str(exc))}
            except Exception as exc:  # noqa: BLE001 - a page's bug must not end the server
                log.exception("web UI handler %s failed", fn.__name__)
                return {status: error(f"unexpected {type(exc).__name__}: {exc} (see the "
                                      "server's log; please report it)")}

        return handler

    return wrap
