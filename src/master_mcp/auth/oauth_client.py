"""The master as an OAuth client of a backend's provider: discovery, code exchange, refresh, client credentials."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx2
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    build_protected_resource_metadata_discovery_urls,
)
from mcp.shared.auth import OAuthMetadata, ProtectedResourceMetadata
from pydantic import ValidationError

from master_mcp.auth.store import StoredToken

logger = logging.getLogger(__name__)

_TIMEOUT = httpx2.Timeout(15.0)


class OAuthError(Exception):
    """A provider refused or could not be reached; the message is safe to show (no credential in it)."""


@dataclass(frozen=True, slots=True)
class ProviderEndpoints:
    authorization_endpoint: str
    token_endpoint: str
    issuer: str | None = None
    scopes_supported: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    client_id: str
    client_secret: str | None = None

    def form(self) -> dict[str, str]:
        # client_secret_post: the one client authentication every provider here accepts, and the simplest.
        out = {"client_id": self.client_id}
        if self.client_secret:
            out["client_secret"] = self.client_secret
        return out


def same_url(a: str, b: str) -> bool:
    """Two spellings of one resource URL (a trailing slash aside), as audiences and resource indicators compare."""
    return a.rstrip("/") == b.rstrip("/")


def http_client() -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=_TIMEOUT, follow_redirects=False)


async def _first_json(http: httpx2.AsyncClient, urls: list[str], model: type[Any]) -> Any | None:
    for url in urls:
        try:
            response = await http.get(url, headers={"accept": "application/json"})
        except httpx2.HTTPError as exc:
            logger.info("metadata discovery: %s unreachable (%s)", url, type(exc).__name__)
            continue
        if response.status_code != 200:
            continue
        try:
            return model.model_validate_json(response.content)
        except ValidationError:
            logger.warning("metadata discovery: %s returned invalid metadata", url)
    return None


async def discover(http: httpx2.AsyncClient, *, resource_url: str | None, issuer: str | None) -> ProviderEndpoints:
    """RFC 9728 protected-resource metadata of the backend, then RFC 8414 / OIDC metadata of its issuer."""
    if issuer is None and resource_url is not None:
        prm = await _first_json(
            http, build_protected_resource_metadata_discovery_urls(None, resource_url), ProtectedResourceMetadata
        )
        if prm is not None:
            issuer = str(prm.authorization_servers[0])
    if issuer is None:
        raise OAuthError("no issuer given and the backend publishes no protected-resource metadata")
    metadata = await _first_json(
        http, build_oauth_authorization_server_metadata_discovery_urls(issuer, issuer), OAuthMetadata
    )
    if metadata is None:
        raise OAuthError(f"no authorization server metadata found for issuer {issuer}")
    return ProviderEndpoints(
        authorization_endpoint=str(metadata.authorization_endpoint),
        token_endpoint=str(metadata.token_endpoint),
        issuer=str(metadata.issuer),
        scopes_supported=tuple(metadata.scopes_supported or ()),
    )


async def server_metadata(http: httpx2.AsyncClient, issuer: str) -> dict[str, Any]:
    """RFC 8414 (or OIDC) metadata of `issuer`, as a mapping: it may name endpoints the SDK's model leaves out
    (`jwks_uri`). The document must name the issuer it was asked for (RFC 8414 section 3.3)."""
    for url in build_oauth_authorization_server_metadata_discovery_urls(issuer, issuer):
        try:
            response = await http.get(url, headers={"accept": "application/json"})
            document = response.json() if response.status_code == 200 else None
        except (httpx2.HTTPError, ValueError):
            continue
        if isinstance(document, dict):
            if str(document.get("issuer", "")).rstrip("/") != issuer.rstrip("/"):
                raise OAuthError(f"metadata at {url} names another issuer")
            return document
    raise OAuthError(f"no authorization server metadata found for issuer {issuer}")


def authorization_url(
    endpoint: str, client_id: str, redirect_uri: str, state: str, code_challenge: str, extra: dict[str, str]
) -> str:
    """The authorization-code request with PKCE (S256, always); `extra` adds parameters but overrides none of these."""
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "state": state,
        "code_challenge": code_challenge,
        "code_challenge_method": "S256",
    }
    params |= {key: value for key, value in extra.items() if key not in params}
    separator = "&" if "?" in endpoint else "?"
    return f"{endpoint}{separator}{urlencode(params)}"


async def exchange_code(
    http: httpx2.AsyncClient,
    token_endpoint: str,
    client: ClientCredentials,
    *,
    code: str,
    code_verifier: str,
    redirect_uri: str,
    resource: str | None,
) -> StoredToken:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "code_verifier": code_verifier,
    }
    if resource:
        form["resource"] = resource
    return await token_request(http, token_endpoint, form, client)


async def token_request(
    http: httpx2.AsyncClient,
    token_endpoint: str,
    form: dict[str, str],
    client: ClientCredentials,
    previous: StoredToken | None = None,
) -> StoredToken:
    """POST a grant to the token endpoint; an `OAuthError` names the grant and the provider's error code only."""
    grant = form.get("grant_type", "?")
    try:
        response = await http.post(
            token_endpoint, data={**form, **client.form()}, headers={"accept": "application/json"}
        )
    except httpx2.HTTPError as exc:
        raise OAuthError(f"token endpoint unreachable ({type(exc).__name__}) for grant {grant}") from None
    try:
        data = response.json()
    except ValueError:
        data = {}
    if response.status_code != 200 or not isinstance(data, dict):
        code = data.get("error", "unknown_error") if isinstance(data, dict) else "unknown_error"
        raise OAuthError(f"token endpoint refused grant {grant}: HTTP {response.status_code} {code}")
    try:
        return StoredToken.from_response(data, previous)
    except ValueError as exc:
        raise OAuthError(f"token endpoint answered grant {grant} without a usable token: {exc}") from None
