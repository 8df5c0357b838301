"""What a failure to reach a backend is called in a log line or an error: short, and naming what matters."""

from __future__ import annotations

from typing import Any, Final

import httpx2
from mcp.shared.exceptions import MCPError

# The `data` key of an error the master's transports make for an HTTP failure with no JSON-RPC error in its body
# (a 502 from a proxy, a 503 from an overloaded server): the backend is failing, not answering, and the request
# path counts it against the backend's circuit breaker.
_HTTP_FAILURE: Final = "master-mcp/httpStatus"


def http_failure(status: int) -> dict[str, Any] | None:
    """The `data` of the error that stands for an HTTP answer with this status: marked when it is a server failure."""
    return {_HTTP_FAILURE: status} if status >= 500 else None


def failed_with(data: object) -> int | None:
    """The HTTP status of a server failure `http_failure` marked; None for any other error."""
    status = data.get(_HTTP_FAILURE) if isinstance(data, dict) else None
    return status if isinstance(status, int) else None


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
