"""Who is calling the master: the local user, or the subject a configured bearer token stands for."""

from __future__ import annotations

import hmac

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken, TokenVerifier

from master_mcp.auth.principal import LOCAL_PRINCIPAL, Principal
from master_mcp.config import InboundAuth

STATIC_ISSUER = "master-mcp:static"


class StaticTokenVerifier(TokenVerifier):
    """Bearer tokens from `master.auth.tokens`, each mapped to a subject; compared in constant time."""

    def __init__(self, settings: InboundAuth) -> None:
        self._entries = [(t.token.encode(), t.subject, list(t.scopes)) for t in settings.tokens]

    async def verify_token(self, token: str) -> AccessToken | None:
        presented = token.encode()
        match = None
        for secret, subject, scopes in self._entries:
            # Check every entry, so the time taken does not tell which one (if any) was close.
            if hmac.compare_digest(secret, presented):
                match = (subject, scopes)
        if match is None:
            return None
        subject, scopes = match
        return AccessToken(
            token=token, client_id=subject, scopes=scopes, subject=subject, claims={"iss": STATIC_ISSUER}
        )


def principal_from(access: AccessToken) -> Principal:
    claims = access.claims or {}
    issuer = str(claims.get("iss") or STATIC_ISSUER)
    audiences = claims.get("aud")
    return Principal(
        issuer=issuer,
        subject=access.subject or access.client_id,
        scopes=frozenset(access.scopes),
        audiences=frozenset(audiences) if isinstance(audiences, list) else frozenset(),
        client_id=str(claims["client_id"]) if claims.get("client_id") else None,
        token=access.token,
    )


def current_principal() -> Principal:
    """The principal of the request being served: the verified bearer token's, else the local user."""
    access = get_access_token()
    return principal_from(access) if access is not None else LOCAL_PRINCIPAL
