"""One live connection to one backend: connect, initialize, discover, serve requests, reconnect.

The session is opened once and reused by every call; a supervisor task owns it (anyio scopes must be
entered and left by the same task) and brings it back with backoff when it drops.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from contextvars import Context
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Protocol

import anyio
import httpx2
import mcp_types as types
from mcp.client.session import ClientSession, IncomingMessage
from mcp.shared.dispatcher import CallOptions, ProgressFnT
from mcp.shared.exceptions import MCPError
from mcp.shared.inbound import MCP_PROTOCOL_VERSION_HEADER

from master_mcp.backends.balancer import Instances
from master_mcp.backends.breaker import CircuitBreaker, CircuitOpen
from master_mcp.backends.failures import HttpFailure, describe, timed_out
from master_mcp.backends.http_wire import REPEATABLE
from master_mcp.backends.lane import Lane, LaneCalls
from master_mcp.backends.listing import Listing
from master_mcp.backends.transports import open_transport
from master_mcp.backends.watched import CALLER, RECEIVED_FOR, WatchedDispatcher
from master_mcp.config.models import ServerConfig
from master_mcp.version import VERSION

logger = logging.getLogger(__name__)

Json = dict[str, Any]
ListingSink = Callable[[str, "Listing | None"], None]
# A backend notification that belongs to a front request (a log line, a resource update), with that request's
# owner when it can be told, else None.
NotificationSink = Callable[[str, types.ServerNotification, object | None], Awaitable[None]]

Profile = frozenset[str]
"""What a backend session declares it can do for the backend: a subset of {"sampling", "elicitation", "roots"},
exactly what the front clients using that session declared (never more)."""
NO_PROFILE: Profile = frozenset()


class RequestRelay(Protocol):
    """Answers a backend's request to its client by asking the front client whose call it was made during."""

    async def sampling(
        self, owner: object | None, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult | types.CreateMessageResultWithTools | types.ErrorData: ...

    async def elicitation(
        self, owner: object | None, params: types.ElicitRequestParams
    ) -> types.ElicitResult | types.ErrorData: ...

    async def roots(self, owner: object | None) -> types.ListRootsResult | types.ErrorData: ...


@dataclass(frozen=True, slots=True)
class Unsolicited:
    """Whose a notification is when no call was in flight: the backend's own, for the sessions of `principal`
    (None: a shared session, whose unsolicited notices concern no user in particular)."""

    principal: tuple[str, str] | None


_MAX_PAGES: Final = 1000
_REFRESH_DEBOUNCE_S: Final = 0.05
_BACKOFF_START_S: Final = 0.5
_BACKOFF_MAX_S: Final = 30.0
# A shared backend not up within `connect_timeout_s` is reported down, and its connect goes on for up to this many
# times that before it is abandoned: a backend slow to start (twenty children importing the SDK at once on a slow
# machine took 17 s against the default 15 s) would otherwise be killed and started again, which costs its start-up
# again, and all of them at once, the same crowd again.
_PATIENCE: Final = 4
_CLIENT_INFO: Final = types.Implementation(name="master-mcp", version=VERSION)
_LIST_CHANGED = (
    types.ToolListChangedNotification,
    types.ResourceListChangedNotification,
    types.PromptListChangedNotification,
)


@dataclass(frozen=True, slots=True)
class _Live:
    """What requests go out through while a backend session is initialized (the `ClientSession` itself lives in the
    supervisor's exit stack, answering the backend's own requests and notifications)."""

    dispatcher: WatchedDispatcher
    version: str


class BackendState(StrEnum):
    PENDING = "pending"
    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"
    FAILED = "failed"  # a crash loop: still retried, slowly
    DISABLED = "disabled"


class BackendUnavailable(Exception):
    """The backend cannot take the request now; the message names the server and why."""


class _SessionExpired(Exception):
    pass


_IDEMPOTENT: Final = frozenset(
    {
        "tools/list",
        "resources/list",
        "resources/templates/list",
        "resources/read",
        "prompts/list",
        "prompts/get",
        "completion/complete",
        "ping",
        "logging/setLevel",
    }
)


async def _forward_event(source: anyio.Event, target: anyio.Event) -> None:
    await source.wait()
    target.set()


class BackendConnection:
    def __init__(
        self,
        server: ServerConfig,
        base_dir: Path,
        *,
        connect_timeout: float,
        on_listing: ListingSink,
        auth: httpx2.Auth | None = None,
        reconnect: bool = True,
        on_notification: NotificationSink | None = None,
        profile: Profile = NO_PROFILE,
        relay: RequestRelay | None = None,
        principal: tuple[str, str] | None = None,
        breaker: CircuitBreaker | None = None,
        instances: Instances | None = None,
        on_up: Callable[[BackendConnection], Coroutine[Any, Any, None]] | None = None,
        watched: Callable[[], list[str]] = list,
    ) -> None:
        self.server = server
        # Told each time a session of this connection is up, to give it what the front sessions asked of the last.
        self._on_up = on_up
        self.instances = instances
        # A stdio child's last line on stderr: often the reason it exited, shown with the error.
        self._stderr_tail: deque[str] = deque(maxlen=1)
        self.server_id = server.id
        # A per-principal session is not brought back: the next call of that principal opens a new one.
        self._reconnect = reconnect
        self._on_notification = on_notification
        self._lost = anyio.Event()
        self._up = anyio.Event()
        self._forgotten = False
        self._failures: list[float] = []
        self.restarts = 0
        self.profile = profile
        self.principal = principal
        self.breaker = breaker
        self._relay = relay
        self._inflight: dict[int, object] = {}
        self.active = 0  # requests sent and not yet answered
        self._scope: anyio.CancelScope | None = None
        self.last_used = time.monotonic()
        self._base_dir = base_dir
        self._connect_timeout = server.connect_timeout_s or connect_timeout
        self._on_listing = on_listing
        self._auth = auth
        self.state = BackendState.PENDING if server.enabled else BackendState.DISABLED
        self.last_error: str | None = None
        self.connects = 0
        self.capabilities: types.ServerCapabilities | None = None
        self.server_info: types.Implementation | None = None
        self.first_attempt = anyio.Event()
        self._session: _Live | None = None
        self._refresh = anyio.Event()
        self._stopping = False
        self._lane = (
            Lane(
                server,
                auth,
                connect_timeout=self._connect_timeout,
                client_info=_CLIENT_INFO,
                owner_at=self._owner_at,
                own=Unsolicited(principal),
                on_message=self._on_message,
                heard=self._heard,
                on_missed=self.refresh,
                watched=watched,
            )
            if Lane.offered(server)
            else None
        )

    # ---- requests ------------------------------------------------------------------------------------------------

    async def request(
        self,
        method: str,
        params: Json | None,
        *,
        timeout_s: float | None = None,
        progress: ProgressFnT | None = None,
        owner: object | None = None,
        idempotent: bool | None = None,
        lane: Json | None = None,
    ) -> Json:
        """Send one request on the shared session and return the backend's raw result.

        Raises `BackendUnavailable` when the backend is down, hangs up or times out, and `MCPError` with the
        backend's own error when it answers with one. When an HTTP backend has forgotten the session (it
        restarted), the session is opened again, and an idempotent request (`idempotent`, by default: every
        method but `tools/call`) is sent once more on the new one. `lane`: the request may go on the 2026-07-28
        lane where there is one (see `backends/lane.py`), with these `_meta` entries of the front client's.
        """
        breaker = self.breaker
        if breaker is None:
            return await self._retrying(method, params, timeout_s, progress, owner, idempotent, lane)
        try:
            trial = breaker.check()
        except CircuitOpen as exc:
            raise BackendUnavailable(f"server {self.server_id!r} is not being called for now: {exc}") from None
        try:
            result = await self._retrying(method, params, timeout_s, progress, owner, idempotent, lane)
        except BackendUnavailable:
            breaker.record(ok=False)
            raise
        except MCPError:
            breaker.record(ok=True)  # an error the backend answered with: it is there
            raise
        except BaseException:
            if trial:
                breaker.release()  # a trial that told nothing (its caller went away): another may try
            raise
        breaker.record(ok=True)
        return result

    async def _retrying(
        self,
        method: str,
        params: Json | None,
        timeout_s: float | None,
        progress: ProgressFnT | None,
        owner: object,
        idempotent: bool | None,
        lane: Json | None,
    ) -> Json:
        retry = idempotent if idempotent is not None else method in _IDEMPOTENT
        try:
            return await self._request_once(method, params, timeout_s, progress, owner, retry, lane)
        except _SessionExpired:
            if not retry:
                raise BackendUnavailable(
                    f"server {self.server_id!r} lost the session during {method} (it restarted?); reconnecting,"
                    " and the call was not repeated because it may not be safe to"
                ) from None
            with anyio.move_on_after(self._connect_timeout):
                await self._up.wait()
        try:
            return await self._request_once(method, params, timeout_s, progress, owner, retry)
        except _SessionExpired:
            raise BackendUnavailable(f"server {self.server_id!r} lost the session again during {method}") from None

    async def _request_once(
        self,
        method: str,
        params: Json | None,
        timeout_s: float | None,
        progress: ProgressFnT | None,
        owner: object,
        repeatable: bool,
        lane: Json | None = None,
    ) -> Json:
        session = self._session
        self.last_used = time.monotonic()
        if session is None:
            reason = f": {self.last_error}" if self.last_error else ""
            raise BackendUnavailable(f"server {self.server_id!r} is {self.state.value}{reason}")
        timeout = timeout_s or self.server.timeout_s
        # Sent through the dispatcher as it stands: the SDK session's `send_request` would build a model of the
        # request, dump it again, and validate the whole result against the protocol's models, which the front
        # validates anyway before anything reaches a client (the master keeps results as they came, unknown fields
        # included). That was 2.4% of the master's samples (py-spy, 2,000 calls, HTTP backend).
        dispatcher: WatchedDispatcher | LaneCalls = session.dispatcher
        live = self._lane.live if lane is not None and self._lane is not None else None
        if live is not None and self._lane is not None:
            dispatcher = live.dispatcher
            params, headers = self._lane.prepare(live, method, params or {}, lane or {})
        else:
            if lane is not None and params is not None and "requestState" in params:
                # A backend's own state belongs to the 2026-07-28 call it came from: never to this session.
                raise BackendUnavailable(
                    f"server {self.server_id!r}: the 2026-07-28 connection of this call's first round has closed;"
                    " call again"
                )
            if lane is not None and self._lane is not None:
                self._lane.want()
            headers = {MCP_PROTOCOL_VERSION_HEADER: session.version}
        if repeatable:
            headers[REPEATABLE] = "1"  # the HTTP transports may send it again (never sent on to the backend)
        options: CallOptions = {"timeout": timeout, "headers": headers}
        if progress is not None:
            options["on_progress"] = progress
        token = CALLER.set(owner)
        slot = id(options)
        if owner is not None:
            self._inflight[slot] = owner
        self.active += 1
        try:
            result = await dispatcher.send_raw_request(method, params, options)
            if owner is not None:
                await dispatcher.log_lines_relayed(owner)  # what it logged goes before its answer
            return result
        except MCPError as exc:
            if exc.code == types.REQUEST_TIMEOUT:
                raise BackendUnavailable(
                    f"server {self.server_id!r} did not answer {method} within {timeout:g}s"
                ) from None
            if getattr(self._auth, "rejected", False):
                # The credential is gone for good (refreshing it failed): this session cannot recover.
                self.close()
                raise BackendUnavailable(
                    f"server {self.server_id!r} rejected the credential (HTTP 401) and it could not be refreshed;"
                    " the next call will ask for authorization again"
                ) from None
            if self._forgotten and live is None:
                if self._session is session:
                    self._mark_down("the backend forgot the session (HTTP 404)")
                raise _SessionExpired from None
            if exc.code == types.CONNECTION_CLOSED:
                # Not a reason to drop the session: over HTTP it may be just this request's connection or response
                # stream cut short, and the other calls on the session are fine. A session that is really gone ends
                # its dispatcher, which the supervisor watches.
                raise BackendUnavailable(f"server {self.server_id!r} closed the connection during {method}") from None
            if isinstance(failure := exc.error.data, HttpFailure):
                # An HTTP server failure with no JSON-RPC error in it (a proxy's 502, an overloaded 503): the backend
                # is failing rather than answering, which its circuit breaker counts.
                raise BackendUnavailable(
                    f"server {self.server_id!r} failed {method} with HTTP {failure.status}"
                ) from None
            # The backend's error (or one its transport made up: a 4xx, a body that is not JSON) reaches the front
            # client, which must be able to tell which server said it; code and data pass unchanged.
            if owner is not None:
                await dispatcher.log_lines_relayed(owner)
            raise MCPError(exc.code, f"server {self.server_id!r}: {exc.message}", exc.error.data) from None
        finally:
            self.active -= 1
            CALLER.reset(token)
            self._inflight.pop(slot, None)

    # ---- supervision ---------------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the backend connected until closed; each drop is retried with exponential backoff + jitter."""
        with anyio.CancelScope() as self._scope:
            if not self._stopping:
                await self._supervise()
        self._mark_down(self.last_error or "closed")
        self.first_attempt.set()

    async def _supervise(self) -> None:
        if not self.server.enabled:
            self.first_attempt.set()
            return
        backoff = _BACKOFF_START_S
        while not self._stopping:
            if self.state is BackendState.PENDING:
                # Only the first attempt shows as "connecting": a retry keeps "down" (or "failed") and the error
                # that caused it until it succeeds, so /readyz and `check` say why rather than flicker.
                self.state = BackendState.CONNECTING
            connects = self.connects
            try:
                await self._serve_once()
                error = "connection closed"
            except Exception as exc:
                error = describe(exc)
                if timed_out(exc) and self.connects == connects:
                    error = f"not up within {self._connect_within():g}s"
            if self._stderr_tail and self.server.type == "stdio":
                error = f"{error} (its last line on stderr: {self._stderr_tail[-1]})"
            if self.connects > connects:
                backoff = _BACKOFF_START_S  # it was up, so this is a fresh failure
            self._mark_down(error)
            self.first_attempt.set()
            if not self._reconnect:
                logger.info("server %s: session closed: %s", self.server_id, error)
                return
            if self._crash_loop():
                backoff = _BACKOFF_MAX_S
                self.state = BackendState.FAILED
                rule = self.server.crash_loop
                self.last_error = f"crash loop ({rule.crashes} failures within {rule.window_s:g}s); last: {error}"
                logger.error("server %s failed: %s (retrying every %.0fs)", self.server_id, self.last_error, backoff)
            else:
                logger.warning("server %s is down: %s (retrying in %.1fs)", self.server_id, error, backoff)
            await anyio.sleep(backoff * (0.8 + 0.4 * random.random()))
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    async def _serve_once(self) -> None:
        # Set when this session is beyond use: the peer hung up, or (HTTP) the backend forgot the session.
        lost = self._lost = anyio.Event()
        async with AsyncExitStack() as stack:
            self._forgotten = False
            self._stderr_tail.clear()
            logger.debug("server %s: connecting over %s", self.server_id, self.server.type)
            transport = open_transport(
                self.server, self._base_dir, self._auth, self._forget, self.instances, self._stderr_tail
            )
            read, write = await stack.enter_async_context(transport)
            dispatcher = WatchedDispatcher(read, write, self._owner_at)
            session = await stack.enter_async_context(
                ClientSession(
                    dispatcher=dispatcher,
                    message_handler=self._on_message,
                    client_info=_CLIENT_INFO,
                    **self._callbacks(),
                )
            )
            slow = asyncio.get_running_loop().call_later(self._connect_timeout, self._still_connecting)
            try:
                with anyio.fail_after(self._connect_within()):
                    init = await session.initialize()
                    self.capabilities = init.capabilities
                    self.server_info = init.server_info
                    self._session = _Live(dispatcher, init.protocol_version)
                    listing = await self._discover()
            finally:
                slow.cancel()
            self.restarts += 1 if self.connects else 0
            self.connects += 1
            self.last_error = None
            self.state = BackendState.UP
            if self.breaker is not None:
                # A fresh session that initialized and listed is the proof of health the breaker waits for:
                # the calls one crash took down must not keep the restarted backend refused.
                self.breaker.record(ok=True)
            self._on_listing(self.server_id, listing)
            self.first_attempt.set()
            logger.info("server %s is up (%s)", self.server_id, init.server_info.name)
            self._up.set()
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._refresh_on_change)
                tg.start_soon(_forward_event, dispatcher.ended, lost)
                if self._on_up is not None:
                    tg.start_soon(self._on_up, self)
                if self._lane is not None:
                    tg.start_soon(self._lane.run)
                await lost.wait()
                tg.cancel_scope.cancel()
            # Closing the transport can take a moment (a child is given time to exit); calls must not wait on it.
            self._mark_down("connection closed")

    def _connect_within(self) -> float:
        # A connection opened for a caller (reconnect=False) has that caller waiting on it: no grace.
        return self._connect_timeout * (_PATIENCE if self._reconnect else 1)

    def _still_connecting(self) -> None:
        """Past `connect_timeout_s`: the backend is reported down (start-up goes on, /readyz says why) while its
        connect goes on. The session being set up is left alone: discovery may be using it."""
        if not self._reconnect or self._stopping or self.state is not BackendState.CONNECTING:
            return  # a retry keeps saying why the attempt before it failed
        self.last_error = f"not up after {self._connect_timeout:g}s; still waiting (up to {self._connect_within():g}s)"
        self.state = BackendState.DOWN
        self._on_listing(self.server_id, None)
        logger.warning("server %s is down: %s", self.server_id, self.last_error)
        self.first_attempt.set()

    async def _discover(self) -> Listing:
        caps = self.capabilities or types.ServerCapabilities()
        listing = Listing()
        if caps.tools is not None:
            listing.tools = await self._list_all("tools/list", "tools")
        if caps.resources is not None:
            listing.resources = await self._list_all("resources/list", "resources")
            listing.templates = await self._list_all("resources/templates/list", "resourceTemplates")
        if caps.prompts is not None:
            listing.prompts = await self._list_all("prompts/list", "prompts")
        if self._lane is not None:
            self._lane.know_tools(listing.tools)
        return listing

    async def _list_all(self, method: str, key: str) -> list[Json]:
        items: list[Json] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            # Discovery is the supervisor's own business: no breaker, and a list is safe to send again.
            page = await self._request_once(method, {"cursor": cursor} if cursor else None, None, None, None, True)
            items.extend(item for item in page.get(key, []) if isinstance(item, dict))
            cursor = page.get("nextCursor")
            if not isinstance(cursor, str) or cursor in seen:
                break
            seen.add(cursor)
        return items

    def _forget(self) -> None:
        self._forgotten = True

    def _callbacks(self) -> dict[str, Any]:
        """The client callbacks of this session: one per capability of its profile, so it declares just those."""
        relay = self._relay
        if relay is None:
            return {}
        callbacks: dict[str, Any] = {}
        if "sampling" in self.profile:

            async def sampling(ctx: Any, params: types.CreateMessageRequestParams) -> Any:
                return await relay.sampling(self._owner(CALLER.get()), params)

            callbacks["sampling_callback"] = sampling
            callbacks["sampling_capabilities"] = types.SamplingCapability()
        if "elicitation" in self.profile:

            async def elicitation(ctx: Any, params: types.ElicitRequestParams) -> Any:
                return await relay.elicitation(self._owner(CALLER.get()), params)

            callbacks["elicitation_callback"] = elicitation
        if "roots" in self.profile:

            async def roots(ctx: Any) -> Any:
                return await relay.roots(self._owner(CALLER.get()))

            callbacks["list_roots_callback"] = roots
        return callbacks

    def _owner(self, caller: object | None) -> object | None:
        """Whose call a message of the backend belongs to: `caller` (the call on whose stream it came), else the
        only caller in flight; with no call in flight it is the backend's own (`Unsolicited`); with several,
        nobody's."""
        if caller is not None:
            return caller
        owners = {id(o): o for o in self._inflight.values()}
        if not owners:
            return Unsolicited(self.principal)
        return next(iter(owners.values())) if len(owners) == 1 else None

    def _owner_at(self, sender: Context | None) -> object | None:
        return self._owner(sender.get(CALLER) if sender is not None else None)

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            logger.warning("server %s: transport error: %s", self.server_id, describe(message))
        else:
            await self._heard(message, RECEIVED_FOR.get())

    async def _heard(self, message: types.ServerNotification, owner: object | None) -> None:
        """A notification of the backend's, during `owner`'s call (see `_owner`)."""
        if isinstance(message, _LIST_CHANGED):
            self._refresh.set()
        # List changes are reported too: the master shares them with its other replicas.
        if self._on_notification is not None:
            await self._on_notification(self.server_id, message, owner)

    @property
    def lane(self) -> Lane | None:
        """The 2026-07-28 lane this connection may use (see `backends/lane.py`)."""
        return self._lane

    @property
    def has_lane(self) -> bool:
        """Whether 2026-07-28 requests go on a lane now."""
        return self._lane is not None and self._lane.live is not None

    def rewatch(self) -> anyio.Event | None:
        """The resources subscribed to on this backend changed: the lane listens for updates of the new set (see
        `Lane.rewatch`)."""
        return self._lane.rewatch() if self._lane is not None else None

    async def _refresh_on_change(self) -> None:
        while True:
            await self._refresh.wait()
            # A burst of list_changed notifications becomes one re-list.
            await anyio.sleep(_REFRESH_DEBOUNCE_S)
            self._refresh = anyio.Event()
            try:
                listing = await self._discover()
            except (MCPError, BackendUnavailable) as exc:
                logger.warning("server %s: re-listing after list_changed failed: %s", self.server_id, describe(exc))
                continue
            self._on_listing(self.server_id, listing)

    def refresh(self) -> None:
        """Re-list as if the backend had said its lists changed (another replica heard it say so)."""
        self._refresh.set()

    def _crash_loop(self) -> bool:
        """Record one more failure; True when there were too many of them too recently."""
        now = time.monotonic()
        rule = self.server.crash_loop
        self._failures = [t for t in self._failures if now - t < rule.window_s] + [now]
        return len(self._failures) >= rule.crashes

    def _mark_down(self, error: str) -> None:
        self._lost.set()
        if self._up.is_set():
            self._up = anyio.Event()
        if self.state is BackendState.DISABLED:
            return
        self._session = None
        self.capabilities = None
        self.last_error = error  # each failed retry says why it failed
        if self.state in (BackendState.DOWN, BackendState.FAILED):
            return  # it was not serving: the catalog has already been told
        self.state = BackendState.DOWN
        self._on_listing(self.server_id, None)

    async def retire(self, grace_s: float) -> None:
        """End a connection that another has replaced: it says nothing more about the catalog (its successor
        does), and the calls it is serving get up to `grace_s` to finish before it closes."""
        self._on_listing = lambda server_id, listing: None
        with anyio.move_on_after(grace_s):
            while self.active:  # noqa: ASYNC110 - a count kept by the request path
                await anyio.sleep(0.05)
        self.close()

    def close(self) -> None:
        """End this connection now (its transport closes, a child process exits)."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    def status(self) -> Json:
        return {
            "id": self.server_id,
            "transport": self.server.type,
            "state": self.state.value,
            "connects": self.connects,
            "restarts": self.restarts,
            "breaker": self.breaker.state.value if self.breaker is not None else "closed",
            "last_error": self.last_error,
            **({"instances": self.instances.status()} if self.instances is not None else {}),
        }
