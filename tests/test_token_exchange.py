"""Where a client's token goes: `master_oauth` forwarding only within the token's audience, and `token_exchange`
(RFC 8693) for a token whose audience is the backend. Against tests/backends/jwt_server.py, whose `/mcp` accepts
only its own JWTs issued for that URL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import mcp_types as types
import pytest

from master_mcp.config import ConfigError
from tests.conftest import JwtAuthServer, client_with, make_config, serve_master, text

pytestmark = pytest.mark.anyio

AUDIENCE = "urn:master-mcp:test"
EXCHANGER_SECRET = "exchanger-secret-0123456789"


@pytest.fixture(scope="module")
def auth_server() -> Iterator[JwtAuthServer]:
    server = JwtAuthServer()
    for client_id, audiences, lifetime in (
        ("exchanger", [f"{server.base}/mcp"], 3600),
        ("short-lived", [f"{server.base}/mcp"], 5),  # shorter than the master's expiry leeway: never reused
        ("nowhere", [], 3600),
    ):
        server.admin(
            "clients",
            {
                "client_id": client_id,
                "client_secret": EXCHANGER_SECRET,
                "allowed_audiences": audiences,
                "exchange_lifetime": lifetime,
            },
        )
    yield server
    server.stop()


def backend(server: JwtAuthServer, strategy: str, server_id: str = "cloud", **auth_config: Any) -> dict[str, Any]:
    return {"id": server_id, "type": "http", "url": server.url, "auth_strategy": strategy, "auth_config": auth_config}


def exchanging(server: JwtAuthServer, server_id: str = "cloud", **extra: Any) -> dict[str, Any]:
    options = {"token_endpoint": f"{server.base}/token", "client_id": "exchanger", "client_secret": "env:EX_SECRET"}
    return backend(server, "token_exchange", server_id, **{**options, **extra})


def config_for(server: JwtAuthServer, *servers: dict[str, Any]) -> Any:
    inbound = {"mode": "master_oauth", "issuer": server.base, "audience": AUDIENCE}
    return make_config(*servers, auth=inbound, store={"type": "memory"})


def subject_of(result: types.CallToolResult) -> str:
    assert not result.is_error, text(result)
    return str(json.loads(text(result))["subject"])


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch, no_credentials_in_logs: list[str]) -> None:
    no_credentials_in_logs.append(EXCHANGER_SECRET)
    monkeypatch.setenv("EX_SECRET", EXCHANGER_SECRET)


# ---- master_oauth: forwarding within the audience -------------------------------------------------------------


async def test_master_oauth_forwards_a_token_whose_audience_covers_the_backend(auth_server: JwtAuthServer) -> None:
    config = config_for(auth_server, backend(auth_server, "master_oauth", forward_client_token=True))
    async with serve_master(config) as (_, url):
        token = auth_server.mint(sub="alice", aud=[AUDIENCE, auth_server.url])
        async with client_with(url, token) as client:
            assert subject_of(await client.call_tool("cloud__whoami", {})) == "alice"


async def test_master_oauth_refuses_a_backend_outside_the_token_audience(auth_server: JwtAuthServer) -> None:
    config = config_for(auth_server, backend(auth_server, "master_oauth", forward_client_token=True))
    async with serve_master(config) as (_, url):
        token = auth_server.mint(sub="alice", aud=AUDIENCE)  # good for the master, not for the backend
        async with client_with(url, token) as client:
            result = await client.call_tool("cloud__whoami", {})
        assert result.is_error
        assert "'cloud'" in text(result) and "not issued for this backend" in text(result)
        assert token not in text(result)


async def test_master_oauth_audience_from_auth_config(auth_server: JwtAuthServer) -> None:
    settings = backend(auth_server, "master_oauth", forward_client_token=True, audience="urn:backend:other")
    async with serve_master(config_for(auth_server, settings)) as (_, url):
        token = auth_server.mint(sub="alice", aud=[AUDIENCE, auth_server.url])  # the URL is not the one asked for
        async with client_with(url, token) as client:
            result = await client.call_tool("cloud__whoami", {})
        assert result.is_error and "urn:backend:other" in text(result)


# ---- token_exchange ------------------------------------------------------------------------------------------


async def test_token_exchange_gets_a_backend_token_and_caches_it_per_principal(auth_server: JwtAuthServer) -> None:
    async with serve_master(config_for(auth_server, exchanging(auth_server))) as (_, url):
        before = len(auth_server.admin("exchanges"))
        alice = auth_server.mint(sub="alice", aud=AUDIENCE)
        async with client_with(url, alice) as client:
            assert subject_of(await client.call_tool("cloud__whoami", {})) == "alice"
            assert subject_of(await client.call_tool("cloud__whoami", {})) == "alice"
        async with client_with(url, auth_server.mint(sub="bob", aud=AUDIENCE)) as client:
            assert subject_of(await client.call_tool("cloud__whoami", {})) == "bob"
        exchanges = auth_server.admin("exchanges")[before:]
        assert len(exchanges) == 2  # one per principal, reused until it expires
        first = exchanges[0]
        assert first["grant_type"] == "urn:ietf:params:oauth:grant-type:token-exchange"
        assert first["subject_token_type"] == "urn:ietf:params:oauth:token-type:access_token"
        assert first["resource"] == auth_server.url and first["client_id"] == "exchanger"


async def test_token_exchange_asks_again_once_the_token_expires(auth_server: JwtAuthServer) -> None:
    config = config_for(auth_server, exchanging(auth_server, client_id="short-lived", scopes=["read"]))
    async with serve_master(config) as (_, url):
        before = len(auth_server.admin("exchanges"))
        async with client_with(url, auth_server.mint(sub="alice", aud=AUDIENCE)) as client:
            assert subject_of(await client.call_tool("cloud__whoami", {})) == "alice"
            assert subject_of(await client.call_tool("cloud__whoami", {})) == "alice"
        exchanges = auth_server.admin("exchanges")[before:]
        assert len(exchanges) >= 2 and all(e["scope"] == "read" for e in exchanges)


async def test_token_exchange_failure_is_an_error_never_a_fallback(auth_server: JwtAuthServer) -> None:
    async with serve_master(config_for(auth_server, exchanging(auth_server, client_id="nowhere"))) as (_, url):
        token = auth_server.mint(sub="alice", aud=[AUDIENCE, auth_server.url])  # forwarding it *would* work
        async with client_with(url, token) as client:
            result = await client.call_tool("cloud__whoami", {})
        assert result.is_error
        assert (
            "'cloud'" in text(result) and "token exchange failed" in text(result) and "invalid_target" in text(result)
        )
        assert token not in text(result)


async def test_token_exchange_with_a_wrong_client_secret(
    auth_server: JwtAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EX_SECRET", "not-the-secret-at-all")
    async with serve_master(config_for(auth_server, exchanging(auth_server))) as (_, url):
        async with client_with(url, auth_server.mint(sub="alice", aud=AUDIENCE)) as client:
            result = await client.call_tool("cloud__whoami", {})
        assert result.is_error and "invalid_client" in text(result)


def test_token_exchange_config_errors_name_the_key(auth_server: JwtAuthServer) -> None:
    settings = backend(auth_server, "token_exchange", client_id="exchanger", scopes="read")
    with pytest.raises(ConfigError) as caught:
        from master_mcp.server import MasterServer

        MasterServer(config_for(auth_server, settings))
    message = str(caught.value)
    assert "servers[0].auth_config.token_endpoint: Field required" in message
    assert "servers[0].auth_config.scopes" in message
