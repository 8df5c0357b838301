"""Several instances of one HTTP backend (`urls:`): which instance a request goes to, and which are dead.

Health is learnt from traffic: an instance that refuses connections (or answers 502/503/504) is skipped for a
cool-down, then tried again. A request that never reached an instance is sent to the next one; one that did is
never repeated here. A backend that hands out `Mcp-Session-Id`s keeps each session on the instance that issued
it (only that instance knows it); a stateless backend's requests are spread over the live instances.
"""

from __future__ import annotations

import logging
import time
from typing import Final, Literal
from urllib.parse import urlsplit

import httpx2

logger = logging.getLogger(__name__)

Policy = Literal["round_robin", "health"]
COOL_DOWN_S: Final = 5.0


def describe_url(url: str) -> str:
    """An instance as log lines and /readyz show it: no user info, no query (either may hold a credential)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


class Instances:
    """The instances of one backend and what traffic has shown of each; shared by all its sessions."""

    def __init__(self, server_id: str, urls: list[str], policy: Policy, cool_down_s: float = COOL_DOWN_S) -> None:
        self.server_id = server_id
        self.urls = [httpx2.URL(url) for url in urls]
        self.policy = policy
        self._cool_down = cool_down_s
        self._dead_until = [0.0] * len(urls)
        self._next = 0

    def order(self) -> list[int]:
        """Instances to try, best first: live ones (rotated for round robin), then the dead, soonest back first."""
        now = time.monotonic()
        indices = list(range(len(self.urls)))
        if self.policy == "round_robin":
            start = self._next % len(indices)
            indices = indices[start:] + indices[:start]
            self._next += 1
        live = [i for i in indices if self._dead_until[i] <= now]
        dead = sorted((i for i in indices if self._dead_until[i] > now), key=lambda i: self._dead_until[i])
        return live + dead

    def failed(self, index: int, why: str) -> None:
        if self._dead_until[index] <= time.monotonic():
            logger.warning(
                "server %s: instance %s is unavailable (%s); skipping it for %.0fs",
                self.server_id,
                describe_url(str(self.urls[index])),
                why,
                self._cool_down,
            )
        self._dead_until[index] = time.monotonic() + self._cool_down

    def succeeded(self, index: int) -> None:
        self._dead_until[index] = 0.0

    def status(self) -> list[dict[str, object]]:
        now = time.monotonic()
        return [{"url": describe_url(str(url)), "up": self._dead_until[i] <= now} for i, url in enumerate(self.urls)]
