"""Who is calling: the identity every front request carries down to the auth strategies."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Principal:
    issuer: str
    subject: str
    scopes: frozenset[str] = frozenset()
    # The client's own bearer token; repr=False keeps it out of every log line and traceback.
    token: str | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.issuer, self.subject)


LOCAL_PRINCIPAL = Principal(issuer="local", subject="local-user")
