"""Connection reuse to streamable-HTTP backends, and one TLS context for all of them.

The SDK's client closes a POST's event stream as soon as it has read the JSON-RPC response, before the server's
end of the body arrives. A connection closed with unread body cannot go back to the pool, so every backend call
used to open a new TCP connection (and the backend had to accept one). Reading what is left, a few bytes that are
already on their way, keeps the connection alive; a body that does not end promptly is closed as before.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from functools import cache
from typing import Final

import anyio
import httpx2

_DRAIN_S: Final = 0.05
_DRAIN_MAX_BYTES: Final = 64 * 1024


class _DrainOnClose(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream) -> None:
        self._stream = stream
        self._chunks: AsyncIterator[bytes] | None = None

    def __aiter__(self) -> AsyncIterator[bytes]:
        # The reader gets the underlying iterator itself (no generator of our own to be left suspended and then
        # finalized through the event loop), and `aclose` can go on reading it where the reader stopped.
        self._chunks = aiter(self._stream)
        return self._chunks

    async def aclose(self) -> None:
        try:
            chunks = self._chunks if self._chunks is not None else aiter(self._stream)
            drained = 0
            with anyio.move_on_after(_DRAIN_S):
                async for chunk in chunks:
                    drained += len(chunk)
                    if drained > _DRAIN_MAX_BYTES:
                        break
        finally:
            await self._stream.aclose()


@cache
def _shared_tls() -> ssl.SSLContext:
    # Loading the trusted CA certificates costs about a megabyte and a few milliseconds per context: one context
    # serves every backend client (per-user sessions each have a client of their own).
    return httpx2.create_ssl_context()


class KeepAliveTransport(httpx2.AsyncBaseTransport):
    """httpx2's own transport, with POST responses read to their end before they are closed."""

    def __init__(self) -> None:
        self._transport = httpx2.AsyncHTTPTransport(verify=_shared_tls())

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._transport.handle_async_request(request)
        if request.method == "POST" and isinstance(response.stream, httpx2.AsyncByteStream):
            response.stream = _DrainOnClose(response.stream)
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()
