"""Who is calling: the identity every front request carries down to the auth strategies."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Principal:
    issuer: str
    subject: str
    scopes: frozenset[str] = frozenset()
    # The verified token's `aud` values (empty for a static token): which backends it may be forwarded to.
    audiences: frozenset[str] = field(default=frozenset(), compare=False)
    # The OAuth client the caller's token was issued to (master_oauth): whose consent a delegation needs.
    client_id: str | None = field(default=None, compare=False)
    # The client's own bearer token; repr=False keeps it out of every log line and traceback.
    token: str | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.issuer, self.subject)


LOCAL_PRINCIPAL = Principal(issuer="local", subject="local-user")
