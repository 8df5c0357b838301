"""The dispatcher of a backend session: it says when the session's receive loop has ended, and keeps the log lines
a backend sends during a call ahead of the call's answer."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import Context, ContextVar
from typing import Any, Final

import anyio
from mcp.shared.jsonrpc_dispatcher import JSONRPCDispatcher

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
