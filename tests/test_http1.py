"""The backend hop's own HTTP/1.1 (`backends/http1.py`), against real loopback servers that write each answer's
bytes as the test says: framing, keep-alive, TLS with a certificate of the test's own CA, a proxy's tunnel,
refusals, back-pressure and the limit on requests in flight."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from yarl import URL

from master_mcp.backends.http1 import MAX_HEAD_BYTES, Pool
from master_mcp.backends.http_wire import HttpWire, Reply, shared_tls
from master_mcp.backends.streamable import streamable_http
from tests.test_backend_http import read_request

pytestmark = pytest.mark.anyio


class Cut(bytes):
    """An answer after which the server closes the connection, whatever the answer says."""


class Reset(bytes):
    """An answer after which the server resets the connection (RST, not FIN)."""


class Served:
    """What a server saw: one entry per connection, each the requests' heads (method, target, headers) on it."""

    def __init__(self) -> None:
        self.connections: list[list[tuple[str, str, dict[str, str]]]] = []


@asynccontextmanager
async def answering(*answers: bytes, tls: ssl.SSLContext | None = None) -> AsyncIterator[tuple[int, Served]]:
    """A server that answers the requests it gets, on whatever connection, with `answers` in turn; an answer
    without `connection: close` (or that is not `Cut`) leaves its connection open for the next request."""
    served = Served()
    queue = list(answers)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests: list[tuple[str, str, dict[str, str]]] = []
        served.connections.append(requests)
        try:
            while queue:
                method, target, headers, _ = await read_request(reader)
                requests.append((method, target, headers))
                answer = queue.pop(0)
                writer.write(answer)
                await writer.drain()
                if isinstance(answer, Reset):
                    sock = writer.get_extra_info("socket")
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                    return
                if isinstance(answer, Cut) or b"connection: close" in answer.split(b"\r\n\r\n")[0]:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=tls)
    try:
        yield server.sockets[0].getsockname()[1], served
    finally:
        server.close()


def ok(body: bytes, *extra: str) -> bytes:
    head = ["HTTP/1.1 200 OK", "content-type: application/json", f"content-length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def chunked(*parts: bytes) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    return b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n" + body


async def test_answers_framed_each_way_arrive_whole_and_share_a_connection() -> None:
    """Content-Length, chunked, an interim 100 before the answer, then one framed only by the connection's end:
    each body arrives whole, and the connection is used again until an answer closes it."""
    until_close = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\nto the end"
    interim = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"after 100")
    async with answering(ok(b'{"a": 1}'), chunked(b"one ", b"two"), interim, until_close) as (port, served):
        pool = Pool(shared_tls(), keep_alive_s=4.0)
        bodies = []
        for _ in range(4):
            response = await pool.request("POST", URL(f"http://127.0.0.1:{port}/mcp?k=1"), [], b"{}", proxy=None)
            bodies.append((response.status, await response.read()))
            response.release()
        await pool.close()
    assert bodies == [(200, b'{"a": 1}'), (200, b"one two"), (200, b"after 100"), (200, b"to the end")]
    assert [len(requests) for requests in served.connections] == [4]
    method, target, headers = served.connections[0][0]
    assert (method, target, headers["host"], headers["content-length"]) == (
        "POST",
        "/mcp?k=1",
        f"127.0.0.1:{port}",
        "2",
    )


async def test_an_answer_cut_short_or_never_given_is_a_transport_error() -> None:
    cut = Cut(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this")
    async with answering(cut, Cut(b"")) as (port, _):
        pool = Pool(shared_tls(), keep_alive_s=4.0)
        url = URL(f"http://127.0.0.1:{port}/")
        response = await pool.request("POST", url, [], b"{}", proxy=None)
        with pytest.raises(httpx2.RemoteProtocolError, match="closed the connection before its answer ended"):
            await response.read()
        response.release()
        with pytest.raises(httpx2.RemoteProtocolError, match="before its answer ended"):
            await pool.request("POST", url, [], b"{}", proxy=None)  # the server closes without a word
        await pool.close()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 2\r\n\r\nxx", "compressed answer"),
        (b"NOT HTTP AT ALL\r\n\r\n", "not HTTP/1.1"),
        (b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n", "switched"),
    ],
)
async def test_an_answer_the_hop_cannot_read_is_refused_clearly(answer: bytes, expected: str) -> None:
    async with answering(answer) as (port, _):
        pool = Pool(shared_tls(), keep_alive_s=4.0)
        with anyio.fail_after(5), pytest.raises(httpx2.RemoteProtocolError, match=expected):
            await pool.request("GET", URL(f"http://127.0.0.1:{port}/"), [], None, proxy=None)
        await pool.close()


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent() -> None:
    async with answering(ok(b"{}")) as (port, served):
        pool = Pool(shared_tls(), keep_alive_s=4.0)
        smuggled = [("x-note", "fine\r\nx-injected: yes")]
        with pytest.raises(httpx2.LocalProtocolError, match="x-note") as refused:
            await pool.request("POST", URL(f"http://127.0.0.1:{port}/"), smuggled, b"{}", proxy=None)
        assert "injected" not in str(refused.value)
        response = await pool.request("POST", URL(f"http://127.0.0.1:{port}/"), [], b"{}", proxy=None)
        assert await response.read() == b"{}"  # the refused request took no slot and no connection with it
        response.release()
        await pool.close()
    assert [[target for _, target, _ in requests] for requests in served.connections] == [["/"]]


async def test_a_slow_reader_holds_back_a_large_body_and_still_gets_all_of_it() -> None:
    parts = [bytes([65 + i % 26]) * 65536 for i in range(64)]  # 4 MiB
    async with answering(chunked(*parts)) as (port, _):
        pool = Pool(shared_tls(), keep_alive_s=4.0)
        response = await pool.request("GET", URL(f"http://127.0.0.1:{port}/"), [], None, proxy=None)
        got = []
        most = 0
        async for chunk in response.chunks():
            got.append(chunk)
            most = max(most, response._buffered)
            await asyncio.sleep(0.001)
        response.release()
        await pool.close()
    assert b"".join(got) == b"".join(parts)
    # Reading paused at 256 KiB held; what was already in flight (a socket read or two) may come on top of it.
    assert most < 1024 * 1024, most


async def test_requests_over_the_limit_wait_for_a_slot() -> None:
    async with answering(ok(b"1"), ok(b"2"), ok(b"3")) as (port, served):
        pool = Pool(shared_tls(), keep_alive_s=4.0, limit=2)
        url = URL(f"http://127.0.0.1:{port}/")
        first = await pool.request("GET", url, [], None, proxy=None)
        second = await pool.request("GET", url, [], None, proxy=None)
        third = asyncio.ensure_future(pool.request("GET", url, [], None, proxy=None))
        await asyncio.sleep(0.2)
        assert not third.done()
        assert await first.read() == b"1"
        first.release()
        with anyio.fail_after(5):
            assert await (await third).read() == b"3"
        second.release()
        await pool.close()
    assert sorted(len(requests) for requests in served.connections) == [1, 2]  # the third took the first's connection


async def test_a_second_answer_to_one_request_is_not_read_and_its_connection_is_not_kept() -> None:
    extra = b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 5\r\n\r\nEVIL!"
    async with answering(ok(b"ok") + extra, ok(b"next")) as (port, served):
        pool = Pool(shared_tls(), keep_alive_s=4.0)
        url = URL(f"http://127.0.0.1:{port}/")
        response = await pool.request("GET", url, [], None, proxy=None)
        await asyncio.sleep(0.1)  # both answers have arrived
        assert (response.status, await response.read()) == (200, b"ok")
        response.release()
        response = await pool.request("GET", url, [], None, proxy=None)
        assert (response.status, await response.read()) == (200, b"next")
        response.release()
        await pool.close()
    assert [len(requests) for requests in served.connections] == [1, 1]


async def test_a_reset_under_an_answer_framed_by_the_connection_end_is_not_its_end() -> None:
    partial = Reset(b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\r\n{"jsonrpc": "2.0",')
    async with answering(partial) as (port, _):
        pool = Pool(shared_tls(), keep_alive_s=4.0)
        response = await pool.request("GET", URL(f"http://127.0.0.1:{port}/"), [], None, proxy=None)
        with anyio.fail_after(5), pytest.raises(httpx2.RemoteProtocolError):
            await response.read()
        response.release()
        await pool.close()


async def test_an_answer_head_over_the_bound_is_refused() -> None:
    lines = b"".join(b"x-filler-%d: %s\r\n" % (i, b"y" * 100) for i in range(MAX_HEAD_BYTES // 100))
    async with answering(b"HTTP/1.1 200 OK\r\n" + lines + b"content-length: 0\r\n\r\n") as (port, _):
        pool = Pool(shared_tls(), keep_alive_s=4.0)
        with anyio.fail_after(5), pytest.raises(httpx2.RemoteProtocolError, match="head is over"):
            await pool.request("GET", URL(f"http://127.0.0.1:{port}/"), [], None, proxy=None)
        await pool.close()


async def test_a_reply_given_up_on_while_it_drains_gives_its_slot_back() -> None:
    """A reply whose `finish` is cancelled (its session ending) still releases: else each such reply would take
    one of the pool's slots for good, and with them all gone no request would go out again."""
    stream = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n"
    async with answering(stream, ok(b"after")) as (port, _):
        pool = Pool(shared_tls(), keep_alive_s=4.0, limit=1)
        url = URL(f"http://127.0.0.1:{port}/")
        reply = Reply(await pool.request("GET", url, [], None, proxy=None), url)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await reply.finish()
        with anyio.fail_after(5):
            response = await pool.request("GET", url, [], None, proxy=None)
            assert await response.read() == b"after"
        response.release()
        await pool.close()


async def test_a_credential_flow_that_fails_gives_its_reply_back() -> None:
    class Failing(httpx2.Auth):
        requires_response_body = True

        def auth_flow(self, request: httpx2.Request):  # type: ignore[no-untyped-def]
            yield request
            raise RuntimeError("the token endpoint is down")

    answers = [ok(b"{}") for _ in range(3)]
    async with answering(*answers) as (port, _):
        async with HttpWire(f"http://127.0.0.1:{port}/mcp", headers={}, auth=Failing(), instances=None) as wire:
            wire._http = Pool(shared_tls(), keep_alive_s=4.0, limit=1)  # one slot: a reply kept would block the next
            for _ in range(2):
                with anyio.fail_after(5), pytest.raises(RuntimeError, match="token endpoint"):
                    await wire.request("POST", {"content-type": "application/json"}, b"{}")


# TLS: a CA of the test's own, trusted through SSL_CERT_FILE as a deployment with a private CA would.


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(CA certificate, server certificate for 127.0.0.1, server key) in PEM files."""
    folder = tmp_path_factory.mktemp("tls")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "master-mcp test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


@pytest.fixture
def trusted_ca(certificates: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("SSL_CERT_FILE", str(certificates[0]))
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    shared_tls.cache_clear()
    yield
    shared_tls.cache_clear()


def server_tls(certificates: tuple[Path, Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificates[1], certificates[2])
    return context


@asynccontextmanager
async def tunnelling(seen: list[tuple[str, str, dict[str, str]]]) -> AsyncIterator[int]:
    """An HTTP proxy that answers CONNECT by relaying bytes both ways to the host and port it names."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method, target, headers, _ = await read_request(reader)
        seen.append((method, target, headers))
        host, port = target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_an_https_backend_is_reached_directly_and_through_a_proxy_tunnel(
    certificates: tuple[Path, Path, Path], trusted_ca: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, str, dict[str, str]]] = []
    answers = [ok(b'{"direct": true}'), ok(b'{"tunnelled": true}', "connection: close")]
    async with answering(*answers, tls=server_tls(certificates)) as (port, served), tunnelling(seen) as proxy:
        url = f"https://127.0.0.1:{port}/mcp"
        async with HttpWire(url, headers={}, auth=None, instances=None) as wire:
            reply = await wire.request("POST", {"content-type": "application/json"}, b"{}")
            assert await reply.read() == b'{"direct": true}'
            await reply.finish()
        monkeypatch.setenv("HTTPS_PROXY", f"http://someone:SECRET@127.0.0.1:{proxy}")
        async with HttpWire(url, headers={}, auth=None, instances=None) as wire:
            reply = await wire.request("POST", {"content-type": "application/json"}, b"{}")
            assert await reply.read() == b'{"tunnelled": true}'
            await reply.finish()
    ((method, target, headers),) = seen
    assert (method, target) == ("CONNECT", f"127.0.0.1:{port}")
    assert headers["proxy-authorization"] == "Basic c29tZW9uZTpTRUNSRVQ="  # someone:SECRET
    assert len(served.connections) == 2
    assert "proxy-authorization" not in served.connections[1][0][2]  # the credentials stay with the proxy


@pytest.mark.parametrize(
    ("answer", "expected"),
    [(Cut(b"HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n"), "HTTP 403"), (Cut(b""), "broke off the tunnel")],
)
async def test_a_proxy_that_refuses_or_drops_the_tunnel_leaves_the_backend_unreachable(
    answer: bytes, expected: str, trusted_ca: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unreachable (a ConnectError), not a broken request: a balancer tries the next instance."""
    async with answering(answer) as (proxy, served):
        monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{proxy}")
        async with HttpWire("https://backend.invalid:8443/mcp", headers={}, auth=None, instances=None) as wire:
            with pytest.raises(httpx2.ConnectError, match=expected) as refused:
                await wire.request("POST", {"content-type": "application/json"}, b"{}")
    assert "backend.invalid:8443" in str(refused.value)
    assert served.connections[0][0][:2] == ("CONNECT", "backend.invalid:8443")


async def test_an_https_backend_whose_certificate_is_not_trusted_is_unreachable(
    certificates: tuple[Path, Path, Path], trusted_ca: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE")
    shared_tls.cache_clear()  # the machine's own CAs, which do not know the test's
    async with answering(ok(b"{}"), tls=server_tls(certificates)) as (port, served):
        async with HttpWire(f"https://127.0.0.1:{port}/mcp", headers={}, auth=None, instances=None) as wire:
            with pytest.raises(httpx2.ConnectError, match=f"cannot connect to 127.0.0.1:{port}"):
                await wire.request("POST", {"content-type": "application/json"}, b"{}")
    assert all(requests == [] for requests in served.connections)


async def test_a_credential_with_a_line_break_fails_its_request_clearly_and_nothing_is_sent() -> None:
    """A token (from a token endpoint, say) that would write a header of its own: the request is answered with
    an error that names the header and not the token, and the backend is not pinged as if it had gone."""

    class Smuggling(httpx2.Auth):
        def auth_flow(self, request: httpx2.Request):  # type: ignore[no-untyped-def]
            request.headers["authorization"] = "Bearer SECRET\r\nx-injected: yes"
            yield request

    async with answering(ok(b"{}")) as (port, served):
        wire = HttpWire(f"http://127.0.0.1:{port}/mcp", headers={}, auth=Smuggling(), instances=None)
        async with wire, streamable_http(wire, max_event_bytes=1 << 20, on_forgotten=lambda: None) as (read, write):
            async with ClientSession(read, write) as session:
                with anyio.fail_after(10), pytest.raises(MCPError) as failed:
                    await session.initialize()
    assert "the request was not sent: the header 'authorization' holds a line break" in str(failed.value)
    assert "SECRET" not in str(failed.value)
    assert served.connections == []
