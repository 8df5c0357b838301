"""Who opens `/oauth/authorize` with inbound `master_oauth`: the browser logs in at the master's authorization server
(tests/backends/jwt_server.py), and a backend token (tests/backends/oauth_server.py) is stored only for the person
the flow was started for; a client's flow needs that person's consent, once per client."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx2
import mcp_types as types
import pytest
from starlette.requests import Request
from starlette.responses import Response

from master_mcp.auth.principal import Principal
from master_mcp.auth.session import SessionCookies
from tests.conftest import JwtAuthServer, OAuthBackend, client_with, make_config, serve_master, text

pytestmark = pytest.mark.anyio

LOGIN_SECRET = "master-login-secret-0123456789"


@pytest.fixture(scope="module")
def auth_server() -> Iterator[JwtAuthServer]:
    server = JwtAuthServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def provider() -> Iterator[OAuthBackend]:
    backend = OAuthBackend()
    yield backend
    backend.stop()


@pytest.fixture(autouse=True)
def _secret(monkeypatch: pytest.MonkeyPatch, no_credentials_in_logs: list[str]) -> None:
    no_credentials_in_logs.append(LOGIN_SECRET)
    monkeypatch.setenv("LOGIN_SECRET", LOGIN_SECRET)


def config_for(auth_server: JwtAuthServer, provider: OAuthBackend) -> Any:
    cloud = {
        "id": "cloud",
        "type": "http",
        "url": provider.url,
        "auth_strategy": "delegate_oauth",
        "auth_config": {"client_id": "master-client", "client_secret": "master-client-secret-1234", "scopes": ["read"]},
    }
    inbound = {
        "mode": "master_oauth",
        "issuer": auth_server.base,
        "client_id": "master-login",
        "client_secret": "env:LOGIN_SECRET",
        "scopes": ["mcp"],
    }
    second = {**cloud, "id": "cloud2"}  # the same provider again: consent is per client, not per server
    return make_config(cloud, second, auth=inbound, store={"type": "memory"})


def register_master(auth_server: JwtAuthServer, base: str) -> None:
    """The master's own client at its AS, with its callback (known once the master listens)."""
    auth_server.admin(
        "clients",
        {"client_id": "master-login", "client_secret": LOGIN_SECRET, "redirect_uris": [f"{base}/oauth/callback"]},
    )


async def browse(browser: httpx2.AsyncClient, url: str, login: str, auth_server: JwtAuthServer) -> httpx2.Response:
    """Follow redirects as a browser would, logging in at the master's AS as `login` when it asks."""
    for _ in range(10):
        if url.startswith(f"{auth_server.base}/authorize?"):
            url = f"{url}&{urlencode({'login': login})}"
        response = await browser.get(url)
        if response.status_code not in (302, 303):
            return response
        location = response.headers["location"]
        url = location if location.startswith("http") else f"{browser.base_url}{location}"
    raise AssertionError("too many redirects")


def browser_for(base: str) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(base_url=base, follow_redirects=False, timeout=15)


async def delegation_url(url: str, token: str, server_id: str = "cloud") -> str:
    async with client_with(url, token) as client:
        result = await client.call_tool(f"{server_id}__authorize", {})
    assert result.is_error and result.structured_content is not None
    return str(result.structured_content["authorization_url"])


async def whoami(url: str, token: str) -> types.CallToolResult:
    async with client_with(url, token) as client:
        return await client.call_tool("cloud__whoami", {})


@asynccontextmanager
async def master_for(auth_server: JwtAuthServer, provider: OAuthBackend) -> AsyncIterator[tuple[str, str]]:
    """A master whose login goes to `auth_server` and whose backend is `provider`, registered there as a client;
    yields its /mcp URL and its base URL."""
    async with serve_master(config_for(auth_server, provider)) as (master, url):
        base = master.config.master.public_base_url
        register_master(auth_server, base)
        yield url, base


async def test_provider_master_logs_the_browser_in(auth_server: JwtAuthServer, provider: OAuthBackend) -> None:
    async with master_for(auth_server, provider) as (_, base):
        async with browser_for(base) as browser:
            to_as = await browser.get(f"{base}/oauth/authorize?provider=master")
            assert to_as.status_code == 302 and to_as.headers["location"].startswith(f"{auth_server.base}/authorize?")
            assert "code_challenge_method=S256" in to_as.headers["location"]
            back = await browser.get(f"{to_as.headers['location']}&login=alice")
            assert back.status_code == 302 and back.headers["location"].startswith(f"{base}/oauth/callback?")
            landed = await browser.get(back.headers["location"])
            assert landed.status_code == 303 and landed.headers["location"] == "/oauth/success?login=1"
            session = [c for c in landed.headers.get_list("set-cookie") if c.startswith("master_mcp_session=")]
            assert len(session) == 1
            for attribute in ("httponly", "path=/", "samesite=lax", "max-age=3600"):
                assert attribute in session[0].lower()
            page = await browser.get(landed.headers["location"])
            assert page.status_code == 200 and "Logged in" in page.text
            # Replaying the login answer fails: its state was single use.
            replay = await browser.get(back.headers["location"])
            assert replay.status_code == 303 and "/oauth/error" in replay.headers["location"]


async def test_delegation_after_login_stores_the_token_for_that_person(
    auth_server: JwtAuthServer, provider: OAuthBackend
) -> None:
    async with master_for(auth_server, provider) as (url, base):
        alice = auth_server.mint(sub="alice", aud=url)
        link = await delegation_url(url, alice)
        async with browser_for(base) as browser:
            # Not logged in yet: the master's AS first, then on to the backend's provider, then back.
            page = await browse(browser, link, "alice", auth_server)
            assert page.status_code == 200 and "Authorized" in page.text, page.text
        result = await whoami(url, alice)
        assert not result.is_error and json.loads(text(result))["subject"].startswith("user-")


async def test_a_link_opened_by_another_logged_in_person_is_refused(
    auth_server: JwtAuthServer, provider: OAuthBackend
) -> None:
    async with master_for(auth_server, provider) as (url, base):
        alice = auth_server.mint(sub="alice", aud=url)
        link = await delegation_url(url, alice)
        async with browser_for(base) as browser:
            page = await browse(browser, link, "bob", auth_server)
            assert page.status_code == 400 and "belongs to another user" in html.unescape(page.text)
        assert (await whoami(url, alice)).structured_content is not None  # still a delegation: nothing stored


async def test_a_callback_reached_by_a_different_logged_in_subject_stores_nothing(
    auth_server: JwtAuthServer, provider: OAuthBackend
) -> None:
    async with master_for(auth_server, provider) as (url, base):
        alice = auth_server.mint(sub="alice", aud=url)
        link = await delegation_url(url, alice)
        async with browser_for(base) as browser:
            await browse(browser, f"{base}/oauth/authorize?provider=master", "alice", auth_server)
            started = await browser.get(link)  # as alice: the flow is on its way to the provider
            assert started.status_code == 302 and started.headers["location"].startswith(provider.base)
            # Meanwhile the browser's session becomes bob's; then the provider's answer arrives.
            await browse(browser, f"{base}/oauth/authorize?provider=master", "bob", auth_server)
            page = await browse(browser, started.headers["location"], "bob", auth_server)
            assert page.status_code == 400
            assert "logged in as someone other than the person" in html.unescape(page.text)
        assert (await whoami(url, alice)).structured_content is not None


async def test_a_forged_session_cookie_counts_as_not_logged_in(
    auth_server: JwtAuthServer, provider: OAuthBackend
) -> None:
    async with master_for(auth_server, provider) as (url, base):
        link = await delegation_url(url, auth_server.mint(sub="alice", aud=url))
        async with browser_for(base) as browser:
            browser.cookies.set("master_mcp_session", "eyJpc3MiOiJ4Iiwic3ViIjoiYWxpY2UifQ.forged", domain="127.0.0.1")
            response = await browser.get(link)
            assert response.status_code == 302 and response.headers["location"].startswith(
                f"{auth_server.base}/authorize"
            )
        async with browser_for(base) as browser:
            # Bytes outside ASCII in the cookie: still just "not logged in", never a server error.
            odd = await browser.get(link, headers={"cookie": b"master_mcp_session=eyJ.\xe9\xff"})
            assert odd.status_code == 302 and odd.headers["location"].startswith(f"{auth_server.base}/authorize")


def _form_values(page: str) -> dict[str, str]:
    return dict(re.findall(r"name='(state|csrf)' value='([^']*)'", page))


async def test_a_client_flow_asks_for_consent_once_per_client(
    auth_server: JwtAuthServer, provider: OAuthBackend
) -> None:
    async with master_for(auth_server, provider) as (url, base):
        token = auth_server.mint(sub="alice", aud=url, client_id="dyn-client-42")
        async with browser_for(base) as browser:
            page = await browse(browser, await delegation_url(url, token), "alice", auth_server)
            assert page.status_code == 200 and "Allow this application?" in page.text
            shown = html.unescape(page.text)
            assert "dyn-client-42" in shown and "cloud" in shown and "read" in shown
            assert f"{provider.base}/authorize" in shown and f"{base}/oauth/callback" in shown
            values = _form_values(page.text)
            forged = await browser.post(
                "/oauth/consent", data={"state": values["state"], "csrf": "x" * 43, "decision": "approve"}
            )
            assert forged.status_code == 303 and "/oauth/error" in forged.headers["location"]
            approved = await browser.post("/oauth/consent", data={**values, "decision": "approve"})
            assert approved.status_code == 303 and approved.headers["location"].startswith(provider.base)
            done = await browse(browser, approved.headers["location"], "alice", auth_server)
            assert "Authorized" in done.text
            # Approval is remembered for (alice, dyn-client-42): a second flow goes straight to the provider.
            again = await browser.get(await delegation_url(url, token, "cloud2"))
            assert again.status_code == 302 and again.headers["location"].startswith(provider.base)
        assert not (await whoami(url, token)).is_error


async def test_denied_consent_stores_nothing(auth_server: JwtAuthServer, provider: OAuthBackend) -> None:
    async with master_for(auth_server, provider) as (url, base):
        token = auth_server.mint(sub="alice", aud=url, client_id="dyn-client-7")
        async with browser_for(base) as browser:
            page = await browse(browser, await delegation_url(url, token), "alice", auth_server)
            denied = await browser.post("/oauth/consent", data={**_form_values(page.text), "decision": "deny"})
            assert denied.status_code == 303 and "did+not+allow" in denied.headers["location"]
            async with browser_for(base) as other:  # another browser holding the form values gets nowhere either
                stolen = await other.post("/oauth/consent", data={**_form_values(page.text), "decision": "approve"})
                assert stolen.status_code == 303 and "/oauth/error" in stolen.headers["location"]
        assert (await whoami(url, token)).structured_content is not None


def test_session_cookie_is_host_prefixed_httponly_lax_on_https() -> None:
    sessions = SessionCookies(b"k" * 32, secure=True)
    response = Response()
    sessions.set(response, Principal(issuer="https://as", subject="alice"))
    header = response.headers["set-cookie"]
    assert header.startswith("__Host-master_mcp_session=")
    for attribute in ("HttpOnly", "Path=/", "SameSite=lax", "Secure"):
        assert attribute.lower() in header.lower()
    assert "domain" not in header.lower()
    value = header.split(";")[0].split("=", 1)[1]
    request = Request({"type": "http", "headers": [(b"cookie", f"__Host-master_mcp_session={value}".encode())]})
    assert sessions.principal(request) == Principal(issuer="https://as", subject="alice")
    other = SessionCookies(b"x" * 32, secure=True)  # another master key: the signature does not hold
    assert other.principal(request) is None
