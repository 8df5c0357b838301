"""The master as an OAuth resource server (`master.auth.mode: master_oauth`) against a real JWT-issuing AS.

tests/backends/jwt_server.py runs on loopback with its own key pair; every bad token is minted there the way an
attacker or a broken AS would make it, and sent to a real master over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken
from pydantic import AnyUrl

from master_mcp.config import ConfigError
from tests.conftest import JwtAuthServer, make_config, serve_master, stdio_server

pytestmark = pytest.mark.anyio

AUDIENCE = "urn:master-mcp:test"
SECRET = "master-secret-0123456789"


@pytest.fixture(autouse=True)
def _no_leaks(no_credentials_in_logs: list[str]) -> None:
    no_credentials_in_logs.append(SECRET)


@pytest.fixture(scope="module")
def auth_server() -> Iterator[JwtAuthServer]:
    server = JwtAuthServer()
    server.admin("clients", {"client_id": "master", "client_secret": SECRET})
    yield server
    server.stop()


@pytest.fixture
def fresh_server() -> Iterator[JwtAuthServer]:
    """An AS of its own, for tests that count its JWKS fetches or take the endpoint down."""
    server = JwtAuthServer()
    yield server
    server.stop()


def inbound(server: JwtAuthServer, **extra: Any) -> dict[str, Any]:
    return {
        "mode": "master_oauth",
        "issuer": server.base,
        "audience": AUDIENCE,
        "scopes": ["mcp"],
        "required_scopes": ["mcp"],
        **extra,
    }


def config_for(server: JwtAuthServer, **extra: Any) -> Any:
    return make_config(stdio_server("local"), auth=inbound(server, **extra), store={"type": "memory"})


async def post(url: str, headers: list[tuple[str, str]] | dict[str, str] | None = None) -> httpx2.Response:
    body = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    accept = [("accept", "application/json, text/event-stream")]
    extra = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    async with httpx2.AsyncClient(timeout=15) as http:
        return await http.post(url, json=body, headers=accept + extra)


async def tools_with(url: str, token: str) -> list[str]:
    http = httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30)
    async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
        return [tool.name for tool in (await client.list_tools()).tools]


def challenge(response: httpx2.Response) -> str:
    return response.headers.get("www-authenticate", "")


# ---- accepted tokens --------------------------------------------------------------------------------------------


async def test_a_valid_jwt_is_accepted_and_names_the_principal(auth_server: JwtAuthServer) -> None:
    async with serve_master(config_for(auth_server)) as (master, url):
        token = auth_server.mint(sub="alice", aud=AUDIENCE, scope="mcp read")
        assert "local__echo" in await tools_with(url, token)
        verifier = master.auth.token_verifier
        assert verifier is not None
        access = await verifier.verify_token(token)
        assert access is not None and access.subject == "alice" and set(access.scopes) == {"mcp", "read"}
        assert access.claims == {"iss": auth_server.base, "aud": [AUDIENCE]}


async def test_the_resource_url_is_an_accepted_audience_and_scp_lists_scopes(auth_server: JwtAuthServer) -> None:
    async with serve_master(config_for(auth_server)) as (_master, url):
        token = auth_server.mint(sub="bob", aud=url, scp=["mcp", "write"], drop=["scope"])
        assert "local__echo" in await tools_with(url, token)


async def test_es256_is_allowed_by_default_and_refused_when_not_listed(auth_server: JwtAuthServer) -> None:
    token = auth_server.mint(sub="erin", aud=AUDIENCE, kind="es256")
    async with serve_master(config_for(auth_server)) as (_master, url):
        assert "local__echo" in await tools_with(url, token)
    async with serve_master(config_for(auth_server, algorithms=["RS256"])) as (_master, url):
        response = await post(url, {"authorization": f"Bearer {token}"})
        assert response.status_code == 401 and 'error="invalid_token"' in challenge(response)


# ---- refused tokens: each bad input ---------------------------------------------------------------------------


BAD_TOKENS = {
    "expired": {"exp_in": -3600},
    "not_yet_valid": {"nbf_in": 3600},
    "wrong_issuer": {"iss": "http://127.0.0.1:1/elsewhere"},
    "wrong_audience": {"aud": "http://127.0.0.1:1/another-server"},
    "bad_signature": {"kind": "bad_signature"},
    "alg_none": {"kind": "alg_none"},
    "hs256_signed_with_the_public_key": {"kind": "hs256_public_key"},
    "no_subject": {"drop": ["sub"]},
    "es256_naming_the_rs256_key": {"kind": "es256_with_rsa_kid"},
}


@pytest.mark.parametrize("case", list(BAD_TOKENS))
async def test_a_bad_token_gets_401_invalid_token(auth_server: JwtAuthServer, case: str) -> None:
    async with serve_master(config_for(auth_server)) as (master, url):
        good = auth_server.mint(aud=AUDIENCE)
        assert await tools_with(url, good)  # the keys are loaded; the refusal below is about the token
        bad = auth_server.mint(**{"aud": AUDIENCE, **BAD_TOKENS[case]})
        response = await post(url, {"authorization": f"Bearer {bad}"})
        assert response.status_code == 401
        header = challenge(response)
        assert header.startswith("Bearer ") and 'error="invalid_token"' in header
        assert (
            f'resource_metadata="{master.config.master.public_base_url}/.well-known/oauth-protected-resource/mcp"'
            in header
        )
        assert 'scope="mcp"' in header
        assert response.json()["error"] == "invalid_token"


async def test_unknown_kid_refetches_once_then_401(fresh_server: JwtAuthServer) -> None:
    async with serve_master(config_for(fresh_server)) as (_master, url):
        assert await tools_with(url, fresh_server.mint(aud=AUDIENCE))
        before = fresh_server.admin("jwks")["fetches"]
        assert before == 1
        for _ in range(5):  # each with a new made-up kid: one refetch in all, not one each
            response = await post(
                url, {"authorization": f"Bearer {fresh_server.mint(aud=AUDIENCE, kind='unknown_kid')}"}
            )
            assert response.status_code == 401
        assert fresh_server.admin("jwks")["fetches"] == before + 1


async def test_jwks_down_cached_keys_keep_working_without_a_request_storm(fresh_server: JwtAuthServer) -> None:
    async with serve_master(config_for(fresh_server)) as (_master, url):
        good = fresh_server.mint(aud=AUDIENCE)
        assert await tools_with(url, good)
        fresh_server.admin("jwks", {"up": False})
        before = fresh_server.admin("jwks")["fetches"]
        for _ in range(5):
            unknown = fresh_server.mint(aud=AUDIENCE, kind="unknown_kid")
            assert (await post(url, {"authorization": f"Bearer {unknown}"})).status_code == 401
        assert fresh_server.admin("jwks")["fetches"] - before <= 1
        assert await tools_with(url, fresh_server.mint(sub="carol", aud=AUDIENCE))  # held keys still verify


async def test_jwks_down_from_the_start_is_401_not_a_storm(fresh_server: JwtAuthServer) -> None:
    fresh_server.admin("jwks", {"up": False})
    async with serve_master(config_for(fresh_server)) as (_master, url):
        for _ in range(5):
            response = await post(url, {"authorization": f"Bearer {fresh_server.mint(aud=AUDIENCE)}"})
            assert response.status_code == 401
        assert fresh_server.admin("jwks")["fetches"] == 1


# ---- the challenge, malformed headers, scopes -----------------------------------------------------------------


async def test_no_token_gets_401_pointing_at_the_metadata(auth_server: JwtAuthServer) -> None:
    async with serve_master(config_for(auth_server)) as (master, url):
        response = await post(url)
        assert response.status_code == 401
        base = master.config.master.public_base_url
        assert challenge(response) == (
            f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp", scope="mcp"'
        )


MALFORMED = {
    "bearer_without_token": [("authorization", "Bearer")],
    "bearer_with_only_padding": [("authorization", "Bearer ===")],
    "two_tokens": [("authorization", "Bearer abc.def ghi.jkl")],
    "wrong_scheme": [("authorization", "Basic YWxpY2U6c2VjcmV0")],
    "no_scheme": [("authorization", "abc.def.ghi")],
    "bad_characters": [("authorization", "Bearer abc,def")],
    "two_headers": [("authorization", "Bearer abc"), ("authorization", "Bearer def")],
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_a_malformed_authorization_header_gets_400(auth_server: JwtAuthServer, case: str) -> None:
    async with serve_master(config_for(auth_server)) as (_master, url):
        response = await post(url, MALFORMED[case])
        assert response.status_code == 400
        assert 'error="invalid_request"' in challenge(response)
        assert response.json()["error"] == "invalid_request"


async def test_missing_scope_gets_403_insufficient_scope(auth_server: JwtAuthServer) -> None:
    async with serve_master(config_for(auth_server)) as (_master, url):
        token = auth_server.mint(aud=AUDIENCE, scope="read")
        response = await post(url, {"authorization": f"Bearer {token}"})
        assert response.status_code == 403
        assert 'error="insufficient_scope"' in challenge(response) and 'scope="mcp"' in challenge(response)


async def test_protected_resource_metadata_in_both_forms(auth_server: JwtAuthServer) -> None:
    async with serve_master(config_for(auth_server)) as (master, url):
        base = master.config.master.public_base_url
        async with httpx2.AsyncClient() as http:
            for path in ("/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"):
                metadata = (await http.get(f"{base}{path}")).json()
                assert metadata == {
                    "resource": url,
                    "authorization_servers": [auth_server.base],
                    "scopes_supported": ["mcp"],
                    "bearer_methods_supported": ["header"],
                    "resource_name": "master-mcp",
                }


async def test_static_tokens_get_the_same_challenges() -> None:
    tokens = [{"token": "alice-token-0123456789", "subject": "alice", "scopes": ["mcp"]}]
    config = make_config(stdio_server("local"), auth={"mode": "static_tokens", "tokens": tokens})
    async with serve_master(config) as (master, url):
        missing = await post(url)
        assert missing.status_code == 401 and challenge(missing) == 'Bearer realm="master-mcp"'
        assert (await post(url, {"authorization": "Bearer"})).status_code == 400
        wrong = await post(url, {"authorization": "Bearer not-a-known-token"})
        assert wrong.status_code == 401 and 'error="invalid_token"' in challenge(wrong)
        async with httpx2.AsyncClient() as http:  # no authorization server, so no metadata to point at
            base = master.config.master.public_base_url
            assert (await http.get(f"{base}/.well-known/oauth-protected-resource")).status_code == 404


# ---- introspection ---------------------------------------------------------------------------------------------


def introspecting(server: JwtAuthServer, monkeypatch: pytest.MonkeyPatch, **extra: Any) -> Any:
    monkeypatch.setenv("MASTER_SECRET", SECRET)
    return config_for(
        server,
        client_id="master",
        client_secret="env:MASTER_SECRET",
        introspection_endpoint=f"{server.base}/introspect",
        **extra,
    )


async def test_opaque_tokens_are_introspected_and_cached(
    fresh_server: JwtAuthServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh_server.admin("clients", {"client_id": "master", "client_secret": SECRET})
    async with serve_master(introspecting(fresh_server, monkeypatch)) as (master, url):
        opaque = fresh_server.mint(sub="dora", aud=AUDIENCE, opaque=True)
        assert await tools_with(url, opaque)
        counted = fresh_server.admin("jwks")["introspections"]
        assert counted >= 1
        assert await tools_with(url, opaque)
        assert fresh_server.admin("jwks")["introspections"] == counted  # answered from the cache
        unknown = await post(url, {"authorization": "Bearer opaque-never-issued"})
        assert unknown.status_code == 401
        expired = fresh_server.mint(aud=AUDIENCE, opaque=True, exp_in=-60)
        assert (await post(url, {"authorization": f"Bearer {expired}"})).status_code == 401
        elsewhere = fresh_server.mint(aud="http://127.0.0.1:1/other", opaque=True)
        assert (await post(url, {"authorization": f"Bearer {elsewhere}"})).status_code == 401
        # An introspection answer that names no audience does not say the token is for the master.
        nobody = fresh_server.mint(aud=[], opaque=True)
        assert (await post(url, {"authorization": f"Bearer {nobody}"})).status_code == 401
        assert SECRET in master.config.secrets


async def test_introspection_only_also_takes_jwts(auth_server: JwtAuthServer, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve_master(introspecting(auth_server, monkeypatch)) as (_master, url):
        # Only introspection_endpoint configured: the JWT is asked about, not checked against a JWKS.
        before = auth_server.admin("jwks")["introspections"]
        assert await tools_with(url, auth_server.mint(aud=AUDIENCE))
        assert auth_server.admin("jwks")["introspections"] > before


# ---- configuration ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "problem"),
    [
        ({"algorithms": ["none"]}, "master.auth.algorithms: 'none' is not allowed"),
        ({"algorithms": ["RS256", "HS256"]}, "master.auth.algorithms: 'HS256' is not allowed"),
        ({"issuer": None}, "master.auth: mode 'master_oauth' needs 'issuer'"),
        ({"jwks_uri": "ftp://x/jwks"}, "master.auth.jwks_uri: must start with http:// or https://"),
        ({"introspection_endpoint": "http://127.0.0.1:1/i"}, "'introspection_endpoint' needs 'client_id'"),
        (
            {"mode": "static_tokens", "tokens": [{"token": "x" * 20, "subject": "a"}]},
            "only used with mode 'master_oauth'",
        ),
    ],
)
def test_config_errors_name_the_key(auth: dict[str, Any], problem: str) -> None:
    settings = {"mode": "master_oauth", "issuer": "http://127.0.0.1:1", **auth}
    with pytest.raises(ConfigError) as caught:
        make_config(auth=settings)
    assert problem in str(caught.value)


def test_client_secret_stays_out_of_reprs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_SECRET", SECRET)
    config = make_config(
        auth={
            "mode": "master_oauth",
            "issuer": "http://127.0.0.1:1",
            "client_id": "m",
            "client_secret": "env:MASTER_SECRET",
        }
    )
    assert SECRET not in repr(config) and SECRET in config.secrets


# ---- an SDK client that knows OAuth, end to end ------------------------------------------------------------------


class MemoryTokens:
    """The SDK client's token storage, in memory."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


class Browser:
    """Stands in for the person at the AS: opens the authorization URL logged in as `login`, catches the redirect."""

    def __init__(self, login: str) -> None:
        self.login = login
        self.answer: AuthorizationCodeResult | None = None
        self.opened: list[str] = []

    async def redirect(self, url: str) -> None:
        self.opened.append(url)
        async with httpx2.AsyncClient(follow_redirects=False) as http:
            response = await http.get(f"{url}&{urlencode({'login': self.login})}")
        assert response.status_code == 302, response.text
        query = parse_qs(urlsplit(response.headers["location"]).query)
        self.answer = AuthorizationCodeResult(code=query["code"][0], state=query["state"][0], iss=query["iss"][0])

    async def callback(self) -> AuthorizationCodeResult:
        assert self.answer is not None
        return self.answer


async def test_sdk_client_with_oauth_provider_end_to_end(auth_server: JwtAuthServer) -> None:
    """401 -> RFC 9728 discovery -> the AS (registration, code + PKCE) -> a JWT for the master -> tools work."""
    config = make_config(
        stdio_server("local"),
        auth=inbound(auth_server, audience=None),  # only the master's resource URL is an accepted audience
        store={"type": "memory"},
    )
    async with serve_master(config) as (master, url):
        browser = Browser("alice")
        storage = MemoryTokens()
        provider = OAuthClientProvider(
            server_url=url,
            client_metadata=OAuthClientMetadata(
                client_name="sdk-test", redirect_uris=[AnyUrl("http://127.0.0.1:1/callback")]
            ),
            storage=storage,
            redirect_handler=browser.redirect,
            callback_handler=browser.callback,
        )
        http = httpx2.AsyncClient(auth=provider, timeout=30)
        async with Client(streamable_http_client(url, http_client=http), mode="legacy") as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            result = await client.call_tool("local__echo", {"text": "hi"})
        assert "local__echo" in names and not result.is_error
        assert len(browser.opened) == 1 and browser.opened[0].startswith(f"{auth_server.base}/authorize?")
        assert "scope=mcp" in browser.opened[0]
        assert storage.tokens is not None and storage.client is not None
        verifier = master.auth.token_verifier
        assert verifier is not None
        access = await verifier.verify_token(storage.tokens.access_token)
        assert access is not None and access.subject == "alice"
        assert access.claims == {"iss": auth_server.base, "aud": [url], "client_id": storage.client.client_id}
