"""Per-server auth strategies against a real authorization server on loopback (tests/backends/oauth_server.py).

The whole delegate flow runs end to end with a real HTTP client following redirects: call -> delegation ->
/oauth/authorize -> the AS (consent auto-approved) -> /oauth/callback -> retry succeeds.
"""

from __future__ import annotations

import html
import json
import secrets
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx2
import mcp_types as types
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from master_mcp.auth import LOCAL_PRINCIPAL
from master_mcp.auth.crypto import Sealer, new_key
from master_mcp.auth.flow import OAuthFlowController
from master_mcp.auth.flow_state import MemoryFlowStore
from master_mcp.auth.redis_store import RedisFlowStore
from master_mcp.config import ConfigError
from master_mcp.redis_link import RedisLink
from master_mcp.server import MasterServer
from tests.conftest import HttpBackend, OAuthBackend, serve_master, stdio_server, text
from tests.conftest import make_config as _make_config

pytestmark = pytest.mark.anyio

ALICE, BOB = "alice-token-0123456789", "bob-token-0123456789ab"
LEAK_CHECK: list[str] = []


def make_config(*servers: dict[str, Any], **master: Any) -> Any:
    """Tokens kept in memory unless a test asks for the SQLite store."""
    return _make_config(
        *servers, **{"store": {"type": "memory"}, **master}
    )  # every log line of this module, checked for credentials at the end


@pytest.fixture(autouse=True)
def _collect_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level("DEBUG")
    yield
    for when in ("setup", "call"):
        for record in caplog.get_records(when):
            # The test's own browser (httpx2/httpcore2 in this process) logs the redirects it follows, codes
            # included; the master sets those loggers to WARNING, and its debug run is checked in test_logs.py.
            if not record.name.startswith(("httpx2", "httpcore2")):
                LEAK_CHECK.append(f"{record.name} {record.getMessage()} {record.exc_text or ''}")


@pytest.fixture
def fresh_oauth() -> Iterator[OAuthBackend]:
    """An AS of its own, for tests that break it (expire tokens, refuse refresh)."""
    backend = OAuthBackend()
    yield backend
    backend.stop()


def delegated(oauth: OAuthBackend, **auth_config: Any) -> dict[str, Any]:
    config = {"client_id": "master-client", "client_secret": "master-client-secret-1234", "scopes": ["read"]}
    return {
        "id": "cloud",
        "type": "http",
        "url": oauth.url,
        "auth_strategy": "delegate_oauth",
        "auth_config": {**config, **auth_config},
    }


async def authorize_in_browser(url: str, browser: httpx2.AsyncClient | None = None) -> httpx2.Response:
    """Open the link as a person would: follow every redirect, keep cookies; return the final page."""
    if browser is not None:
        return await browser.get(url)
    async with httpx2.AsyncClient(follow_redirects=True) as fresh:
        return await fresh.get(url)


def delegation_of(result: types.CallToolResult) -> dict[str, Any]:
    assert result.is_error
    assert result.structured_content is not None
    return result.structured_content


async def test_delegate_flow_end_to_end(oauth: OAuthBackend) -> None:
    notices: list[Any] = []

    async def on_message(message: Any) -> None:
        notices.append(message)

    config = make_config(delegated(oauth), stdio_server("local"))
    async with serve_master(config) as (master, url), Client(url, mode="legacy", message_handler=on_message) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert "cloud__authorize" in names and "cloud__whoami" not in names
        assert master.readiness()[0]  # a per-user backend with no session yet is not "down"
        delegation = delegation_of(await client.call_tool("cloud__authorize", {}))
        base = master.config.master.public_base_url
        assert delegation["type"] == "oauth_delegation"
        assert delegation["server_id"] == "cloud"
        assert delegation["authorization_url"].startswith(f"{base}/oauth/authorize?server_id=cloud&flow=")
        assert delegation["auth_endpoint"] == f"{oauth.base}/authorize"
        assert delegation["token_endpoint"] == f"{base}/oauth/token"
        assert delegation["required_scopes"] == ["read"]
        assert delegation["redirect_after_auth"] == f"{base}/oauth/success"

        page = await authorize_in_browser(delegation["authorization_url"])
        assert page.status_code == 200 and "Authorized" in page.text
        assert page.headers["x-frame-options"] == "DENY"

        names = {t.name for t in (await client.list_tools()).tools}
        assert "cloud__whoami" in names
        who = json.loads(text(await client.call_tool("cloud__whoami", {})))
        assert who["subject"].startswith("user-") and who["client"] == "master-client"
        assert text(await client.call_tool("cloud__authorize", {})) == "cloud is authorized."
        assert any(isinstance(n, types.ToolListChangedNotification) for n in notices)


async def test_url_elicitation_client_gets_32042_and_completion_notice(oauth: OAuthBackend) -> None:
    notices: list[Any] = []

    async def on_message(message: Any) -> None:
        notices.append(message)

    async def elicit(ctx: Any, params: Any) -> types.ElicitResult:
        return types.ElicitResult(action="decline")

    config = make_config(delegated(oauth))
    async with (
        serve_master(config) as (_, url),
        Client(url, mode="legacy", message_handler=on_message, elicitation_callback=elicit) as client,
    ):
        with pytest.raises(MCPError) as info:
            await client.call_tool("cloud__authorize", {})
        assert info.value.code == -32042
        [elicitation] = info.value.data["elicitations"]
        assert elicitation["mode"] == "url" and "/oauth/authorize?" in elicitation["url"]
        await authorize_in_browser(elicitation["url"])
        who = json.loads(text(await client.call_tool("cloud__whoami", {})))
        assert who["subject"].startswith("user-")
    completes = [n for n in notices if isinstance(n, types.ElicitCompleteNotification)]
    assert [n.params.elicitation_id for n in completes] == [elicitation["elicitationId"]]


async def test_2026_client_gets_the_delegation_result_and_its_retry_succeeds(oauth: OAuthBackend) -> None:
    async with serve_master(make_config(delegated(oauth))) as (_, url), Client(url, mode="2026-07-28") as client:
        delegation = delegation_of(await client.call_tool("cloud__authorize", {}))
        assert delegation["type"] == "oauth_delegation"
        await authorize_in_browser(delegation["authorization_url"])
        assert json.loads(text(await client.call_tool("cloud__whoami", {})))["subject"].startswith("user-")


def two_users(*servers: dict[str, Any]) -> Any:
    tokens = [{"token": ALICE, "subject": "alice"}, {"token": BOB, "subject": "bob"}]
    return make_config(*servers, auth={"mode": "static_tokens", "tokens": tokens})


@pytest.fixture
def bearer_client() -> Any:
    from mcp.client.streamable_http import streamable_http_client

    def make(url: str, token: str, mode: str = "legacy") -> Client:
        http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
        return Client(streamable_http_client(url, http_client=http), mode=mode)

    return make


async def test_two_principals_get_two_tokens_and_two_sessions(oauth: OAuthBackend, bearer_client: Any) -> None:
    config = two_users(delegated(oauth))
    async with serve_master(config) as (master, url):
        subjects = {}
        for name, token in (("alice", ALICE), ("bob", BOB)):
            async with bearer_client(url, token) as client:
                delegation = delegation_of(await client.call_tool("cloud__authorize", {}))
                await authorize_in_browser(delegation["authorization_url"])
                subjects[name] = json.loads(text(await client.call_tool("cloud__whoami", {})))["subject"]
        assert subjects["alice"] != subjects["bob"]
        assert master.pool.sessions_of("cloud") == 2
        # Each principal keeps its own identity on later calls.
        async with bearer_client(url, ALICE) as client:
            assert json.loads(text(await client.call_tool("cloud__whoami", {})))["subject"] == subjects["alice"]
    async with httpx2.AsyncClient() as http:
        seen = (await http.get(f"{oauth.base}/admin/log")).json()
    assert ALICE not in str(seen) and BOB not in str(seen)  # the master's own tokens never reached the backend


async def test_inbound_tokens_are_required(oauth: OAuthBackend, bearer_client: Any) -> None:
    config = two_users(stdio_server("local"))
    async with serve_master(config) as (_, url), httpx2.AsyncClient() as http:
        body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
        headers = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
        missing = await http.post(url, json=body, headers=headers)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await http.post(url, json=body, headers={**headers, "authorization": "Bearer not-a-real-token-xx"})
        assert wrong.status_code == 401
        async with bearer_client(url, ALICE) as client:
            assert text(await client.call_tool("local__echo", {"text": "in"})) == "in"


async def test_bypass_never_forwards_the_client_authorization(bearer_client: Any) -> None:
    backend = HttpBackend("--name", "plain")
    try:
        config = two_users({"id": "plain", "type": "http", "url": backend.url})
        async with serve_master(config) as (_, url), bearer_client(url, ALICE) as client:
            assert text(await client.call_tool("plain__authorization_seen", {})) == "none"
    finally:
        backend.stop()


async def test_master_oauth_forwards_only_when_opted_in(oauth: OAuthBackend, bearer_client: Any) -> None:
    async with httpx2.AsyncClient() as http:
        minted = (await http.post(f"{oauth.base}/admin/mint", json={"subject": "alice@as"})).json()
    token = minted["access_token"]
    forwarding = {"id": "fwd", "type": "http", "url": oauth.url, "auth_strategy": "master_oauth"}
    config = make_config(
        {**forwarding, "auth_config": {"forward_client_token": True}},
        {**forwarding, "id": "closed"},
        auth={"mode": "static_tokens", "tokens": [{"token": token, "subject": "alice"}]},
    )
    async with serve_master(config) as (_, url), bearer_client(url, token) as client:
        # A static token has no verified audience, so it never covers a backend (see test_token_exchange.py for
        # forwarding a master_oauth token whose audience does).
        unaudienced = await client.call_tool("fwd__whoami", {})
        assert unaudienced.is_error and "not issued for this backend" in text(unaudienced)
        refused = await client.call_tool("closed__whoami", {})
        assert refused.is_error and "forward_client_token" in text(refused)


async def test_proxy_oauth_client_credentials_refresh_and_static(oauth: OAuthBackend) -> None:
    async with httpx2.AsyncClient() as http:
        minted = (await http.post(f"{oauth.base}/admin/mint", json={"subject": "robot"})).json()
    proxy = {"type": "http", "url": oauth.url, "auth_strategy": "proxy_oauth"}
    service = {"client_id": "service-client", "client_secret": "service-secret-5678"}
    master_client = {"client_id": "master-client", "client_secret": "master-client-secret-1234"}
    config = make_config(
        {**proxy, "id": "cc", "auth_config": {**service, "token_endpoint": f"{oauth.base}/cc-token"}},
        {
            **proxy,
            "id": "rt",
            "auth_config": {
                **master_client,
                "token_endpoint": f"{oauth.base}/token",
                "refresh_token": minted["refresh_token"],
            },
        },
        {**proxy, "id": "static", "auth_config": {"token_source": minted["access_token"]}},
    )
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        assert master.readiness()[0]
        assert json.loads(text(await client.call_tool("cc__whoami", {})))["subject"] == "service-account"
        assert json.loads(text(await client.call_tool("rt__whoami", {})))["subject"] == "robot"
        assert json.loads(text(await client.call_tool("static__whoami", {})))["subject"] == "robot"


async def test_proxy_oauth_fails_closed(oauth: OAuthBackend) -> None:
    wrong = {
        "client_id": "service-client",
        "client_secret": "wrong-secret-000",
        "token_endpoint": f"{oauth.base}/cc-token",
    }
    config = make_config(
        {"id": "cc", "type": "http", "url": oauth.url, "auth_strategy": "proxy_oauth", "auth_config": wrong}
    )
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        ready, servers = master.readiness()
        assert not ready and servers[0]["state"] == "down"
        # Never listed (the backend could not be reached), but the name says whose it would be: the caller hears
        # why, and not the secret.
        refused = await client.call_tool("cc__whoami", {})
        assert refused.is_error and "server 'cc': the master could not obtain its token" in text(refused)
        assert "wrong-secret-000" not in text(refused)


# ---- bad input at the OAuth routes ----------------------------------------------------------------------------


@pytest.fixture
async def flow(oauth: OAuthBackend) -> AsyncIterator[tuple[MasterServer, str, Client]]:
    config = make_config(delegated(oauth))
    async with serve_master(config) as (master, url), Client(url, mode="legacy") as client:
        yield master, url, client


async def start(client: Client) -> str:
    """A new authorization link (`force`: even when this principal is authorized already)."""
    return str(delegation_of(await client.call_tool("cloud__authorize", {"force": True}))["authorization_url"])


async def until_callback(browser: httpx2.AsyncClient, link: str) -> str:
    """Follow the link up to the AS's redirect back to the master; return that callback URL unopened."""
    to_as = await browser.get(link)
    assert to_as.status_code == 302, to_as.text
    back = await browser.get(to_as.headers["location"])
    assert back.status_code == 302
    return str(back.headers["location"])


def error_text(page: httpx2.Response) -> str:
    assert page.status_code == 400 and page.url.path == "/oauth/error"
    return html.unescape(page.text)


async def test_missing_unknown_and_replayed_state(flow: tuple[MasterServer, str, Client]) -> None:
    master, _, client = flow
    base = master.config.master.public_base_url
    async with httpx2.AsyncClient(follow_redirects=True) as browser:
        assert "no state" in error_text(await browser.get(f"{base}/oauth/callback?code=abc"))
        assert "unknown, used or expired state" in error_text(
            await browser.get(f"{base}/oauth/callback?code=a&state=forged")
        )
    async with httpx2.AsyncClient() as browser:
        callback = await until_callback(browser, await start(client))
        assert (await browser.get(callback)).headers["location"].startswith("/oauth/success")
        replay = await browser.get(callback, follow_redirects=True)
        assert "unknown, used or expired state" in error_text(replay)
    # the link itself is single use too
    async with httpx2.AsyncClient(follow_redirects=True) as browser:
        link = await start(client)
        await browser.get(link)
        assert "used already" in error_text(await browser.get(link))


async def test_expired_state(flow: tuple[MasterServer, str, Client]) -> None:
    master, _, client = flow
    assert master.auth.flows is not None
    store = master.auth.flows.store = MemoryFlowStore()
    async with httpx2.AsyncClient() as browser:
        link = await start(client)
        callback = await until_callback(browser, link)
        # Shortened only now (read when the state is checked): the steps before must not race a short life.
        store._ttl = 0.2
        await anyio.sleep(0.4)
        assert "expired" in error_text(await browser.get(callback, follow_redirects=True))


async def test_state_from_another_browser_is_refused(flow: tuple[MasterServer, str, Client]) -> None:
    _, _, client = flow
    async with httpx2.AsyncClient() as victim, httpx2.AsyncClient(follow_redirects=True) as attacker:
        callback = await until_callback(victim, await start(client))
        assert "another browser session" in error_text(await attacker.get(callback))
        # ... and the stranger's attempt did not spend it: the right browser still completes the flow.
        finished = await victim.get(callback, follow_redirects=True)
        assert finished.url.path == "/oauth/success"


async def test_link_of_another_principal_is_refused(oauth: OAuthBackend, bearer_client: Any) -> None:
    async with serve_master(two_users(delegated(oauth))) as (_, url), bearer_client(url, ALICE) as alice:
        link = await start(alice)
        async with httpx2.AsyncClient(follow_redirects=True, headers={"authorization": f"Bearer {BOB}"}) as bob:
            assert "belongs to another user" in error_text(await bob.get(link))


async def test_code_exchange_error_and_access_denied(oauth: OAuthBackend) -> None:
    config = make_config(delegated(oauth), {**delegated(oauth, scopes=["deny"]), "id": "denied"})
    async with serve_master(config) as (_, url), Client(url, mode="legacy") as client:
        async with httpx2.AsyncClient() as browser:
            callback = await until_callback(browser, await start(client))
            tampered = callback.replace("code=", "code=x")
            page = await browser.get(tampered, follow_redirects=True)
            assert "exchanging the code failed" in error_text(page) and "invalid_grant" in page.text
        link = str(delegation_of(await client.call_tool("denied__authorize", {}))["authorization_url"])
        async with httpx2.AsyncClient(follow_redirects=True) as browser:
            page = await browser.get(link)
            assert "the provider refused: access_denied" in error_text(page)
            assert "<script>" not in page.text


async def test_return_to_must_stay_on_site(flow: tuple[MasterServer, str, Client]) -> None:
    _, _, client = flow
    async with httpx2.AsyncClient(follow_redirects=True) as browser:
        for target in ("https://evil.example/x", "//evil.example/x", "/\\evil.example"):
            page = await browser.get(await start(client) + "&return_to=" + target)
            assert "return_to must be a path on this server" in error_text(page)
        link = await start(client)
        page = await browser.get(link + "&return_to=/healthz")
        assert page.url.path == "/healthz"


async def test_error_page_escapes_what_it_echoes(flow: tuple[MasterServer, str, Client]) -> None:
    master, _, _ = flow
    base = master.config.master.public_base_url
    async with httpx2.AsyncClient() as browser:
        page = await browser.get(f"{base}/oauth/error?message=<script>alert(1)</script>")
    assert "<script>" not in page.text and "&lt;script&gt;" in page.text


async def flow_error_with(oauth: OAuthBackend, **endpoints: str) -> str:
    """Run one authorization against a master whose provider endpoints are given; return the error page text."""
    async with (
        serve_master(make_config(delegated(oauth, **endpoints))) as (_, url),
        Client(url, mode="legacy") as client,
        httpx2.AsyncClient(follow_redirects=True) as browser,
    ):
        return error_text(await browser.get(await start(client)))


async def test_token_endpoint_down(oauth: OAuthBackend) -> None:
    page = await flow_error_with(
        oauth, authorization_endpoint=f"{oauth.base}/authorize", token_endpoint="http://127.0.0.1:9/token"
    )
    assert "token endpoint unreachable" in page


async def test_answer_from_another_issuer_is_refused(oauth: OAuthBackend) -> None:
    page = await flow_error_with(
        oauth,
        authorization_endpoint=f"{oauth.base}/authorize",
        token_endpoint=f"{oauth.base}/token",
        issuer="http://127.0.0.1:1/other-issuer",
    )
    assert "unexpected issuer" in page


async def test_post_token_completes_a_caught_redirect(oauth: OAuthBackend, bearer_client: Any) -> None:
    async with serve_master(two_users(delegated(oauth))) as (master, url), bearer_client(url, ALICE) as alice:
        auth = {"authorization": f"Bearer {ALICE}"}
        async with httpx2.AsyncClient(headers=auth) as agent:
            callback = httpx2.URL(await until_callback(agent, await start(alice)))
            state, code = callback.params["state"], callback.params["code"]
            token_url = f"{master.config.master.public_base_url}/oauth/token"
            wrong_user = await agent.post(
                token_url, json={"state": state, "code": code}, headers={"authorization": f"Bearer {BOB}"}
            )
            assert wrong_user.status_code == 403
        async with httpx2.AsyncClient(headers=auth) as agent:
            callback = httpx2.URL(await until_callback(agent, await start(alice)))
            done = await agent.post(
                token_url, data={"state": callback.params["state"], "code": callback.params["code"]}
            )
            assert done.json() == {"server_id": "cloud", "status": "authorized"}
        assert json.loads(text(await alice.call_tool("cloud__whoami", {})))["subject"].startswith("user-")


async def test_backend_401_after_failed_refresh_drops_the_token(fresh_oauth: OAuthBackend) -> None:
    async with serve_master(make_config(delegated(fresh_oauth))) as (_, url), Client(url, mode="legacy") as client:
        await authorize_in_browser(await start(client))
        assert "user-" in text(await client.call_tool("cloud__whoami", {}))
        async with httpx2.AsyncClient() as http:
            await http.post(f"{fresh_oauth.base}/admin/refresh-off")
            await http.post(f"{fresh_oauth.base}/admin/expire")
        failed = await client.call_tool("cloud__whoami", {})
        assert failed.is_error
        again = await client.call_tool("cloud__whoami", {})
        assert delegation_of(again)["type"] == "oauth_delegation"


async def test_refresh_on_401_keeps_working(fresh_oauth: OAuthBackend) -> None:
    async with serve_master(make_config(delegated(fresh_oauth))) as (_, url), Client(url, mode="legacy") as client:
        await authorize_in_browser(await start(client))
        first = json.loads(text(await client.call_tool("cloud__whoami", {})))["subject"]
        async with httpx2.AsyncClient() as http:
            await http.post(f"{fresh_oauth.base}/admin/expire")
        assert json.loads(text(await client.call_tool("cloud__whoami", {})))["subject"] == first


# ---- the token store ------------------------------------------------------------------------------------------


def stored(oauth: OAuthBackend, db: Path) -> Any:
    return make_config(delegated(oauth), store={"type": "sqlite", "path": str(db)})


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A SQLite token store's path, with a master key in the environment."""
    monkeypatch.setenv("MASTER_MCP_TOKEN_KEY", new_key())
    return tmp_path / "tokens.db"


async def test_sqlite_store_survives_a_restart(oauth: OAuthBackend, db: Path) -> None:
    async with serve_master(stored(oauth, db)) as (_, url), Client(url, mode="legacy") as client:
        await authorize_in_browser(await start(client))
        subject = json.loads(text(await client.call_tool("cloud__whoami", {})))["subject"]
    raw = await anyio.Path(db).read_bytes()
    async with serve_master(stored(oauth, db)) as (_, url), Client(url, mode="legacy") as client:
        assert json.loads(text(await client.call_tool("cloud__whoami", {})))["subject"] == subject
    async with httpx2.AsyncClient() as http:
        issued = (await http.get(f"{oauth.base}/admin/issued")).json()
    assert not any(secret.encode() in raw for secret in issued)  # sealed at rest


async def test_tampered_ciphertext_is_never_used(oauth: OAuthBackend, db: Path) -> None:
    async with serve_master(stored(oauth, db)) as (_, url), Client(url, mode="legacy") as client:
        await authorize_in_browser(await start(client))
    with sqlite3.connect(db) as conn:
        [(name, blob)] = conn.execute("SELECT name, blob FROM tokens").fetchall()
        flipped = bytes(blob[:-1]) + bytes([blob[-1] ^ 1])
        conn.execute("UPDATE tokens SET blob = ? WHERE name = ?", (flipped, name))
    async with serve_master(stored(oauth, db)) as (_, url), Client(url, mode="legacy") as client:
        assert delegation_of(await client.call_tool("cloud__whoami", {}))["type"] == "oauth_delegation"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM tokens").fetchone() == (0,)


def test_persistent_store_without_key_is_a_startup_error(
    oauth: OAuthBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MASTER_MCP_TOKEN_KEY", raising=False)
    with pytest.raises(ConfigError) as info:
        MasterServer(stored(oauth, tmp_path / "t.db"))
    assert "MASTER_MCP_TOKEN_KEY" in str(info.value) and "master-mcp keygen" in str(info.value)
    monkeypatch.setenv("MASTER_MCP_TOKEN_KEY", "too-short")
    with pytest.raises(ConfigError, match="32 bytes"):
        MasterServer(stored(oauth, tmp_path / "t.db"))


def test_per_user_strategy_on_stdio_is_a_config_error(oauth: OAuthBackend) -> None:
    with pytest.raises(ConfigError) as info:
        MasterServer(
            make_config({**stdio_server("local"), "auth_strategy": "delegate_oauth", "auth_config": {"client_id": "x"}})
        )
    assert info.value.problems[0].startswith(
        "servers[0].auth_strategy: delegate_oauth sends credentials as HTTP headers"
    )


def test_auth_config_errors_name_the_key(oauth: OAuthBackend) -> None:
    bad = {
        "id": "x",
        "type": "http",
        "url": oauth.url,
        "auth_strategy": "delegate_oauth",
        "auth_config": {"scopes": "read", "colour": 1},
    }
    with pytest.raises(ConfigError) as info:
        MasterServer(make_config(bad))
    problems = "\n".join(info.value.problems)
    assert "servers[0].auth_config.client_id: Field required" in problems
    assert "servers[0].auth_config.colour: unknown key" in problems
    assert "servers[0].auth_config.scopes:" in problems


async def test_local_mode_answers_only_on_loopback(oauth: OAuthBackend) -> None:
    # No network traffic here: the OAuth routes are called in-process, as a request from another machine
    # would reach them (its address is a documentation address, TEST-NET-1).
    master = MasterServer(make_config(delegated(oauth)))
    assert master.auth.flows is not None
    remote = httpx2.ASGITransport(app=master.auth.flows, client=("192.0.2.10", 50000))
    async with httpx2.AsyncClient(transport=remote, base_url="http://127.0.0.1:8000") as browser:
        _, link = await master.auth.flows.begin(LOCAL_PRINCIPAL, "cloud")
        page = await browser.get(link.removeprefix("http://127.0.0.1:8000"), follow_redirects=True)
    assert "only on this machine" in page.text
    await master.auth.aclose()


async def test_scope_and_provider_parameters(flow: tuple[MasterServer, str, Client]) -> None:
    _, _, client = flow
    async with httpx2.AsyncClient() as browser:
        to_as = await browser.get(await start(client) + "&scope=read+write")
        assert "scope=read+write" in to_as.headers["location"]
        wrong = await browser.get(await start(client) + "&provider=elsewhere", follow_redirects=True)
        assert "does not use provider 'elsewhere'" in error_text(wrong)


# ---- last: nothing secret was logged ----------------------------------------------------------------------------


async def test_zz_no_credential_in_any_log_line(oauth: OAuthBackend) -> None:
    async with httpx2.AsyncClient() as http:
        issued = (await http.get(f"{oauth.base}/admin/issued")).json()
    assert len(issued) > 10
    logs = "\n".join(LEAK_CHECK)
    assert "oauth" in logs.lower()  # the flow really logged
    for secret in [*issued, ALICE, BOB, "master-client-secret-1234", "service-secret-5678"]:
        assert secret not in logs


async def test_a_flow_controller_mounted_alone_answers_503_when_its_store_cannot_be_used() -> None:
    """The controller as another runtime mounts it (no master around it), its flow records in a Redis store that
    cannot be used (never opened here: no Redis server is needed to see the answer)."""
    link = RedisLink("redis://127.0.0.1:1/0", "t:", 0.5)

    async def local(request: Any) -> Any:
        return LOCAL_PRINCIPAL

    controller = OAuthFlowController(
        base_url="http://127.0.0.1:9",
        strategies=lambda server_id: None,
        identify=local,
        store=RedisFlowStore(link, Sealer(secrets.token_bytes(32))),
    )
    transport = httpx2.ASGITransport(app=controller)
    async with httpx2.AsyncClient(transport=transport, base_url="http://127.0.0.1:9") as http:
        answer = await http.get("/oauth/callback?code=c&state=s")
        assert answer.status_code == 503, answer.text
        assert answer.headers["retry-after"] == "5"
        assert answer.json()["error"] == "temporarily_unavailable"
        assert "127.0.0.1:1" in answer.json()["error_description"]
