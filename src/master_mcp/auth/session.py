"""The browser session of a person logged in at the master's authorization server: a signed, short-lived cookie.

The cookie holds only who (issuer, subject) and until when; an HMAC with a key derived from the master key makes
it unforgeable. `__Host-` where the master is served over HTTPS (no Domain, Path=/, Secure), HttpOnly, SameSite=Lax.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time

from starlette.requests import Request
from starlette.responses import Response

from master_mcp.auth.principal import Principal

SESSION_TTL_S = 3600
_LABEL = b"master-mcp browser session v1"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCookies:
    def __init__(self, master_key: bytes, *, secure: bool, ttl_s: int = SESSION_TTL_S) -> None:
        # A key of its own, so a cookie signature can never be mistaken for anything sealed with the master key.
        self._key = hmac.new(master_key, _LABEL, hashlib.sha256).digest()
        self._secure = secure
        self._ttl = ttl_s
        self.name = "__Host-master_mcp_session" if secure else "master_mcp_session"

    def _sign(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode(), hashlib.sha256).digest())

    def issue(self, principal: Principal) -> str:
        body = {"iss": principal.issuer, "sub": principal.subject, "exp": int(time.time()) + self._ttl}
        payload = _b64(json.dumps(body, separators=(",", ":")).encode())
        return f"{payload}.{self._sign(payload)}"

    def principal(self, request: Request) -> Principal | None:
        """Who this browser is logged in as, or None (no cookie, a forged or expired one)."""
        value = request.cookies.get(self.name, "")
        payload, _, signature = value.partition(".")
        # Bytes: a cookie is decoded as latin-1, and comparing non-ASCII strings would raise instead of refuse.
        if not payload or not hmac.compare_digest(signature.encode("utf-8"), self._sign(payload).encode("utf-8")):
            return None
        try:
            body = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(body, dict) or not isinstance(body.get("exp"), int) or body["exp"] < time.time():
            return None
        return Principal(issuer=str(body["iss"]), subject=str(body["sub"]))

    def set(self, response: Response, principal: Principal) -> None:
        response.set_cookie(
            self.name,
            self.issue(principal),
            max_age=self._ttl,
            path="/",
            httponly=True,
            samesite="lax",
            secure=self._secure,
        )

    def csrf(self, request: Request, purpose: str) -> str:
        """A token bound to this browser's session cookie and to `purpose` (a form cannot be replayed elsewhere)."""
        value = request.cookies.get(self.name, "")
        return self._sign(f"csrf|{value}|{purpose}")
