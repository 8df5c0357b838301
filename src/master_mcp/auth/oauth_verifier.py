"""Inbound `master_oauth`: bearer tokens of the master's authorization server, verified as JWTs or by introspection.

JWT: the signature against the AS's JWKS (an allow-list of asymmetric algorithms), `iss`, `aud` (the master's
resource URL or the configured `audience`), `exp` / `nbf` with a small leeway. A token that is not a JWT (or every
token, when only `introspection_endpoint` is known) is asked about at the RFC 7662 introspection endpoint; positive
answers are cached briefly, never past the token's own expiry, keyed by a digest of the token.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import anyio
import httpx2
import jwt
from mcp.server.auth.provider import AccessToken, TokenVerifier

from master_mcp.auth.jwks import JwksCache, JwksError
from master_mcp.auth.oauth_client import ClientCredentials, OAuthError, same_url, server_metadata
from master_mcp.config import InboundAuth

logger = logging.getLogger(__name__)

LEEWAY_S = 30
INTROSPECTION_TTL_S = 60.0
_INTROSPECTION_CACHE = 10_000


class TokenRejected(Exception):
    """Why a bearer token was refused; safe to log (never holds the token)."""


@dataclass(frozen=True, slots=True)
class InboundEndpoints:
    """The master's AS as configured, with what was left out filled in from its RFC 8414 metadata."""

    issuer: str
    authorization_endpoint: str | None
    token_endpoint: str | None
    jwks_uri: str | None
    introspection_endpoint: str | None


class MasterProvider:
    """The master's own authorization server: endpoints discovered once (explicit keys win), on first use."""

    def __init__(self, settings: InboundAuth, http: httpx2.AsyncClient) -> None:
        assert settings.issuer is not None
        self.settings = settings
        self.http = http
        self._endpoints: InboundEndpoints | None = None
        self._lock = anyio.Lock()

    @property
    def issuer(self) -> str:
        assert self.settings.issuer is not None
        return self.settings.issuer

    @property
    def client(self) -> ClientCredentials | None:
        return (
            ClientCredentials(self.settings.client_id, self.settings.client_secret) if self.settings.client_id else None
        )

    async def endpoints(self) -> InboundEndpoints:
        async with self._lock:
            if self._endpoints is None:
                s = self.settings
                explicit = (s.authorization_endpoint, s.token_endpoint, s.jwks_uri, s.introspection_endpoint)
                found: dict[str, Any] = {}
                if any(value is None for value in explicit):
                    found = await server_metadata(self.http, self.issuer)

                def pick(value: str | None, key: str) -> str | None:
                    other = found.get(key)
                    return value if value is not None else (str(other) if isinstance(other, str) else None)

                # Either verification key given explicitly: tokens are verified only the way the config says.
                chosen = s.jwks_uri is not None or s.introspection_endpoint is not None
                jwks_uri = s.jwks_uri if chosen else pick(None, "jwks_uri")
                introspection = s.introspection_endpoint if chosen else pick(None, "introspection_endpoint")
                self._endpoints = InboundEndpoints(
                    issuer=self.issuer,
                    authorization_endpoint=pick(s.authorization_endpoint, "authorization_endpoint"),
                    token_endpoint=pick(s.token_endpoint, "token_endpoint"),
                    jwks_uri=jwks_uri,
                    # Introspection needs the master's own client credentials; without them it cannot be used.
                    introspection_endpoint=introspection if s.client_secret else None,
                )
            return self._endpoints


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [str(a) for a in aud] if isinstance(aud, list) else []


def _scopes(claims: dict[str, Any]) -> list[str]:
    scope = claims.get("scope")
    if isinstance(scope, str):
        return scope.split()
    scp = claims.get("scp")
    if isinstance(scp, list):
        return [str(s) for s in scp]
    return scp.split() if isinstance(scp, str) else []


def _looks_like_jwt(token: str) -> bool:
    try:
        jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        return False
    return True


class OAuthTokenVerifier(TokenVerifier):
    """The SDK's `TokenVerifier` for `master.auth.mode: master_oauth`; a refusal is logged with its reason."""

    def __init__(self, provider: MasterProvider, *, resource: str) -> None:
        self.provider = provider
        settings = provider.settings
        self.accepted_audiences = [resource] + ([settings.audience] if settings.audience else [])
        self._algorithms = list(settings.algorithms)
        self._jwks: JwksCache | None = None
        self._introspected: OrderedDict[str, tuple[dict[str, Any], float]] = OrderedDict()

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await self.claims(token)
        except TokenRejected as exc:
            logger.info("bearer token refused: %s", exc)
            return None
        subject = str(claims["sub"])
        expires = claims.get("exp")
        client = claims.get("client_id") or claims.get("azp")
        # Only what the master uses travels on: never the whole claim set.
        kept: dict[str, Any] = {"iss": str(claims["iss"]), "aud": _audiences(claims)}
        if client:
            kept["client_id"] = str(client)
        return AccessToken(
            token=token,
            client_id=str(client or subject),
            scopes=_scopes(claims),
            expires_at=int(expires) if isinstance(expires, int | float) else None,
            subject=subject,
            claims=kept,
        )

    async def claims(self, token: str) -> dict[str, Any]:
        """The verified claims of `token`, or `TokenRejected` saying why not."""
        try:
            endpoints = await self.provider.endpoints()
        except OAuthError as exc:
            raise TokenRejected(f"the master's authorization server is unknown: {exc}") from None
        as_jwt = endpoints.jwks_uri is not None and _looks_like_jwt(token)
        if as_jwt and endpoints.jwks_uri is not None:
            if self._jwks is None:
                self._jwks = JwksCache(self.provider.http, endpoints.jwks_uri)
            claims = await self._verify_jwt(token, self._jwks)
        elif endpoints.introspection_endpoint is not None:
            claims = await self._introspect(token, endpoints.introspection_endpoint)
        else:
            raise TokenRejected("not a JWT, and no introspection endpoint is configured")
        # Every token must name the master as its audience, introspected or not: a token the same AS issued for
        # another resource server is not one for the master (MCP authorization, audience validation).
        self._check_claims(claims)
        return claims

    async def _verify_jwt(self, token: str, keys: JwksCache) -> dict[str, Any]:
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if alg not in self._algorithms:
            raise TokenRejected(f"signing algorithm {alg!r} is not allowed")
        kid = header.get("kid")
        try:
            key = await keys.key(kid if isinstance(kid, str) else None)
        except JwksError as exc:
            raise TokenRejected(str(exc)) from None
        if key.alg is not None and key.alg != alg:
            raise TokenRejected(f"key {kid!r} is for {key.alg}, the token says {alg}")
        try:
            # The raw key with the header's (allowed) algorithm: a key of another family fails to verify.
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "sub"], "verify_aud": False, "verify_iss": False},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("not yet valid (nbf)") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("bad signature") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected(f"invalid JWT ({type(exc).__name__})") from None
        return claims

    def _check_claims(self, claims: dict[str, Any]) -> None:
        """What both paths must show: the right issuer and subject, and an audience that names the master."""
        if not same_url(str(claims.get("iss")), self.provider.issuer):
            raise TokenRejected("issued by another issuer")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise TokenRejected("no subject")
        audiences = _audiences(claims)
        if not any(same_url(a, accepted) for a in audiences for accepted in self.accepted_audiences):
            raise TokenRejected("issued for another audience")

    async def _introspect(self, token: str, endpoint: str) -> dict[str, Any]:
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._introspected.get(digest)
        now = time.time()
        if cached is not None and cached[1] > now:
            return cached[0]
        client = self.provider.client
        assert client is not None  # configuration requires it with an introspection endpoint
        form = {"token": token, "token_type_hint": "access_token", **client.form()}
        try:
            response = await self.provider.http.post(endpoint, data=form, headers={"accept": "application/json"})
            answer = response.json() if response.status_code == 200 else None
        except (httpx2.HTTPError, ValueError):
            raise TokenRejected("the introspection endpoint cannot be reached") from None
        if not isinstance(answer, dict):
            raise TokenRejected(f"the introspection endpoint answered HTTP {response.status_code}")
        if answer.get("active") is not True:
            raise TokenRejected("inactive (introspection)")
        expires, not_before = answer.get("exp"), answer.get("nbf")
        if isinstance(expires, int | float) and expires + LEEWAY_S < now:
            raise TokenRejected("expired")
        if isinstance(not_before, int | float) and not_before - LEEWAY_S > now:
            raise TokenRejected("not yet valid (nbf)")
        answer.setdefault("iss", self.provider.issuer)
        until = now + INTROSPECTION_TTL_S
        if isinstance(expires, int | float):
            until = min(until, float(expires))
        self._introspected[digest] = (answer, until)
        while len(self._introspected) > _INTROSPECTION_CACHE:
            self._introspected.popitem(last=False)
        return answer
