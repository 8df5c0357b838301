"""Front names and front URIs: how a backend's names are made unique at the front, and back again."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from master_mcp.config.models import NamespacingMode

FRONT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
_SCHEME_CHARS = re.compile(r"[^a-z0-9+.-]")


def uri_key(prefix: str) -> str:
    """A URI-scheme-safe form of a server prefix (RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )).

    `+` is dropped too because it separates the key from the backend URI.
    """
    key = _SCHEME_CHARS.sub("-", prefix.lower().replace("_", "-")).replace("+", "-")
    return key if key[:1].isalpha() else f"s{key}"


@dataclass(frozen=True, slots=True)
class NameScheme:
    """Turns backend names into front names for one namespacing mode."""

    mode: NamespacingMode
    separator: str

    def prefixed(self, prefix: str, name: str) -> str:
        return f"{prefix}{self.separator}{name}" if prefix else name

    def front_names(self, owners: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Map (prefix, backend name) pairs to front names; collisions are left for the caller to find."""
        pairs = list(owners)
        counts = Counter(name for _, name in pairs)
        out: dict[tuple[str, str], str] = {}
        for prefix, name in pairs:
            if self.mode == "prefix" or (self.mode == "conditional" and counts[name] > 1):
                out[(prefix, name)] = self.prefixed(prefix, name)
            else:
                out[(prefix, name)] = name
        return out


@dataclass(frozen=True, slots=True)
class UriScheme:
    """Reversible resource-URI mapping: `{key}+{backend uri}` where a URI must be told apart."""

    mode: NamespacingMode

    @staticmethod
    def wrap(key: str, uri: str) -> str:
        return f"{key}+{uri}" if key else uri

    @staticmethod
    def unwrap(front_uri: str) -> tuple[str, str] | None:
        key, plus, rest = front_uri.partition("+")
        if not plus or not key or ":" in key or "/" in key:
            return None
        return key, rest

    def wraps(self, uri: str, collided: frozenset[str]) -> bool:
        return self.mode == "prefix" or (self.mode == "conditional" and uri in collided)
