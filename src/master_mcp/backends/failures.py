"""What a failure to reach a backend is called in a log line or an error: short, and naming what matters."""

from __future__ import annotations

import httpx2
from mcp.shared.exceptions import MCPError


def timed_out(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):  # the session's task groups wrap what its connect raised
        return any(timed_out(e) for e in exc.exceptions)
    return isinstance(exc, TimeoutError)


def describe(exc: BaseException) -> str:
    if isinstance(exc, MCPError):
        return exc.message
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(describe(e) for e in exc.exceptions)
    if isinstance(exc, FileNotFoundError):
        return f"command not found: {exc.filename or exc}"
    if isinstance(exc, httpx2.HTTPError):
        return f"{type(exc).__name__}: {exc}"
    return str(exc) or type(exc).__name__
