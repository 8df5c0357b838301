"""A custom auth strategy: every request to the backend carries an HMAC-SHA256 signature of itself.

    X-Signature-Timestamp: <unix seconds>
    X-Signature: sha256=<hex of HMAC(secret, "{timestamp}\\n{method}\\n{path}\\n{body}")>

A strategy is a class with `name`, `per_principal`, `shared_auth()` and `prepare(principal)`; its credential
is an `httpx2.Auth` flow, so the master's connection to the backend applies it to every request it makes.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Generator
from typing import Any, ClassVar

import httpx2
from pydantic import Field

from master_mcp.auth import Decision, Forward, Principal, StrategyConfig, StrategyContext


def signature(secret: bytes, timestamp: str, method: str, path: str, body: bytes) -> str:
    message = b"\n".join([timestamp.encode(), method.upper().encode(), path.encode(), body])
    return "sha256=" + hmac.new(secret, message, hashlib.sha256).hexdigest()


class HmacSigner(httpx2.Auth):
    requires_request_body = True

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def auth_flow(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, None]:
        timestamp = str(int(time.time()))
        request.headers["X-Signature-Timestamp"] = timestamp
        request.headers["X-Signature"] = signature(
            self._secret, timestamp, request.method, request.url.raw_path.decode(), request.content
        )
        yield request


class HmacConfig(StrategyConfig):
    secret: str = Field(min_length=16, repr=False)


class HmacAuth:
    """`auth_strategy: hmac_signed` with `auth_config: {secret: env:VAR}`."""

    name: ClassVar[str] = "hmac_signed"
    per_principal: ClassVar[bool] = False  # one shared key: one shared backend session

    def __init__(self, server_id: str, config: dict[str, Any], context: StrategyContext) -> None:
        self._auth = HmacSigner(HmacConfig.model_validate(config).secret.encode())

    def shared_auth(self) -> httpx2.Auth | None:
        return self._auth

    async def prepare(self, principal: Principal) -> Decision:
        return Forward(None)
