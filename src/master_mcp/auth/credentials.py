"""Backend credentials as an httpx2 `Auth` flow: put the bearer token on, and on a 401 refresh once and retry."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Protocol

import httpx2


class CredentialSource(Protocol):
    async def current(self) -> str | None:
        """The access token to send now (refreshed first if it is known to be expired); None when there is none."""
        ...

    async def refresh(self) -> str | None:
        """After a 401: a new token, or None once refreshing failed (the source then drops what it had)."""
        ...


class BearerAuth(httpx2.Auth):
    def __init__(self, source: CredentialSource) -> None:
        self.source = source
        # Set once the backend refused the credential even after a refresh; the connection reads it to tell
        # "your authorization is gone" apart from other failures.
        self.rejected = False

    async def async_auth_flow(self, request: httpx2.Request) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        token = await self.source.current()
        if token is not None:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code != 401:
            self.rejected = False
            return
        fresh = await self.source.refresh()
        if fresh is None or fresh == token:
            self.rejected = True
            return
        request.headers["Authorization"] = f"Bearer {fresh}"
        response = yield request
        self.rejected = response.status_code == 401


class StaticSource:
    """A token that cannot be refreshed (a configured static token, or a client's own token)."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    async def current(self) -> str | None:
        return self.token

    async def refresh(self) -> str | None:
        return None
