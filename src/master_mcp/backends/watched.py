"""The dispatcher of a backend session: it says when the session's receive loop has ended, and keeps the log lines
a backend sends during a call ahead of the call's answer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from contextvars import Context, ContextVar
from functools import partial
from typing import Any, Final

import anyio
import anyio.lowlevel
import mcp_types as types
from mcp.shared.dispatcher import CallOptions
from mcp.shared.exceptions import MCPError
from mcp.shared.jsonrpc_dispatcher import _ABANDON_WRITE_TIMEOUT, JSONRPCDispatcher
from mcp.shared.message import ClientMessageMetadata
from mcp_types import JSONRPCError, JSONRPCRequest, JSONRPCResponse, RequestId

from master_mcp.backends.streamable import SessionWrites
from master_mcp.tracing import backend_error, backend_span

# The front request a backend request is made for. Streamable HTTP delivers what the backend sends on that
# request's stream in the context it was sent from, so this tells whose call a notification belongs to.
CALLER: ContextVar[object | None] = ContextVar("master_mcp_caller", default=None)
# Which notification a task handles (its number in the dispatcher that received it), and whose call it was
# received during: the first is set in receive order where the task will copy it from, the second by the task.
_RECEIVED: ContextVar[int] = ContextVar("master_mcp_received", default=0)
RECEIVED_FOR: ContextVar[object | None] = ContextVar("master_mcp_received_for", default=None)
# How long a call's answer waits for the log lines received before it to be relayed (only a front client that
# reads nothing of its own stream makes that take long, and its answer would wait behind them anyway).
_LOG_LINES_WITHIN_S: Final = 2.0
# What a request's answer is when its time ran out (no peer can send this object).
_EXPIRED: Final = types.ErrorData(code=types.REQUEST_TIMEOUT, message="timed out")
# Options only the SDK's own path handles (the master sends none of them).
_SDK_ONLY: Final = ("request_id", "resumption_token", "on_resumption_token")


class _Answer:
    """The one outcome of a request, as the dispatcher's receive loop hands it over: it calls `send.send_nowait`
    with the result or error (or its closed outcome), and reads `on_progress` for progress notifications."""

    __slots__ = ("future", "on_progress")

    def __init__(self, future: asyncio.Future[Any], on_progress: Any) -> None:
        self.future = future
        self.on_progress = on_progress

    @property
    def send(self) -> _Answer:
        return self

    def send_nowait(self, outcome: object) -> None:
        if not self.future.done():  # a caller that gave up has cancelled it
            self.future.set_result(outcome)

    def take(self, message: JSONRPCResponse | JSONRPCError) -> None:
        self.send_nowait(message.result if isinstance(message, JSONRPCResponse) else message.error)


async def _called(
    writes: SessionWrites,
    request: JSONRPCRequest,
    headers: dict[str, str] | None,
    answer: _Answer,
    timeout: float | None,
) -> Any:
    """The request made in this task (an HTTP backend's POST, read here), its answer as `writes` hands it over."""
    with anyio.move_on_after(timeout):
        await writes.call(request, headers, answer.take)
        return await answer.future  # answered already, unless the answer follows what came before it
    return _EXPIRED


class WatchedDispatcher(JSONRPCDispatcher[Any]):
    """A dispatcher that says when its receive loop has ended (the peer hung up or the child died), and that keeps
    the log lines a backend sends during a call ahead of the call's answer.

    The SDK hands each notification to a task of its own and resolves an answer at once, so a log line read just
    before an answer could reach the front after it, when the call's stream is closed, or be taken for nobody's
    once the call is over. So whose call a notification belongs to is decided as it is received, and a call's
    answer waits for the log lines received for it until then to be relayed."""

    def __init__(self, read_stream: Any, write_stream: Any, owner_at: Callable[[Context | None], object]) -> None:
        super().__init__(read_stream, write_stream)
        self.ended = anyio.Event()
        self._owner_at = owner_at
        self._received = 0
        # Each notification received and not yet handled: whose call it came during, and whether that call's
        # answer waits for it (log lines; what goes to others, such as resource updates, must not hold it up).
        self._unhandled: dict[int, tuple[object, bool]] = {}
        self._handled_one = anyio.Event()

    async def send_raw_request(
        self,
        method: str,
        params: Mapping[str, Any] | None,
        opts: CallOptions | None = None,
        *,
        _related_request_id: RequestId | None = None,
    ) -> dict[str, Any]:
        """The SDK's request, answered the same way (its errors, its timeout, the courtesy cancel of a request
        abandoned, its client span), with a future where the SDK makes a pair of memory streams, no request clock,
        and no span while nothing collects spans. Every backend call but the lane's comes here: about 190 Python
        calls fewer per call (docs/benchmarks.md, change 26). A streamable-HTTP backend's request is made in the
        caller's own task (`SessionWrites`, change 27). What the session sends in a handler's name, and what
        resumes a stream, take the SDK's path."""
        opts = opts or {}
        if _related_request_id is not None or not self._running or any(key in opts for key in _SDK_ONLY):
            return await super().send_raw_request(method, params, opts, _related_request_id=_related_request_id)
        request_id = self._allocate_id()
        while request_id in self._pending:
            request_id = self._allocate_id()
        out = dict(params) if params is not None else {}
        meta = dict(out.get("_meta") or {})
        on_progress = opts.get("on_progress")
        if on_progress is not None:
            meta["progressToken"] = request_id  # so the receive loop finds `on_progress` under the request's id
        answer = _Answer(asyncio.get_running_loop().create_future(), on_progress)
        self._pending[request_id] = answer  # type: ignore[assignment]  # read where the SDK reads its `_Pending`
        headers = opts.get("headers")
        timeout = opts.get("timeout")
        written = False
        try:
            with backend_span(method, out.get("name"), meta, request_id) as span:
                if meta:
                    out["_meta"] = meta
                else:
                    out.pop("_meta", None)
                # Built as it stands (what goes in is the master's own), and without params rather than with
                # `"params": null`, which JSON-RPC forbids.
                fields: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "method": method}
                if out:
                    fields["params"] = out
                request = JSONRPCRequest.model_construct(**fields)
                # A caller cancelled already must not get its request sent: the write below need not yield.
                await anyio.lowlevel.checkpoint_if_cancelled()
                written = True
                if isinstance(self._write_stream, SessionWrites):
                    outcome = await _called(self._write_stream, request, headers, answer, timeout)
                else:
                    outcome = await self._written(request, headers, answer, timeout)
                if outcome is _EXPIRED:
                    backend_error(span, types.REQUEST_TIMEOUT, f"Request {method!r} timed out")
                elif isinstance(outcome, types.ErrorData):
                    backend_error(span, outcome.code, outcome.message)
        except anyio.get_cancelled_exc_class():
            if written and opts.get("cancel_on_abandon", True):
                await self._abandoned(request_id, "caller cancelled", shield=True)
            raise
        finally:
            self._pending.pop(request_id, None)
        if outcome is _EXPIRED:
            if opts.get("cancel_on_abandon", True):
                await self._abandoned(request_id, f"timed out after {timeout}s", shield=False)
            raise MCPError(types.REQUEST_TIMEOUT, f"Request {method!r} timed out")
        if isinstance(outcome, types.ErrorData):
            raise MCPError(outcome.code, outcome.message, outcome.data)
        result: dict[str, Any] = outcome
        return result

    async def _written(
        self, request: JSONRPCRequest, headers: dict[str, str] | None, answer: _Answer, timeout: float | None
    ) -> Any:
        """The request written to the session's stream, its answer as the receive loop hands it over."""
        try:
            await self._write(request, ClientMessageMetadata(headers=headers) if headers else None)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            raise MCPError(types.CONNECTION_CLOSED, "Connection closed") from None
        expiry = None
        if timeout is not None:
            expiry = asyncio.get_running_loop().call_later(timeout, answer.send_nowait, _EXPIRED)
        try:
            return await answer.future
        finally:
            if expiry is not None:
                expiry.cancel()

    async def _abandoned(self, request_id: RequestId, reason: str, *, shield: bool) -> None:
        """Tell the backend to stop work on a request no one waits for, as the SDK's dispatcher does."""
        await self._final_write(
            partial(self._cancel_outbound, request_id, reason, None),
            shield=shield,
            timeout=_ABANDON_WRITE_TIMEOUT,  # the SDK's bound, so both paths give up alike
            describe=f"courtesy cancel of request {request_id!r}",
        )

    async def run(
        self, on_request: Any, on_notify: Any, on_notify_intercept: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        def intercept(method: str, params: Any) -> bool:
            # Runs in receive order, just before the dispatcher starts the notification's task (in the sender's
            # context where there is one, else in a copy of this one).
            self._received += 1
            number = self._received
            sender: Context | None = getattr(self._read_stream, "last_context", None)
            if sender is not None:
                sender.run(_RECEIVED.set, number)
            else:
                _RECEIVED.set(number)
            self._unhandled[number] = (self._owner_at(sender), method == "notifications/message")
            if on_notify_intercept is not None and on_notify_intercept(method, params):
                self._handled(number)  # taken by the session itself: no task follows
                return True
            return False

        async def notify(dctx: Any, method: str, params: Any) -> None:
            number = _RECEIVED.get()
            RECEIVED_FOR.set(self._unhandled.get(number, (None, False))[0])
            try:
                await on_notify(dctx, method, params)
            finally:
                self._handled(number)

        try:
            await super().run(on_request, notify, intercept, *args, **kwargs)
        finally:
            self.ended.set()

    def _handled(self, number: int) -> None:
        if self._unhandled.pop(number, None) is not None:
            self._handled_one.set()
            self._handled_one = anyio.Event()

    async def log_lines_relayed(self, owner: object) -> None:
        """Wait (a while at most) until the log lines received so far for `owner`'s call have been relayed."""
        if not self._unhandled:
            return
        mine = [number for number, (whose, waits) in self._unhandled.items() if waits and whose is owner]
        with anyio.move_on_after(_LOG_LINES_WITHIN_S):
            while any(number in self._unhandled for number in mine):
                await self._handled_one.wait()
