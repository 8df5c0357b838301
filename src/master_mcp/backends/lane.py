"""The 2026-07-28 lane: a sessionless hop to a streamable-HTTP backend, beside its handshake session.

A 2026-07-28 front request whose client can answer nothing (it declared no sampling, elicitation or roots) goes to
the backend in that client's own era: the backend serves it as it would serve the client directly, its log level
and all, and a sessionless request costs the backend and the master less than one on a handshake session. The
handshake session keeps everything else: listings, handshake-era clients, and clients that answer a backend's
questions through the master.

What a backend announces to 2026-07-28 listeners only (list changes, and updates of the resources front sessions
subscribed to) is heard on a `subscriptions/listen` stream of the lane, so the catalog stays as fresh as before
whichever era a change was made in. A backend that offers no 2026-07-28 era, or no listen stream, gets no lane;
neither does one configured with `protocol: handshake`, nor one with several instances (`urls`: a listen stream
reaches one instance, and its requests would be spread over all of them).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AsyncExitStack
from contextvars import Context
from dataclasses import dataclass
from typing import Any, Final, TypeGuard, TypeVar, cast

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession, MessageHandlerFnT
from mcp.client.subscriptions import Subscription, listen
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import (
    MCP_METHOD_HEADER,
    MCP_NAME_HEADER,
    MCP_PROTOCOL_VERSION_HEADER,
    NAME_BEARING_METHODS,
    encode_header_value,
    find_invalid_x_mcp_header,
    mcp_param_headers,
    x_mcp_header_map,
)
from mcp_types import JSONRPCError, JSONRPCNotification, JSONRPCResponse
from mcp_types.methods import parse_server_notification
from pydantic import ValidationError

from master_mcp.backends.failures import describe
from master_mcp.backends.http_wire import REPEATABLE, HttpWire
from master_mcp.backends.streamable import Sessionless, streamable_http
from master_mcp.backends.watched import CALLER, WatchedDispatcher
from master_mcp.config.models import ServerConfig
from master_mcp.lines import MAX_MESSAGE_BYTES
from master_mcp.tracing import backend_error, backend_span

logger = logging.getLogger(__name__)

Json = dict[str, Any]
_T = TypeVar("_T")


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# The requests a lane carries: those a client makes of a backend's tools, resources and prompts. Lists stay on the
# handshake session (the catalog is the master's), and so does what a handshake-era front session set up.
LANE_METHODS: Final = frozenset({"tools/call", "resources/read", "prompts/get", "completion/complete"})
_BACKOFF_START_S: Final = 1.0
_BACKOFF_MAX_S: Final = 30.0
_STEADY_S: Final = 10.0  # a lane that served this long before closing was well: its next attempt starts afresh
# What a backend answers that says it offers no 2026-07-28 era or no listen stream (any other error may pass).
_REFUSALS: Final = frozenset(
    {
        types.METHOD_NOT_FOUND,
        types.INVALID_REQUEST,
        types.INVALID_PARAMS,
        types.PARSE_ERROR,
        types.UNSUPPORTED_PROTOCOL_VERSION,
    }
)


class _Refused(Exception):
    """The backend does not offer what a lane needs: no lane for as long as this session lasts."""


Heard = Callable[[types.ServerNotification, object | None], Awaitable[None]]


class LaneCalls:
    """Lane requests, each on a POST of its own (`Sessionless`), answered to the caller as a dispatcher's
    `send_raw_request` would. What the backend sends on a request's stream before its answer (progress, log lines)
    is handled in order as it comes, by the caller's task, so it reaches the caller ahead of the answer."""

    def __init__(self, calls: Sessionless, version: str, heard: Heard) -> None:
        self._calls = calls
        self._version = version
        self._heard = heard
        self._ids = itertools.count(1)
        self._running: set[anyio.CancelScope] = set()
        self._closed = False

    def close(self) -> None:
        """The lane is closing: the calls on it end now, as a dispatcher's would when its connection closes."""
        self._closed = True
        for scope in self._running:
            scope.cancel()

    async def send_raw_request(self, method: str, params: Json | None, options: CallOptions) -> Json:
        if self._closed:
            raise MCPError(types.CONNECTION_CLOSED, "the 2026-07-28 lane closed")
        headers = dict(options.get("headers") or {})
        repeatable = headers.pop(REPEATABLE, None) is not None
        request_id = next(self._ids)
        params = dict(params or {})
        meta = params["_meta"] = dict(params.get("_meta") or {})
        progress = options.get("on_progress")
        if progress is not None:
            meta["progressToken"] = request_id
        owner = CALLER.get()
        answers: list[JSONRPCResponse | JSONRPCError] = []

        async def take(message: Any) -> None:
            if isinstance(message, JSONRPCResponse | JSONRPCError):
                answers.append(message)
            elif isinstance(message, JSONRPCNotification):
                await self._notice(message, request_id, progress, owner)
            else:  # a request: the 2026-07-28 wire gives a backend no way to ask its client anything
                logger.debug("a backend request on a 2026-07-28 stream was dropped")

        timeout = options.get("timeout")
        scope = anyio.CancelScope()
        self._running.add(scope)
        try:
            with (
                scope,
                anyio.fail_after(timeout),
                backend_span(method, params.get("name"), meta, request_id) as span,
            ):
                await self._calls.request(request_id, method, params, headers, take, repeatable=repeatable)
                if answers and isinstance(answers[0], JSONRPCError):
                    backend_error(span, answers[0].error.code, answers[0].error.message)
        except TimeoutError:
            raise MCPError(types.REQUEST_TIMEOUT, f"no answer within {timeout}s") from None
        except Exception as exc:  # the credential flow's own failures, say: this call's, told as the backend's
            raise MCPError(types.INTERNAL_ERROR, describe(exc)) from None
        finally:
            self._running.discard(scope)
        if scope.cancelled_caught:
            raise MCPError(types.CONNECTION_CLOSED, "the 2026-07-28 lane closed during the call")
        if not answers:
            raise MCPError(types.CONNECTION_CLOSED, "the backend's stream ended without an answer")
        answer = answers[0]
        if isinstance(answer, JSONRPCError):
            raise MCPError(answer.error.code, answer.error.message, answer.error.data)
        return answer.result

    async def _notice(
        self, message: JSONRPCNotification, request_id: int, progress: ProgressFnT | None, owner: object | None
    ) -> None:
        """What came before the answer, relayed as the SDK's dispatcher would: a notice that cannot be relayed costs
        only itself, never the call."""
        params = message.params or {}
        try:
            if message.method == "notifications/progress":
                value, total, text = params.get("progress"), params.get("total"), params.get("message")
                token = params.get("progressToken")
                if progress is not None and token in (request_id, str(request_id)) and _number(value):
                    await progress(float(value), float(total) if _number(total) else None, _text(text))
                return
            note = parse_server_notification(message.method, self._version, params)
            await self._heard(cast(types.ServerNotification, note), owner)
        except Exception as exc:
            logger.debug("server notification %s not relayed: %s", message.method, type(exc).__name__)

    async def log_lines_relayed(self, owner: object) -> None:
        """Nothing to wait for: a lane request's log lines were relayed before its answer was taken."""


@dataclass(frozen=True, slots=True)
class LaneLive:
    """What lane requests go out through while the lane is open and listening."""

    dispatcher: LaneCalls
    version: str
    meta: Json  # what each request's `_meta` says of the client: its era, its name, and that it can answer nothing


class Lane:
    """The 2026-07-28 lane of one backend connection. It opens when the first request that could use it comes (a
    master whose clients are all handshake-era never opens one), lives as long as the handshake session, reopens
    with backoff when it closes, and is used only while its listen stream is acknowledged."""

    def __init__(
        self,
        server: ServerConfig,
        auth: httpx2.Auth | None,
        *,
        connect_timeout: float,
        client_info: types.Implementation,
        owner_at: Callable[[Context | None], object],
        own: object,
        on_message: MessageHandlerFnT,
        heard: Heard,
        on_missed: Callable[[], None],
        watched: Callable[[], list[str]],
    ) -> None:
        self._server = server
        self._auth = auth
        self._connect_timeout = connect_timeout
        self._client_info = client_info
        self._owner_at = owner_at
        self._own = own  # whose the listen stream's news is: the backend's own, for this connection's sessions
        self._on_message = on_message
        self._heard = heard
        self._on_missed = on_missed
        self._watched = watched
        self._wanted = anyio.Event()
        self._rewatch = anyio.Event()
        self._listening_to: list[str] | None = None
        self._waiters: list[anyio.Event] = []  # rewatch() callers waiting for a stream that listens for their set
        self._schemas: dict[str, Any] = {}
        self._header_maps: dict[str, dict[tuple[str, ...], str]] = {}
        self.live: LaneLive | None = None

    @staticmethod
    def offered(server: ServerConfig) -> bool:
        return server.type in ("http", "local") and server.protocol == "auto" and not server.urls

    def want(self) -> None:
        """A request could have used the lane: open it (that request goes on the handshake session)."""
        self._wanted.set()

    def rewatch(self) -> anyio.Event | None:
        """The resources front sessions subscribed to changed: listen for the new set. Returns an event set once a
        stream does (or the lane has closed), None when there is nothing to wait for."""
        if self._watched() == self._listening_to:
            return None
        self._rewatch.set()
        if self.live is None:
            return None  # a stream being opened reads the set as it is then
        waiter = anyio.Event()
        self._waiters.append(waiter)
        return waiter

    def know_tools(self, tools: list[Json]) -> None:
        """The backend's tools as last listed: a 2026-07-28 `tools/call` repeats some arguments in headers, as the
        tool's input schema says."""
        self._schemas = {tool["name"]: tool.get("inputSchema") for tool in tools if isinstance(tool.get("name"), str)}
        self._header_maps = {}

    def prepare(self, live: LaneLive, method: str, params: Json, front_meta: Mapping[str, Any]) -> tuple[Json, Json]:
        """The params and headers of a lane request: the client's `_meta` as the lane says it, with what of the front
        client's own envelope the backend should hear (its log level)."""
        sent = {**params, "_meta": {**(params.get("_meta") or {}), **front_meta, **live.meta}}
        headers = {MCP_PROTOCOL_VERSION_HEADER: live.version, MCP_METHOD_HEADER: method}
        key = NAME_BEARING_METHODS.get(method)
        if key is not None and isinstance(name := params.get(key), str):
            headers[MCP_NAME_HEADER] = encode_header_value(name)
            arguments = params.get("arguments")
            if method == "tools/call" and isinstance(arguments, Mapping):
                headers.update(mcp_param_headers(self._header_map(name), arguments))
        return sent, headers

    def _header_map(self, name: str) -> dict[tuple[str, ...], str]:
        found = self._header_maps.get(name)
        if found is None:
            schema = self._schemas.get(name)
            # An invalid annotation mirrors nothing: the backend then refuses the call and says why.
            valid = schema is not None and find_invalid_x_mcp_header(schema) is None
            found = self._header_maps[name] = x_mcp_header_map(schema) if valid else {}
        return found

    async def run(self) -> None:
        """Serve the lane for as long as the handshake session it belongs to (the caller's task group ends both)."""
        await self._wanted.wait()
        CALLER.set(self._own)  # what the listen stream brings belongs to no call
        backoff, missed = _BACKOFF_START_S, False
        while True:
            started = time.monotonic()
            try:
                await self._open(missed)
                reason = "its connection closed"
            except Exception as exc:
                if (refused := _refusal(exc)) is not None:
                    logger.info(
                        "server %s: no 2026-07-28 lane (%s); its calls go on the session", self._server.id, refused
                    )
                    return
                reason = describe(exc)
            finally:
                self._closed()
            if time.monotonic() - started >= _STEADY_S:
                backoff = _BACKOFF_START_S
            logger.warning(
                "server %s: the 2026-07-28 lane closed (%s); its calls go on the session, reopening in %.0fs",
                self._server.id,
                reason,
                backoff,
            )
            missed = True
            await anyio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    def _closed(self) -> None:
        self.live = None
        self._listening_to = None
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.set()

    async def _open(self, missed: bool) -> None:
        """One lane, from discover to the end of its connection. `missed`: news may have gone unheard since the last
        one closed, so everything is listed again once this one listens."""
        async with AsyncExitStack() as stack:
            url = self._server.endpoint_url
            assert url is not None  # an http or local server
            wire = await stack.enter_async_context(
                HttpWire(url, headers=self._server.headers, auth=self._auth, instances=None)
            )
            read, write = await stack.enter_async_context(
                streamable_http(wire, max_event_bytes=MAX_MESSAGE_BYTES, on_forgotten=lambda: None)
            )
            dispatcher = WatchedDispatcher(read, write, self._owner_at)
            session = await stack.enter_async_context(
                ClientSession(dispatcher=dispatcher, message_handler=self._on_message, client_info=self._client_info)
            )
            with anyio.fail_after(self._connect_timeout):
                await _refusing(session.discover(), "server/discover")
            version = session.protocol_version
            assert version is not None  # discover adopted it
            meta = {
                types.PROTOCOL_VERSION_META_KEY: version,
                types.CLIENT_INFO_META_KEY: self._client_info.model_dump(by_alias=True, mode="json", exclude_none=True),
                types.CLIENT_CAPABILITIES_META_KEY: {},
            }
            calls = LaneCalls(Sessionless(wire, max_event_bytes=MAX_MESSAGE_BYTES), version, self._heard)
            try:
                await self._listening(session, dispatcher, LaneLive(calls, version, meta), missed)
            finally:
                self.live = None  # before its connections close: no call is sent on them any more
                calls.close()

    async def _listening(
        self, session: ClientSession, dispatcher: WatchedDispatcher, live: LaneLive, missed: bool
    ) -> None:
        """Keep one listen stream open, and the lane in use while one is. A new set of watched resources gets a new
        stream before the old one closes, so nothing published meanwhile is missed."""
        async with AsyncExitStack() as current:
            while not dispatcher.ended.is_set():
                self._rewatch = anyio.Event()
                waiters, self._waiters = self._waiters, []
                try:
                    watched = self._watched()
                    opened = AsyncExitStack()
                    with anyio.fail_after(self._connect_timeout):
                        stream = await _refusing(
                            opened.enter_async_context(
                                listen(
                                    session,
                                    tools_list_changed=True,
                                    prompts_list_changed=True,
                                    resources_list_changed=True,
                                    resource_subscriptions=watched,
                                )
                            ),
                            "subscriptions/listen",
                        )
                    await current.aclose()
                    current.push_async_exit(opened)
                    self._listening_to = watched
                finally:
                    for waiter in waiters:
                        waiter.set()
                if self.live is None:
                    logger.info("server %s: 2026-07-28 calls go on the lane (%s)", self._server.id, live.version)
                    self.live = live
                    if missed:
                        self._on_missed()
                if await self._drain(stream):
                    return

    async def _drain(self, stream: Subscription) -> bool:
        """Take the stream's events until the watched set changes (False) or the stream ends (True). The events
        reach the session's message handler as notifications, as those on any other stream do; the stream keeps a
        copy of each for its own reader, which must be taken."""
        async with anyio.create_task_group() as tg:

            async def until_rewatch() -> None:
                while True:
                    await self._rewatch.wait()
                    if self._watched() != self._listening_to:
                        tg.cancel_scope.cancel()
                        return
                    self._rewatch = anyio.Event()

            tg.start_soon(until_rewatch)
            async for _ in stream:
                pass
            tg.cancel_scope.cancel()
            return True  # a stream that ended (gracefully, or lost: `Subscription` raises) closes the lane
        return False


async def _refusing(step: Awaitable[_T], what: str) -> _T:
    """Await `step`, telling a backend that does not offer what a lane needs from one that failed to answer."""
    try:
        return await step
    except MCPError as exc:
        if exc.code in _REFUSALS:
            raise _Refused(f"{what}: {exc.message}") from None
        raise
    except ValidationError as exc:
        raise _Refused(f"{what}: the answer is not what it should be ({exc.error_count()} validation errors)") from None
    except RuntimeError as exc:  # no version in common
        raise _Refused(f"{what}: {exc}") from None


def _refusal(exc: BaseException) -> _Refused | None:
    """The refusal in `exc` (a session's task group wraps what was raised in it), if it is one."""
    if isinstance(exc, BaseExceptionGroup):
        return next((found for e in exc.exceptions if (found := _refusal(e)) is not None), None)
    return exc if isinstance(exc, _Refused) else None
