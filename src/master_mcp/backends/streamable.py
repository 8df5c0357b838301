"""The client side of MCP's streamable HTTP transport, for the master's handshake-era session with a backend.

It keeps the contract of the SDK's `streamable_http_client` (a pair of message streams for a `ClientSession`,
every failure of a request answered as that request's JSON-RPC error) with less work per call: its requests go
through `HttpWire` (the master's own HTTP/1.1) instead of httpx2, and the master's calls are made in their callers'
own tasks (`SessionWrites.call`), with no task or stream between them and the wire; a request written to the
stream gets a task of its own. Per request it POSTs the message and reads the answer, a JSON body or an event
stream; an event stream that breaks off after an event id is resumed from that id. The session's standalone stream
(GET) starts once the session is initialized and reconnects a few times; when the connection closes, the requests
still under way end, then the session is deleted.

The master's backend sessions always begin with `initialize`. A 2026-07-28 session goes over it as it is (discover,
then sessionless POSTs with the headers the session sets): the benchmark's floor uses that, and so does the listen
stream of the master's 2026-07-28 lane, whose calls go through `Sessionless` (no session, no dispatcher).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import Context, ContextVar
from dataclasses import dataclass
from typing import Any, Final

import anyio
import httpx2
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream
from mcp.shared._context_streams import ContextReceiveStream, ContextSendStream, create_context_streams
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER
from mcp.shared.jsonrpc_dispatcher import cancelled_request_id_from_params
from mcp.shared.message import ClientMessageMetadata, SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    INTERNAL_ERROR,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    PARSE_ERROR,
    JSONRPCError,
    JSONRPCMessage,
    JSONRPCNotification,
    JSONRPCRequest,
    JSONRPCResponse,
    RequestId,
    jsonrpc_message_adapter,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError
from pydantic_core import to_json
from yarl import URL

from master_mcp.backends.failures import describe, made_up
from master_mcp.backends.http_wire import REPEATABLE, UNAVAILABLE, UNREACHABLE, AnswerBrokeOff, HttpWire, Reply
from master_mcp.backends.sse_events import EventParser, EventTooLarge

logger = logging.getLogger(__name__)

_SESSION: Final = "mcp-session-id"
_ACCEPT: Final = "application/json, text/event-stream"
_RECONNECT_ATTEMPTS: Final = 2
_RECONNECT_DELAY_MS: Final = 1000
_DELETE_WITHIN_S: Final = 5.0
_MIN_DELAY_S: Final = 0.1
_MAX_DELAY_S: Final = 60.0
# After a request got no answer, the backend is asked whether it is there at all (a ping, on a connection of its
# own): what broke may be just that request's connection, or everything behind a port forward or TCP proxy that
# still accepts connections after the backend died. Failures within this long of a ping share its verdict.
_PROBE: Final = b'{"jsonrpc":"2.0","id":"master-mcp-probe","method":"ping"}'
_PROBE_WITHIN_S: Final = 10.0
_PROBE_SHARED_S: Final = 1.0
# What a gateway answers for a backend it cannot reach at all (503 is left out: it is also "busy", and a busy
# backend is there).
_SILENT: Final = frozenset({502, 504})

Inbox = ContextSendStream[SessionMessage | Exception]
Sink = Callable[[Any], Awaitable[None]]
# Where what comes on a request's stream goes when the request was sent outside the session's dispatcher
# (`Sessionless`): set by that request's task, which reads its stream itself.
_SINK: ContextVar[Sink | None] = ContextVar("master_mcp_sink", default=None)


@dataclass
class _Position:
    """Where an event stream got to: the id to resume it from, the delay the backend asked for, and how many
    messages have come."""

    last_id: str | None = None
    retry_ms: int | None = None
    received: int = 0

    def delay_s(self) -> float:
        # The backend's delay, kept within reason: neither a busy loop nor a wait of days.
        return min(max((self.retry_ms or _RECONNECT_DELAY_MS) / 1000, _MIN_DELAY_S), _MAX_DELAY_S)

    def headers(self) -> dict[str, str]:
        return {"last-event-id": self.last_id} if self.last_id else {}

    def follow(self, parser: EventParser) -> None:
        self.last_id = parser.last_id or self.last_id
        self.retry_ms = parser.retry_ms if parser.retry_ms is not None else self.retry_ms


class _Resume(Exception):
    """An event stream ended before its answer, after an event id it can be resumed from."""

    def __init__(self, position: _Position) -> None:
        self.position = position


class _Gone(Exception):
    """The backend answers nothing any more: the session ends, and its supervisor reconnects."""


class _Link:
    def __init__(
        self, wire: HttpWire, inbox: Inbox | None, max_event_bytes: int, on_forgotten: Callable[[], None]
    ) -> None:
        self._wire = wire
        self._inbox = inbox
        self._max_event_bytes = max_event_bytes
        self._on_forgotten = on_forgotten
        self.session_id: str | None = None
        self._version: str | None = None
        # Each request's POST, by JSON-RPC id, so that one its session gave up on can be closed.
        self._posts: dict[RequestId, anyio.CancelScope] = {}
        self._probing = anyio.Lock()
        self._probed_at = -_PROBE_SHARED_S
        self._silent: str | None = None  # what the last ping got, when it got no answer
        self._tg: TaskGroup | None = None  # the session's tasks
        # Messages written to the session's stream (`SessionWrites`), and of those, how many are done with (sent, or
        # given up on before they were taken); set while a call waits for that to catch up.
        self.handed = 0
        self._settled = 0
        self._caught_up: anyio.Event | None = None
        self._closed = False

    def _headers(self, accept: str = _ACCEPT) -> dict[str, str]:
        headers = {"accept": accept, "content-type": "application/json"}
        if self.session_id:
            headers[_SESSION] = self.session_id
        if self._version:
            headers["mcp-protocol-version"] = self._version
        return headers

    async def _send(
        self, method: str, headers: dict[str, str], body: bytes | None = None, *, repeatable: bool = False
    ) -> Reply:
        try:
            reply = await self._wire.request(method, headers, body, repeatable=repeatable)
        except (*UNREACHABLE, httpx2.LocalProtocolError):  # the last: refused here, nothing reached the backend
            raise
        except httpx2.TransportError:
            await self._still_there()
            raise
        if reply.status in UNAVAILABLE:
            try:
                await self._still_there()
            except BaseException:
                reply.release()
                raise
        if reply.status == 404 and _SESSION in headers:
            # A 404 to a request that carries a session id: the backend has forgotten the session.
            self._on_forgotten()
        return reply

    async def _still_there(self) -> None:
        """Raise `_Gone` unless the backend answers a ping on a new connection (an error answer is an answer; a
        gateway's 502 or 504 is not)."""
        async with self._probing:
            if time.monotonic() - self._probed_at >= _PROBE_SHARED_S:
                self._silent = await self._ping()
                self._probed_at = time.monotonic()
        if self._silent is not None:
            raise _Gone(f"the backend stopped answering (a ping on a new connection: {self._silent})")

    async def _ping(self) -> str | None:
        """What the ping got when it got no answer, else None. It goes without the credential flow, which may have
        a token to fetch: a 401 is an answer too."""
        headers = self._headers()
        try:
            with anyio.fail_after(_PROBE_WITHIN_S):
                reply = await self._wire.request(
                    "POST", headers, _PROBE, fresh=True, credentials=False, repeatable=True
                )
        except (httpx2.TransportError, TimeoutError) as exc:
            return type(exc).__name__
        await reply.finish()
        if reply.status == 404 and _SESSION in headers:
            self._on_forgotten()  # restarted at the same address: the calls that broke were lost with the session
        return f"HTTP {reply.status}" if reply.status in _SILENT else None

    def _outgoing(self, message: JSONRPCMessage, extra: Mapping[str, str] | None) -> tuple[dict[str, str], bool, bytes]:
        """The headers of the POST that carries `message` (with `extra`, the session's own for it), whether it
        may be sent again, and its body."""
        opening = isinstance(message, JSONRPCRequest) and message.method == "initialize"
        if opening:
            self._version = None
        elif extra:
            self._version = extra.get(MCP_PROTOCOL_VERSION_HEADER, self._version)
        headers = self._headers()
        if extra:
            headers.update((name.lower(), value) for name, value in extra.items())
        # An `initialize` may go to another instance after a gateway's 502 or 504: at worst a session is left unused.
        repeatable = headers.pop(REPEATABLE, None) is not None or opening
        return headers, repeatable, message.model_dump_json(by_alias=True, exclude_unset=True).encode()

    async def call(
        self,
        message: JSONRPCRequest,
        headers: Mapping[str, str] | None,
        on_answer: Callable[[JSONRPCResponse | JSONRPCError], None],
    ) -> None:
        """Make a request in the caller's own task, its POST read there too: no task, and no stream between the
        session and the wire, for a call (`SessionWrites`). Its answer goes to `on_answer` at once, unless
        something came before it on its stream: that goes to the session as anything the backend sends does, and
        the answer follows it there, so it is handled first. An answer always comes: the error that stands for it
        when there is none."""
        answered = False
        relayed = False

        async def take(item: Any) -> None:
            nonlocal answered, relayed
            answer = isinstance(item, JSONRPCResponse | JSONRPCError) and not answered
            if answer:
                answered = True
                if not relayed:
                    on_answer(item)
                    return
            relayed = True
            try:
                if self._inbox is not None:
                    await self._inbox.send(SessionMessage(item))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                if answer:
                    on_answer(item)  # the session is closing: its caller still gets it

        await self._after_writes()
        if self._closed:
            on_answer(_error(message.id, CONNECTION_CLOSED, "the session closed"))
            return
        sent_headers, repeatable, body = self._outgoing(message, headers)
        token = _SINK.set(take)
        try:
            await self._request(message, sent_headers, body, repeatable)
        except Exception as exc:  # unreachable, gone, the credential flow failing: as a request task's failure
            self._fail(exc)
            if not answered:
                on_answer(_error(message.id, CONNECTION_CLOSED, describe(exc)))
            return
        finally:
            _SINK.reset(token)
        if not answered:
            reason = "the session closed" if self._closed else "the backend's reply carried no answer"
            on_answer(_error(message.id, CONNECTION_CLOSED, reason))

    def _fail(self, exc: BaseException) -> None:
        """End the session as a request failing in a task of its own ends it (its supervisor reconnects)."""
        if self._tg is not None and not self._closed:
            self._tg.start_soon(_raise, exc)

    def close(self) -> None:
        """The session is closing: its requests end now, before the backend is told (which may take a while), and
        those made in their callers' tasks too, which the session's own tasks ending would not reach."""
        self._closed = True
        for scope in self._posts.values():
            scope.cancel()
        if self._caught_up is not None:
            self._caught_up.set()  # calls waiting for the stream's messages to be sent wait no more

    async def pump(self, outbox: ContextReceiveStream[SessionMessage], tg: TaskGroup) -> None:
        """POST what the session writes: a request in a task of its own, anything else in order, here."""
        async for item in outbox:
            try:
                await self._pass_on(item, outbox.last_context, tg)
            finally:
                self.settled()

    def settled(self) -> None:
        """One message written to the session's stream is done with: sent by `pump`, or given up on by its
        sender before it was taken."""
        self._settled += 1
        if self._caught_up is not None:
            self._caught_up.set()
            self._caught_up = None

    async def _after_writes(self) -> None:
        """Wait until what was written to the session's stream so far has been sent: a call made in its caller's
        task must not overtake it, as it could not when it went through the stream too (the
        `notifications/initialized` before the first listing, above all: a backend may add tools when it gets it)."""
        handed = self.handed
        while self._settled < handed and not self._closed:
            if self._caught_up is None:
                self._caught_up = anyio.Event()
            await self._caught_up.wait()

    async def _pass_on(self, item: SessionMessage, sender: Context | None, tg: TaskGroup) -> None:
        message = item.message
        metadata = item.metadata if isinstance(item.metadata, ClientMessageMetadata) else None
        headers, repeatable, body = self._outgoing(message, metadata.headers if metadata is not None else None)
        if isinstance(message, JSONRPCRequest):
            if sender is not None:
                # The request's task runs in the sender's context (its trace and log correlation).
                sender.run(tg.start_soon, self._request, message, headers, body, repeatable)
            else:
                tg.start_soon(self._request, message, headers, body, repeatable)
            return
        initialized = isinstance(message, JSONRPCNotification) and message.method == "notifications/initialized"
        # The 2026-07-28 wire has no messages from client to server outside a request: closing a request's POST is
        # how it is cancelled.
        if not (self.session_id is None and self._version in MODERN_PROTOCOL_VERSIONS):
            await self._tell(headers, body, essential=initialized)
        if initialized:
            tg.start_soon(self._listen)
        elif isinstance(message, JSONRPCNotification) and message.method == "notifications/cancelled":
            # The backend has been told; its answer, if one ever comes, has no one to go to. A hung backend
            # would otherwise hold the connection and this task until the read timeout (300 s).
            request_id = cancelled_request_id_from_params(message.params)
            if request_id is not None and (abandoned := self._posts.get(request_id)) is not None:
                abandoned.cancel()

    async def _tell(self, headers: dict[str, str], body: bytes, *, essential: bool) -> None:
        """POST a message that gets no answer: a notification, or the answer to one of the backend's requests. One
        that is lost is logged, unless the session cannot go on without it (`essential`): then the session ends."""
        try:
            reply = await self._send("POST", headers, body)
        except UNREACHABLE:
            raise
        except httpx2.TransportError as exc:
            if essential:
                raise
            logger.warning("a message to the backend was lost: %s", type(exc).__name__)
            return
        await reply.finish()
        if essential and reply.status >= 300:
            raise httpx2.RemoteProtocolError(f"the backend refused an essential message: HTTP {reply.status}")

    async def _request(self, message: JSONRPCRequest, headers: dict[str, str], body: bytes, repeatable: bool) -> None:
        with anyio.CancelScope() as scope:
            self._posts[message.id] = scope
            try:
                await self._post(message, headers, body, repeatable)
            finally:
                if self._posts.get(message.id) is scope:  # an id reused meanwhile belongs to the newer request
                    del self._posts[message.id]

    async def _post(self, message: JSONRPCRequest, headers: dict[str, str], body: bytes, repeatable: bool) -> None:
        # A connection that breaks costs this request, not the session: its other requests and its stream go on.
        # One that cannot be made at all (UNREACHABLE), or a backend that answers nothing any more (_Gone), end it.
        try:
            reply = await self._send("POST", headers, body, repeatable=repeatable)
        except UNREACHABLE:
            raise
        except httpx2.LocalProtocolError as exc:
            await self._deliver(_error(message.id, INTERNAL_ERROR, f"the request was not sent: {exc}"))
            return
        except httpx2.TransportError as exc:
            what = "answer" if isinstance(exc, AnswerBrokeOff) else "request"
            await self._deliver(_error(message.id, CONNECTION_CLOSED, _broke(what, exc)))
            return
        try:
            answer = await self._answer(message, reply)
        except _Resume as broken:
            answer = await self._resume(message.id, broken)
        except httpx2.TransportError as exc:
            # The answer had begun: the backend has the request and may well have carried it out.
            answer = _error(message.id, CONNECTION_CLOSED, _broke("answer", exc))
        finally:
            with anyio.CancelScope(shield=True):
                await reply.finish()
        if answer is not None:
            await self._deliver(answer)

    async def _answer(self, message: JSONRPCRequest, reply: Reply) -> JSONRPCError | None:
        """Pass the reply to `message` on; or the error that stands for it when there is none to pass."""
        status = reply.status
        if status == 202:
            return _error(message.id, INVALID_REQUEST, "server answered a request with 202 Accepted")
        if 300 <= status < 400:
            where = reply.headers.get("location", "")
            return _error(message.id, INVALID_REQUEST, f"redirect to {_without_query(where)} not followed")
        if status >= 400:
            if reply.content_type.startswith("application/json"):
                try:
                    parsed = jsonrpc_message_adapter.validate_json(await reply.read(), by_name=False)
                except (ValidationError, httpx2.HTTPError):
                    parsed = None
                if isinstance(parsed, JSONRPCError):
                    # The server may have set `id: null` (it could not read the id); this request is the one.
                    return JSONRPCError(jsonrpc="2.0", id=message.id, error=parsed.error)
            if status == 404:
                if self.session_id is None:
                    return _error(message.id, METHOD_NOT_FOUND, "Not Found")
                return _error(message.id, INVALID_REQUEST, "Session terminated")
            return _error(message.id, INTERNAL_ERROR, f"HTTP {status} from the server", status)
        if message.method == "initialize" and (issued := reply.headers.get(_SESSION)):
            self.session_id = issued
        if reply.content_type.startswith("application/json"):
            try:
                await self._deliver(jsonrpc_message_adapter.validate_json(await reply.read(), by_name=False))
            except ValidationError as exc:
                return _error(message.id, PARSE_ERROR, _not_jsonrpc("answer", exc))
            return None
        if reply.content_type.startswith("text/event-stream"):
            return await self._events(reply, message.id)
        return _error(message.id, INVALID_REQUEST, f"Unexpected content type: {reply.content_type}")

    async def _events(
        self, reply: Reply, request_id: RequestId | None, position: _Position | None = None
    ) -> JSONRPCError | None:
        """Pass on each message of an event stream; for a request's stream, until its answer. `position` follows
        the stream's event ids.

        Raises `_Resume` when a request's stream ends early but can be resumed."""
        parser = EventParser(self._max_event_bytes)
        position = position or _Position()
        try:
            async for chunk in reply.chunks():
                events = parser.feed(chunk)
                position.follow(parser)
                for event in events:
                    if event.event != "message" or not event.data:
                        continue  # a priming event: only its id counts
                    try:
                        message = jsonrpc_message_adapter.validate_json(event.data, by_name=False)
                    except ValidationError as exc:
                        if request_id is None:
                            logger.warning("a backend sent an event that is not a JSON-RPC message")
                            continue
                        return _error(request_id, PARSE_ERROR, _not_jsonrpc("event", exc))
                    position.received += 1
                    if isinstance(message, JSONRPCResponse | JSONRPCError) and request_id is not None:
                        message.id = request_id  # the id as it was sent ("1" is not 1)
                        await self._deliver(message)
                        return None
                    await self._deliver(message)
        except EventTooLarge as exc:
            if request_id is None:
                raise
            return _error(request_id, CONNECTION_CLOSED, f"SSE stream failed: {exc}")
        except httpx2.TransportError:
            logger.debug("event stream ended", exc_info=True)
        if request_id is None:
            return None
        if position.last_id is not None:
            raise _Resume(position)
        return _error(request_id, CONNECTION_CLOSED, "SSE stream ended without a response")

    async def _resume(self, request_id: RequestId, broken: _Resume) -> JSONRPCError | None:
        for _ in range(_RECONNECT_ATTEMPTS):
            await anyio.sleep(broken.position.delay_s())
            headers = {**self._headers("text/event-stream"), **broken.position.headers()}
            try:
                reply = await self._send("GET", headers)
            except httpx2.TransportError:
                continue
            try:
                if reply.status >= 300 or not reply.content_type.startswith("text/event-stream"):
                    continue
                return await self._events(reply, request_id, broken.position)
            except _Resume as again:
                broken = again
            finally:
                await reply.finish()
        return _error(request_id, CONNECTION_CLOSED, "SSE stream ended and reconnection attempts were exhausted")

    async def _listen(self) -> None:
        """The session's standalone stream: what the backend sends outside any request."""
        failures = 0
        position = _Position()  # a reconnected stream resumes where the last one got to, nothing sent is lost
        while failures < _RECONNECT_ATTEMPTS and self.session_id:
            try:
                reply = await self._send("GET", {**self._headers("text/event-stream"), **position.headers()})
                try:
                    if reply.status == 405 or 300 <= reply.status < 400:
                        return  # the backend offers none, or only somewhere this session was not opened
                    if reply.status >= 400 or not reply.content_type.startswith("text/event-stream"):
                        raise httpx2.RemoteProtocolError(f"standalone stream refused: HTTP {reply.status}")
                    before = position.received
                    await self._events(reply, None, position)
                    # A stream that brought something was worth opening; one that ends empty counts as a failure.
                    failures = 0 if position.received > before else failures + 1
                finally:
                    await reply.finish()
            except (httpx2.TransportError, EventTooLarge):
                logger.debug("standalone stream failed", exc_info=True)
                failures += 1
            await anyio.sleep(position.delay_s())

    async def _deliver(self, message: Any) -> None:
        sink = _SINK.get()
        if sink is not None:
            token = _SINK.set(None)  # what the sink starts is not that request's reader
            try:
                await sink(message)
            finally:
                _SINK.reset(token)
        elif self._inbox is not None:
            await self._inbox.send(SessionMessage(message))

    async def terminate(self) -> None:
        if not self.session_id:
            return
        with anyio.move_on_after(_DELETE_WITHIN_S):
            try:
                reply = await self._send("DELETE", self._headers())
                await reply.finish()
            except (httpx2.TransportError, _Gone) as exc:
                logger.debug("could not end the backend session: %s", type(exc).__name__)


async def _raise(exc: BaseException) -> None:
    raise exc


def _error(request_id: RequestId, code: int, message: str, status: int | None = None) -> JSONRPCError:
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=made_up(code, message, status))


def _broke(what: str, exc: Exception) -> str:
    return f"the {what}'s connection failed ({type(exc).__name__})"


def _not_jsonrpc(what: str, exc: ValidationError) -> str:
    return f"the backend's {what} is not a JSON-RPC message ({exc.error_count()} validation errors)"


def _without_query(location: str) -> str:
    # A redirect's user info or query may carry a credential; a message never shows either.
    try:
        url = URL(location)
        url = url.with_user(None) if url.is_absolute() else url
        return str(url.with_query(None).with_fragment(None))
    except ValueError:
        return "a location that is not a URL"


class SessionWrites(ContextSendStream[SessionMessage]):
    """A session's write stream that can also make a request in its caller's own task (`call`): the way every
    backend call goes (`WatchedDispatcher`), while what the session sends of its own goes through the stream."""

    __slots__ = ("_link", "call")

    def __init__(self, inner: MemoryObjectSendStream[tuple[Context, SessionMessage]], link: _Link) -> None:
        super().__init__(inner)
        self._link = link
        self.call = link.call

    async def send(self, item: SessionMessage) -> None:
        # Counted before it is taken, so that no call can slip in between; one given up on before it was taken
        # counts as done with, so that no call waits for it.
        self._link.handed += 1
        try:
            await super().send(item)
        except BaseException:
            self._link.settled()
            raise


class Sessionless:
    """Requests to a backend that needs no session (the 2026-07-28 era), each on a POST of its own and read by the
    task that sent it: nothing needs to multiplex them, so no dispatcher, message models or task per request."""

    def __init__(self, wire: HttpWire, *, max_event_bytes: int) -> None:
        self._link = _Link(wire, None, max_event_bytes, lambda: None)

    async def request(
        self,
        request_id: int,
        method: str,
        params: dict[str, Any],
        headers: dict[str, str],
        sink: Sink,
        *,
        repeatable: bool,
    ) -> None:
        """POST one request; each message of its answer goes to `sink`, the answer (or the error that stands for
        it) last."""
        body = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
        message = JSONRPCRequest.model_construct(jsonrpc="2.0", id=request_id, method=method, params=params)
        sent = {**self._link._headers(), **{name.lower(): value for name, value in headers.items()}}
        token = _SINK.set(sink)
        try:
            # As the SDK writes a request: UTF-8, and null for what JSON cannot carry (NaN, Infinity).
            await self._link._post(message, sent, to_json(body, inf_nan_mode="null"), repeatable)
        except (*UNREACHABLE, _Gone) as exc:
            await sink(_error(request_id, CONNECTION_CLOSED, str(exc) or type(exc).__name__))
        finally:
            _SINK.reset(token)


@asynccontextmanager
async def streamable_http(
    wire: HttpWire, *, max_event_bytes: int, on_forgotten: Callable[[], None]
) -> AsyncIterator[tuple[ContextReceiveStream[SessionMessage | Exception], ContextSendStream[SessionMessage]]]:
    """The (read, write) streams of a session with the backend `wire` reaches; `on_forgotten` is called when the
    backend answers 404 to a request of a session it no longer knows."""
    inbox, read = create_context_streams[SessionMessage | Exception](0)
    link = _Link(wire, inbox, max_event_bytes, on_forgotten)
    sending, sent = anyio.create_memory_object_stream[tuple[Context, SessionMessage]](0)
    write, outbox = SessionWrites(sending, link), ContextReceiveStream[SessionMessage](sent)
    async with inbox, read, write, outbox, anyio.create_task_group() as tg:
        link._tg = tg
        tg.start_soon(link.pump, outbox, tg)
        try:
            yield read, write
        finally:
            link.close()
            await link.terminate()
            tg.cancel_scope.cancel()
