"""What a failure to reach a backend is called in a log line or an error: short, and naming what matters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import httpx2
from mcp.shared.exceptions import MCPError
from mcp_types import ErrorData

# Statuses that say a server is failing (a proxy's 502, an overloaded 503) rather than refusing a request (501, 505).
_FAILING: Final = frozenset({500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """The `data` of an error a transport of the master's made for an HTTP server failure with no JSON-RPC error in
    its body: the backend is failing rather than answering, and the request path counts that against its circuit
    breaker. An object, not JSON: no backend can send one (errors stay in the process until the request path
    replaces this one with its own)."""

    status: int


def made_up(code: int, message: str, status: int | None = None) -> ErrorData:
    """The error a transport answers a request with when the backend's answer is not one it can pass on; marked
    `HttpFailure` when it stands for an HTTP `status` that is a server failure."""
    if status in _FAILING:
        return ErrorData(code=code, message=message, data=HttpFailure(status))
    return ErrorData(code=code, message=message)


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
