"""What one backend offers: the lists it answered at discovery, kept as the raw dicts it sent."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

Json = dict[str, Any]


@dataclass(slots=True)
class Listing:
    """What one backend offers, as the raw dicts it sent (so unknown fields pass unchanged)."""

    tools: list[Json] = field(default_factory=list)
    resources: list[Json] = field(default_factory=list)
    templates: list[Json] = field(default_factory=list)
    prompts: list[Json] = field(default_factory=list)

    @staticmethod
    def union(listings: Sequence[Listing]) -> Listing:
        """Everything any of the listings offers, the first listing's entry winning for a name (or URI) in several:
        a backend that shows some tools only to clients with, say, sampling is listed with them."""

        def merged(attr: str, key: str) -> list[Json]:
            seen: set[Any] = set()
            out: list[Json] = []
            for listing in listings:
                for item in getattr(listing, attr):
                    if item.get(key) not in seen:
                        seen.add(item.get(key))
                        out.append(item)
            return out

        return Listing(
            merged("tools", "name"),
            merged("resources", "uri"),
            merged("templates", "uriTemplate"),
            merged("prompts", "name"),
        )
