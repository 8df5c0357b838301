"""HTTP/1.1 for the backend hop: connections kept alive on asyncio protocols, answers parsed by httptools (C).

Why not a general client: a backend call is one small POST and one answer, many times a second, and the client
library's own work was the largest part of the hop. Measured with a scratch script (2,000 POSTs of a `tools/call`
to the benchmark's SDK backend, one connection, CPU of the client process): aiohttp 1.02-1.04 ms per request and
answer, a protocol like this one 0.43-0.49 ms (docs/benchmarks.md, change 23).

What it does: http and https (one TLS context), an HTTP proxy (absolute-form requests; CONNECT for https), with
its user info as Proxy-Authorization; connections kept alive and let go after `keep_alive_s` idle; at most
`limit` requests in flight per pool (more wait); bodies framed by Content-Length, chunked, or by the connection's
end, read whole or chunk by chunk with back-pressure. What it leaves to the caller: redirects, credentials,
cookies. No compression is asked for (no Accept-Encoding), and a compressed answer is refused; no HTTP/2.
Failures are the httpx2 transport errors the rest of the master knows, and their messages name at most a host and
port (a URL's query may hold a key). It needs asyncio (the master runs on it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ssl
from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Final

import httptools
import httpx2
from multidict import CIMultiDict
from yarl import URL

CONNECT_S: Final = 30.0
# The longest wait for the next bytes of an answer (its head, or more of its body).
READ_S: Final = 300.0
# Body bytes held for a reader that has not taken them yet; past this the connection stops reading.
_HIGH_WATER: Final = 256 * 1024
_LOW_WATER: Final = _HIGH_WATER // 4
_UNSAFE: Final = frozenset("\r\n\0")
_BODY_METHODS: Final = frozenset({"POST", "PUT", "PATCH"})
# A TLS connection's close waits for the peer's close_notify; this long at most.
_CLOSE_S: Final = 1.0
# An answer's status line and headers, at most (httptools sets no bound of its own).
MAX_HEAD_BYTES: Final = 64 * 1024


def _timed_out(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx2.ReadTimeout("read timed out"))


async def _wait(waiter: asyncio.Future[None]) -> None:
    timer = asyncio.get_running_loop().call_later(READ_S, _timed_out, waiter)
    try:
        await waiter
    finally:
        timer.cancel()


def basic_credentials(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _encode_head(lines: list[str]) -> bytes:
    text = "\r\n".join(lines) + "\r\n\r\n"
    try:
        return text.encode("latin-1")  # what a header's bytes were when they came from httpx2 (decoded as latin-1)
    except UnicodeEncodeError:
        return text.encode("utf-8")


def _head(method: str, url: URL, headers: Iterable[tuple[str, str]], body: bytes | None, proxy: URL | None) -> bytes:
    # Through a proxy, a plain-http request names its whole URL; an https one goes through a tunnel as it is.
    target = str(url.with_fragment(None)) if proxy is not None and url.scheme == "http" else url.raw_path_qs
    lines = [f"{method} {target} HTTP/1.1", f"host: {url.host_port_subcomponent}"]
    for name, value in headers:
        if not _UNSAFE.isdisjoint(name) or not _UNSAFE.isdisjoint(value):
            # A header that would end the head early and write one of its own (the value is never shown).
            raise httpx2.LocalProtocolError(f"the header {name.strip()[:40]!r} holds a line break or NUL")
        lines.append(f"{name}: {value}")
    if proxy is not None and url.scheme == "http" and proxy.user is not None:
        lines.append(f"proxy-authorization: {basic_credentials(proxy.user, proxy.password or '')}")
    if body is not None:
        lines.append(f"content-length: {len(body)}")
    elif method in _BODY_METHODS:
        lines.append("content-length: 0")
    return _encode_head(lines)


class Response:
    """One answer: its status and headers, and its body as it comes."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: CIMultiDict[str] = CIMultiDict()
        self._raw: list[tuple[bytes, bytes]] = []
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._framed = False  # by Content-Length or chunked: an end of connection before it is a broken answer
        self.complete = False
        self._failure: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._done = False

    # The connection's side.
    def _header(self, name: bytes, value: bytes) -> None:
        self._raw.append((name, value))

    def _headers_complete(self, status: int) -> None:
        self.status = status
        headers = self.headers = CIMultiDict((n.decode("latin-1"), v.decode("latin-1")) for n, v in self._raw)
        self._framed = "content-length" in headers or "transfer-encoding" in headers
        self._raw = []
        self._wake()

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER:
            self._connection.pause()
        self._wake()

    def _completed(self) -> None:
        self.complete = True
        self._wake()

    def _fail(self, failure: Exception) -> None:
        if not self.complete and self._failure is None:
            self._failure = failure
            self._wake()

    def _ended(self, reset: bool) -> None:
        """The connection ended: that ends an answer framed by nothing else (unless the connection was reset),
        and breaks any other."""
        if self.complete:
            return
        if self.status and not self._framed and not reset:
            self._completed()
        else:
            self._fail(httpx2.RemoteProtocolError("the backend closed the connection before its answer ended"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _next(self) -> None:
        if self._failure is not None:
            raise self._failure
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await _wait(self._waiter)
        finally:
            self._waiter = None
        if self._failure is not None:
            raise self._failure

    # The reader's side.
    async def _until_head(self) -> None:
        while not self.status:
            await self._next()
        if "content-encoding" in self.headers and self.headers["content-encoding"].lower() != "identity":
            raise httpx2.RemoteProtocolError("the backend sent a compressed answer, which was not asked for")

    async def read(self) -> bytes:
        """The whole body (or what is left of it)."""
        if self.complete:  # the common case, a small answer that came with its head: no iterator needed
            body = b"".join(self._chunks)
            self._chunks.clear()
            self._buffered = 0
            self._connection.resume()
            return body
        parts = []
        async for chunk in self.chunks():
            parts.append(chunk)
        return b"".join(parts)

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it comes, until it ends."""
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered < _LOW_WATER:
                    self._connection.resume()
                yield chunk
            if self.complete:
                return
            await self._next()

    def release(self) -> None:
        """Done with this answer: its connection serves another request if it can, else it is closed."""
        if not self._done:
            self._done = True
            self._connection.finished(reusable=self.complete and not self._chunks)


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to a backend or a proxy, carrying one request at a time."""

    def __init__(self, pool: Pool, key: tuple[str, str, int, URL | None]) -> None:
        self._pool = pool
        self.key = key
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._response: Response | None = None
        self._keep_alive = False
        self._paused = False
        self._head_bytes = self._header_bytes = 0
        self.lost = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        response = self._response
        if response is None:
            self.close()  # bytes nobody asked for: the next answer on this connection could not be trusted
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response._fail(httpx2.RemoteProtocolError("the backend switched protocols"))
            self.close()
        except httptools.HttpParserError as exc:
            response._fail(httpx2.RemoteProtocolError(f"the backend's answer is not HTTP/1.1 ({type(exc).__name__})"))
            self.close()
        else:
            if not response.status:
                # A head still not complete: a status line or header arriving without end is bounded here, one
                # that is complete in on_header.
                self._head_bytes += len(data)
                if self._head_bytes > MAX_HEAD_BYTES:
                    response._fail(self._head_too_large())
                    self.close()

    def eof_received(self) -> bool:
        return False  # the connection closes, and connection_lost decides what that means for the answer

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._pool.lost(self)
        if self._response is not None:
            self._response._ended(reset=exc is not None)

    # The parser's callbacks.
    def on_message_begin(self) -> None:
        assert self._response is not None
        if self._response.complete:
            # A second answer to one request (or one sent ahead of the next request): it is not read, and the
            # connection, which can no longer be trusted to pair answers with requests, is closed.
            raise httpx2.RemoteProtocolError("the backend sent an answer nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self._response is not None
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > MAX_HEAD_BYTES:
            self._response._fail(self._head_too_large())
            raise self._head_too_large()  # stops the parser; data_received closes the connection
        self._response._header(name, value)

    @staticmethod
    def _head_too_large() -> httpx2.RemoteProtocolError:
        return httpx2.RemoteProtocolError(f"the backend's answer head is over {MAX_HEAD_BYTES} bytes")

    def on_headers_complete(self) -> None:
        assert self._response is not None
        status = self._parser.get_status_code()
        if status >= 200:
            self._response._headers_complete(status)
        else:
            self._response._raw = []  # an interim answer (100 Continue, 103): the real one follows

    def on_body(self, body: bytes) -> None:
        assert self._response is not None
        self._response._body(body)

    def on_message_complete(self) -> None:
        response = self._response
        assert response is not None
        if response.status:
            self._keep_alive = self._parser.should_keep_alive()
            response._completed()

    # The pool's side.
    def pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()

    async def exchange(self, head: bytes, body: bytes | None) -> Response:
        """Send a request and wait for its answer's status and headers."""
        assert self._transport is not None
        response = self._response = Response(self)
        self._keep_alive = False
        self._head_bytes = self._header_bytes = 0
        try:
            self._transport.write(head + body if body else head)
            await response._until_head()
        except BaseException:
            self._response = None
            self.close()  # cancelled or failed half way: what comes next on this connection is unknown
            raise
        return response

    async def tunnel(self, url: URL, proxy: URL, tls: ssl.SSLContext) -> None:
        """Through an HTTP proxy, make this connection a TLS one to `url`'s host (CONNECT)."""
        host = url.raw_host or ""
        authority = f"[{host}]:{url.port}" if ":" in host else f"{host}:{url.port}"
        lines = [f"CONNECT {authority} HTTP/1.1", f"host: {authority}"]
        if proxy.user is not None:
            lines.append(f"proxy-authorization: {basic_credentials(proxy.user, proxy.password or '')}")
        answer = await self.exchange(_encode_head(lines), None)
        self._response = None
        if answer.status != 200:
            raise httpx2.ConnectError(f"the proxy refused a tunnel to {authority}: HTTP {answer.status}")
        assert self._transport is not None
        self._parser = httptools.HttpResponseParser(self)
        loop = asyncio.get_running_loop()
        started = await loop.start_tls(self._transport, self, tls, server_hostname=url.raw_host)
        assert isinstance(started, asyncio.Transport)
        self._transport = started

    def finished(self, *, reusable: bool) -> None:
        self._response = None
        self._pool.returned(self, reusable and self._keep_alive and not self.lost)

    def closing(self) -> bool:
        return self.lost or self._transport is None or self._transport.is_closing()

    def close(self) -> None:
        self._keep_alive = False
        if self._transport is not None:
            self._transport.close()


class Pool:
    """Connections to the backends and proxies one `HttpWire` reaches; `keep_alive_s=None`: each used once."""

    def __init__(self, tls: ssl.SSLContext, *, keep_alive_s: float | None, limit: int = 100) -> None:
        self._tls = tls
        self._keep_alive_s = keep_alive_s
        self._slots = asyncio.Semaphore(limit)
        self._idle: dict[tuple[str, str, int, URL | None], list[_Connection]] = {}
        self._open: set[_Connection] = set()
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self._all_lost: asyncio.Future[None] | None = None

    async def request(
        self, method: str, url: URL, headers: Iterable[tuple[str, str]], body: bytes | None, *, proxy: URL | None
    ) -> Response:
        """Send a request; the caller reads the answer and `release`s it."""
        head = _head(method, url, headers, body, proxy)
        key = (url.scheme, url.raw_host or "", url.port or 0, proxy)
        await self._slots.acquire()  # given back when the answer is released
        try:
            connection = self._kept(key) or await self._connect(key, url, proxy)
            return await connection.exchange(head, body)
        except BaseException:
            self._slots.release()
            raise

    def _kept(self, key: tuple[str, str, int, URL | None]) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()  # the most recently used: the least likely to be closing
            if not connection.closing() and now - connection.idle_since < (self._keep_alive_s or 0.0):
                return connection
            connection.close()
        return None

    async def _connect(self, key: tuple[str, str, int, URL | None], url: URL, proxy: URL | None) -> _Connection:
        if self._closed:
            raise httpx2.ConnectError("the connection pool is closed")
        hop = proxy or url
        host, port = hop.raw_host or "", hop.port or 0
        loop = asyncio.get_running_loop()
        secure = hop.scheme == "https"
        connection: _Connection | None = None
        try:
            async with asyncio.timeout(CONNECT_S):
                _, connection = await loop.create_connection(
                    lambda: _Connection(self, key),
                    host,
                    port,
                    ssl=self._tls if secure else None,
                    server_hostname=host if secure else None,
                )
                self._open.add(connection)
                if proxy is not None and url.scheme == "https":
                    try:
                        await connection.tunnel(url, proxy, self._tls)
                    except httpx2.ConnectError:
                        raise
                    except httpx2.TransportError as exc:
                        # Whatever broke, the backend was not reached: failing over to another instance is right.
                        tunnel = f"{host}:{port} broke off the tunnel to {url.host_port_subcomponent}"
                        raise httpx2.ConnectError(f"the proxy {tunnel} ({type(exc).__name__})") from None
        except BaseException as exc:
            if connection is not None:
                connection.close()
            if isinstance(exc, TimeoutError):
                raise httpx2.ConnectTimeout("connect timed out") from None
            if isinstance(exc, OSError):  # refused, unreachable, a name not found, a certificate not trusted
                why = exc.strerror or type(exc).__name__
                raise httpx2.ConnectError(f"cannot connect to {host}:{port}: {why}") from None
            raise
        return connection

    def returned(self, connection: _Connection, reusable: bool) -> None:
        self._slots.release()
        if not reusable or self._keep_alive_s is None or self._closed:
            connection.close()
            return
        loop = asyncio.get_running_loop()
        connection.idle_since = loop.time()
        self._idle.setdefault(connection.key, []).append(connection)
        if self._sweep is None:
            self._sweep = loop.call_later(self._keep_alive_s, self._let_go)

    def _let_go(self) -> None:
        """Close the connections idle for `keep_alive_s`, before the backend closes them under a request."""
        self._sweep = None
        assert self._keep_alive_s is not None
        loop = asyncio.get_running_loop()
        oldest = loop.time() - self._keep_alive_s
        for idle in self._idle.values():
            for connection in [c for c in idle if c.idle_since <= oldest or c.lost]:
                idle.remove(connection)
                connection.close()
        remaining = [c.idle_since for idle in self._idle.values() for c in idle]
        if remaining:
            self._sweep = loop.call_at(min(remaining) + self._keep_alive_s, self._let_go)

    def lost(self, connection: _Connection) -> None:
        self._open.discard(connection)
        if not self._open and self._all_lost is not None and not self._all_lost.done():
            self._all_lost.set_result(None)

    async def close(self) -> None:
        """Close every connection, and wait (briefly) until they are closed."""
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
        self._idle.clear()
        if not self._open:
            return
        self._all_lost = asyncio.get_running_loop().create_future()
        for connection in list(self._open):
            connection.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_S):
                await self._all_lost
