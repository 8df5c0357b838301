"""Backend requests for a 2026-07-28 client: the multi-round-trip bridge.

A handshake-era backend asks its client (sampling, elicitation, roots) in the middle of a call. A 2026-07-28
client cannot be sent requests; it is answered with an input-required result instead, and retries the call with
`inputResponses` and the `requestState` it was given. The backend call stays open meanwhile: this module keeps
it, hands the backend's questions to the client's retry, and its answers back to the waiting backend.

A backend served on the 2026-07-28 lane (`backends/lane.py`) returns its own input-required results; their
`requestState` goes to the client as a token of the master's, bound to that client's principal and that backend, so
a state one user was given cannot be used by another, nor carried to another server.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

import anyio
import anyio.abc
import mcp_types as types
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

logger = logging.getLogger(__name__)

Json = dict[str, Any]
_MAX_PENDING: Final = 1024


@dataclass(eq=False)
class _Ask:
    key: str
    request: BaseModel
    answered: anyio.Event = field(default_factory=anyio.Event)
    response: Any = None


@dataclass(frozen=True)
class _Done:
    result: Json | None = None
    error: BaseException | None = None


def _parse(request: BaseModel, raw: Any) -> Any:
    """The client's answer, as the type the backend's question expects (or an error it can report)."""
    if isinstance(request, types.CreateMessageRequest):
        kind: type[BaseModel] = (
            types.CreateMessageResultWithTools if request.params.tools else types.CreateMessageResult
        )
    elif isinstance(request, types.ElicitRequest):
        kind = types.ElicitResult
    else:
        kind = types.ListRootsResult
    try:
        return kind.model_validate(raw)
    except ValueError:
        return types.ErrorData(code=types.INVALID_PARAMS, message="the client's answer was malformed")


@dataclass(eq=False)
class PendingCall:
    """One front call of a 2026-07-28 client whose backend call is waiting for the client's input."""

    principal: tuple[str, str]
    timeout_s: float
    created: float = field(default_factory=time.monotonic)
    waiting: dict[str, _Ask] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._send, self._receive = anyio.create_memory_object_stream[_Ask | _Done](64)
        self.busy = False  # a round in progress: a second retry with the same state must not race it

    async def ask(self, request: BaseModel) -> Any:
        """Called on behalf of the backend: wait for the client's answer to `request` (a retry delivers it)."""
        item = _Ask(f"input-{secrets.token_hex(6)}", request)
        await self._send.send(item)
        with anyio.move_on_after(self.timeout_s):
            await item.answered.wait()
            return item.response
        return types.ErrorData(code=types.REQUEST_TIMEOUT, message="the client did not answer in time")

    async def finish(self, result: Json | None, error: BaseException | None) -> None:
        await self._send.send(_Done(result, error))

    def answer(self, responses: dict[str, Any]) -> None:
        for key, raw in responses.items():
            item = self.waiting.pop(key, None)
            if item is not None:
                item.response = _parse(item.request, raw)
                item.answered.set()

    async def next(self, token: str) -> Json:
        """The front's answer for now: the backend's result, or the questions it is waiting on."""
        item = await self._receive.receive()
        if isinstance(item, _Done):
            if item.error is not None:
                raise item.error
            assert item.result is not None
            return item.result
        asks = [item]
        while True:  # every question already asked goes into this one round
            try:
                more = self._receive.receive_nowait()
            except anyio.WouldBlock:
                break
            if isinstance(more, _Done):
                await self._send.send(more)  # keep the end for the next round, after these are answered
                break
            asks.append(more)
        for ask in asks:
            self.waiting[ask.key] = ask
        requests = {ask.key: ask.request.model_dump(by_alias=True, mode="json", exclude_none=True) for ask in asks}
        return {"resultType": "input_required", "inputRequests": requests, "requestState": token}


class RoundTrips:
    """The open multi-round-trip calls, by the `requestState` token their client was given."""

    def __init__(self) -> None:
        self._pending: OrderedDict[str, PendingCall] = OrderedDict()
        self._states: OrderedDict[str, tuple[tuple[str, str], str, str]] = OrderedDict()

    async def start(
        self,
        tg: anyio.abc.TaskGroup,
        principal: tuple[str, str],
        timeout_s: float,
        call: Callable[[PendingCall], Awaitable[Json]],
    ) -> Json:
        pending = PendingCall(principal, timeout_s)
        token = secrets.token_urlsafe(24)
        self._pending[token] = pending
        while len(self._pending) > _MAX_PENDING:
            self._pending.popitem(last=False)

        async def run() -> None:
            try:
                result = await call(pending)
            except Exception as exc:
                await pending.finish(None, exc)
            else:
                await pending.finish(result, None)

        tg.start_soon(run)
        return await self._round(token, pending)

    def holds(self, token: str) -> bool:
        """Whether `token` stands for a call the master holds open."""
        return token in self._pending

    def wrap(self, state: str, principal: tuple[str, str], server_id: str) -> str:
        """The token a client is given for a backend's own `requestState`."""
        token = secrets.token_urlsafe(24)
        self._states[token] = (principal, server_id, state)
        while len(self._states) > _MAX_PENDING:
            self._states.popitem(last=False)
        return token

    def unwrap(self, token: str, principal: tuple[str, str], server_id: str) -> str | None:
        """The backend state `token` stands for, if it was given to `principal` for `server_id`."""
        held = self._states.get(token)
        if held is None or held[:2] != (principal, server_id):
            return None
        self._states.move_to_end(token)
        return held[2]

    async def resume(self, token: str, principal: tuple[str, str], responses: dict[str, Any] | None) -> Json:
        pending = self._pending.get(token)
        if pending is None or pending.principal != principal:
            raise MCPError(types.INVALID_PARAMS, "unknown or expired requestState; call the tool again")
        if pending.busy:
            raise MCPError(types.INVALID_REQUEST, "this requestState is being answered already")
        pending.answer(responses or {})
        return await self._round(token, pending)

    async def _round(self, token: str, pending: PendingCall) -> Json:
        pending.busy = True
        try:
            outcome = await pending.next(token)
        except BaseException:
            self._pending.pop(token, None)
            raise
        finally:
            pending.busy = False
        if outcome.get("resultType") != "input_required":
            self._pending.pop(token, None)
        return outcome
