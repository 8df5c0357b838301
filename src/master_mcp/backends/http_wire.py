"""The HTTP requests of one streamable-HTTP backend connection: credentials, instances, redirects, reuse.

Sent over the master's own HTTP/1.1 connections (`http1.py`) rather than httpx2 or aiohttp: on this project's
machine httpx2's client spent about 1.6 ms of CPU on each request and response, aiohttp about 1.0 ms with the
event loop's share, `http1` about 0.45 ms, and the backend hop is on every call (docs/benchmarks.md, changes 11
and 23). What the rest of the master knows stays the same: credentials are `httpx2.Auth` flows (the strategies'
and custom ones, which may sign the body), and a failure is raised as an `httpx2` transport error.

Each wire keeps its connections to the backend alive between requests; a response is read to its end (briefly)
before it is released, since a connection with unread body cannot be used again. A proxy named by the
environment (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`) is used as httpx2 used it; `~/.netrc` is not
read, so no stored credentials go to backends.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Mapping
from functools import cache
from importlib.metadata import version
from typing import Final

import anyio
import httpx2
from httpx2._utils import URLPattern, get_environment_proxies
from multidict import CIMultiDict
from yarl import URL

from master_mcp.backends.balancer import Instances
from master_mcp.backends.http1 import Pool, Response, basic_credentials

# What a gateway answers for a backend it cannot reach.
UNAVAILABLE: Final = frozenset({502, 503, 504})
_REFUSED: Final = 503  # of those, the one that says the request was not taken
_MAX_PINS: Final = 1024
_MAX_REDIRECTS: Final = 5
# An idle connection is let go before the backend lets it go: uvicorn, Node and Apache close theirs after 5 s, and a
# request sent on one as it closes fails (measured: an SDK backend idle 5 s, 24 calls lost, the session restarted
# and its breaker opened). The cost is a new connection after 4 s without a call. A backend that closes sooner
# (gunicorn's own default is 2 s) still leaves a window of a few milliseconds at its timeout.
IDLE_CONNECTION_S: Final = 4.0
# The failures that mean no connection to the backend could be made at all: the backend is gone, not one request.
UNREACHABLE: Final = (httpx2.ConnectError, httpx2.ConnectTimeout)
# A header of a request's metadata, never sent on: the request is safe to repeat (a read, a list, an idempotent
# tool's call), so it is sent once more, on a new connection, if its connection breaks before any answer comes.
REPEATABLE: Final = "x-master-mcp-repeatable"
_DRAIN_S: Final = 0.05
_DRAIN_MAX_BYTES: Final = 64 * 1024
# The connection sets these itself, from the URL and body it is given.
_COMPUTED: Final = frozenset({"host", "content-length", "transfer-encoding"})
_USER_AGENT: Final = f"master-mcp/{version('master-mcp')}"


class AnswerBrokeOff(httpx2.RemoteProtocolError):
    """An answer that had begun broke off: the backend has the request, which is therefore not sent again."""


@cache
def shared_tls() -> ssl.SSLContext:
    # Loading the trusted CA certificates costs about a megabyte and a few milliseconds per context: one context
    # serves every backend connection (per-user sessions each have one of their own).
    return httpx2.create_ssl_context()


def proxy_for(url: URL) -> URL | None:
    """The proxy the environment names for `url`, or None, read as httpx2 reads it (`*_PROXY`, `NO_PROXY` with
    hosts, domains, ports and `*`, a proxy given without a scheme)."""
    target = httpx2.URL(str(url))
    for pattern, proxy in sorted(get_environment_proxies().items(), key=lambda item: URLPattern(item[0])):
        if URLPattern(pattern).matches(target):
            if proxy is None:
                return None
            found = URL(proxy)
            if found.scheme not in ("http", "https"):
                raise ValueError(f"the environment names a {found.scheme} proxy; backend connections use http(s) ones")
            return found
    return None


class Reply:
    """One response, its body not yet read."""

    def __init__(self, response: Response, url: URL) -> None:
        self._response = response
        self.url = url
        self.status = response.status
        self.headers: CIMultiDict[str] = response.headers
        self._body: bytes | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").lower()

    async def read(self) -> bytes:
        if self._body is None:
            self._body = await self._response.read()
        return self._body

    async def chunks(self) -> AsyncIterator[bytes]:
        if self._body is not None:
            yield self._body
            return
        async for chunk in self._response.chunks():
            yield chunk

    async def finish(self) -> None:
        """Release the connection: a body that ends promptly is read to its end so the connection is reused."""
        response = self._response
        try:
            if not response.complete:
                drained = 0
                with anyio.move_on_after(_DRAIN_S):
                    try:
                        async for chunk in response.chunks():
                            drained += len(chunk)
                            if drained > _DRAIN_MAX_BYTES:
                                break
                    except httpx2.TransportError:
                        pass
        finally:
            response.release()  # even when cancelled: a reply never released would hold its slot for good

    def release(self) -> None:
        """Release the connection at once, closing it unless the answer was read to its end."""
        self._response.release()

    def as_httpx(self, request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(self.status, headers=list(self.headers.items()), request=request, content=self._body)


class HttpWire:
    """Requests to one endpoint (`url`, or the instances of `instances`), with `headers` and `auth` on each."""

    def __init__(
        self, url: str, *, headers: Mapping[str, str], auth: httpx2.Auth | None, instances: Instances | None
    ) -> None:
        self._url = httpx2.URL(url)
        given = [URL(str(u), encoded=True) for u in [self._url, *(instances.urls if instances else [])]]
        # A URL's user info goes as Basic credentials in a header of its own, by origin, unless a credential flow's
        # or a configured Authorization is there: that one wins.
        self._basic = {u.origin(): basic_credentials(u.user, u.password or "") for u in given if u.user is not None}
        self._target, *self._targets = [u.with_user(None) for u in given]
        self._headers = {"user-agent": _USER_AGENT, **{name.lower(): value for name, value in headers.items()}}
        self._auth = auth
        self._instances = instances
        self._proxies = {target: proxy_for(target) for target in [self._target, *self._targets]}
        self._pins: dict[str, int] = {}  # session id -> the instance that issued it
        self._http: Pool | None = None
        self._fresh: Pool | None = None  # connections used once: made when first needed

    async def __aenter__(self) -> HttpWire:
        self._http = Pool(shared_tls(), keep_alive_s=IDLE_CONNECTION_S)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        with anyio.CancelScope(shield=True):  # a transport torn down by cancellation still closes both
            for http in (self._http, self._fresh):
                if http is not None:
                    await http.close()

    def add_address(self, url: URL) -> None:
        """Look up once the proxy for `url`, an address besides the endpoint's that requests will go to
        (`request(to=url)`). Whether anything may be sent there is the caller's to decide."""
        if url not in self._proxies:
            self._proxies[url] = proxy_for(url)

    async def request(
        self,
        method: str,
        headers: dict[str, str],
        body: bytes | None = None,
        *,
        to: URL | None = None,
        repeatable: bool = False,
        fresh: bool = False,
        credentials: bool = True,
    ) -> Reply:
        """Send one request to the endpoint (or to `to`, an `add_address`), answering its credentials' challenges;
        the caller reads the reply and `finish`es it. `fresh`: on a connection of its own, not one kept alive;
        `credentials=False`: without the credential flow (the configured headers still go).

        A request safe to repeat (`repeatable`) whose connection breaks before any answer goes once more, on a
        connection of its own: most often it went out on one kept alive that the backend was closing, unread, and
        any other kept alive as long may be closing too."""
        assert self._http is not None, "HttpWire is used inside `async with`"
        auth = self._auth if credentials else None
        if fresh:
            return await self._request(self._fresh_http(), auth, method, headers, body, to, repeatable)
        try:
            return await self._request(self._http, auth, method, headers, body, to, repeatable)
        except (*UNREACHABLE, AnswerBrokeOff, httpx2.LocalProtocolError):  # the last: refused before sending
            raise
        except httpx2.TransportError:
            if not repeatable:
                raise
        return await self._request(self._fresh_http(), auth, method, headers, body, to, repeatable)

    async def _request(
        self,
        http: Pool,
        auth: httpx2.Auth | None,
        method: str,
        headers: dict[str, str],
        body: bytes | None,
        to: URL | None,
        repeatable: bool,
    ) -> Reply:
        merged = {**self._headers, **headers}  # the callers' names are lower case, as the configured ones are made
        target = self._target if to is None else to
        if auth is None:
            return await self._following(http, method, target, list(merged.items()), body, repeatable)
        address = self._url if to is None else httpx2.URL(str(to))
        request = httpx2.Request(method, address, headers=merged, content=body)
        flow = auth.async_auth_flow(request)
        try:
            request = await flow.__anext__()
            while True:
                url = target if request.url == address else URL(str(request.url), encoded=True)
                pairs = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
                reply = await self._following(http, request.method, url, pairs, request.content, repeatable)
                try:
                    if auth.requires_response_body and not reply.content_type.startswith("text/event-stream"):
                        # An event stream may never end (a session's standalone stream), and no credential flow
                        # reads one: it is left for the caller.
                        try:
                            await reply.read()
                        except httpx2.TransportError as exc:
                            raise AnswerBrokeOff(str(exc)) from None
                    request = await flow.asend(reply.as_httpx(request))
                except StopAsyncIteration:
                    return reply
                except BaseException:
                    reply.release()  # the flow failed, or was cancelled: the reply goes no further
                    raise
                await reply.finish()
        finally:
            await flow.aclose()

    def _fresh_http(self) -> Pool:
        if self._fresh is None:
            self._fresh = Pool(shared_tls(), keep_alive_s=None)
        return self._fresh

    async def _following(
        self, http: Pool, method: str, url: URL, headers: list[tuple[str, str]], body: bytes | None, repeatable: bool
    ) -> Reply:
        # Only a redirect within the endpoint's origin that keeps the method (307/308, or any for a GET) is
        # followed: everything on the request (credentials, session) was meant for that origin.
        for _ in range(_MAX_REDIRECTS):
            reply = await self._balanced(http, method, url, headers, body, repeatable)
            location = reply.headers.get("location")
            if location is None or not (reply.status in (307, 308) or (method == "GET" and 300 < reply.status < 400)):
                return reply
            try:
                target = reply.url.join(URL(location))
            except ValueError:
                return reply  # not a URL: the caller answers the redirect as one not followed
            if target.origin() != reply.url.origin():
                return reply
            await reply.finish()
            url = target
        return reply

    async def _balanced(
        self, http: Pool, method: str, url: URL, headers: list[tuple[str, str]], body: bytes | None, repeatable: bool
    ) -> Reply:
        """Send to the instance the policy picks; one that cannot be reached, or that a gateway says is not there,
        is marked down and the next is tried. A gateway's 502 or 504 may come after the instance got the request
        (and carried it out), so only a request safe to repeat goes to another then; a 503 is a refusal."""
        instances = self._instances
        if instances is None or url is not self._target:
            return await self._send(http, method, url, headers, body)
        session = next((v for k, v in headers if k.lower() == "mcp-session-id"), None)
        pinned = self._pins.get(session) if session else None
        candidates = [pinned] if pinned is not None else instances.order()
        failure: Exception | None = None
        for attempt, index in enumerate(candidates):
            try:
                reply = await self._send(http, method, self._targets[index], headers, body)
            except UNREACHABLE as exc:
                # Nothing reached this instance, so the next one may have the request.
                instances.failed(index, type(exc).__name__)
                failure = exc
                continue
            if reply.status in UNAVAILABLE:
                instances.failed(index, f"HTTP {reply.status}")
                if attempt + 1 < len(candidates) and (repeatable or reply.status == _REFUSED):
                    await reply.finish()
                    continue
            elif reply.status >= 500:
                instances.failed(index, f"HTTP {reply.status}")  # it got the request: not sent to another
            else:
                instances.succeeded(index)
            if (issued := reply.headers.get("mcp-session-id")) is not None:
                self._pins[issued] = index
                while len(self._pins) > _MAX_PINS:
                    self._pins.pop(next(iter(self._pins)))
            return reply
        assert failure is not None
        raise failure

    async def _send(
        self, http: Pool, method: str, url: URL, headers: list[tuple[str, str]], body: bytes | None
    ) -> Reply:
        sent = [(k, v) for k, v in headers if k.lower() not in _COMPUTED]
        if (
            self._basic
            and (basic := self._basic.get(url.origin()))
            and all(k.lower() != "authorization" for k, _ in sent)
        ):
            sent.append(("authorization", basic))
        proxy = self._proxies[url] if url in self._proxies else proxy_for(url)
        return Reply(await http.request(method, url, sent, body, proxy=proxy), url)
