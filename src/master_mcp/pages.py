"""List pages in their wire form, kept until the catalog changes.

The SDK validates and re-serializes every result against the protocol's models before it sends it; for a
catalog of thousands of tools that is most of what a `tools/list` costs, and the answer is the same until the
catalog changes. The first request for a page goes the whole way; the next ones get the wire form it produced.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from master_mcp.catalog import Catalog

LIST_METHODS: Final = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})
_MAX_PAGES: Final = 256

PageKey = tuple[str, str | None, str | None]


def page_key(method: str, params: Mapping[str, Any] | None, protocol_version: str | None) -> PageKey | None:
    """The key of a plain list request (a cursor at most, besides `_meta`); None for anything else, which then
    takes the whole way (and gets the SDK's own validation of its params)."""
    if method not in LIST_METHODS:
        return None
    params = params or {}
    cursor = params.get("cursor")
    if not set(params) <= {"cursor", "_meta"} or not (cursor is None or isinstance(cursor, str)):
        return None
    return method, cursor, protocol_version


class ListPages:
    def __init__(self) -> None:
        self._pages: dict[PageKey, dict[str, Any]] = {}
        self._catalog: Catalog | None = None
        self._version = -1

    def get(self, key: PageKey, catalog: Catalog) -> dict[str, Any] | None:
        if self._catalog is not catalog or self._version != catalog.version:
            return None
        return self._pages.get(key)

    def put(self, key: PageKey, catalog: Catalog, version: int, page: dict[str, Any]) -> None:
        """Keep `page`, built from `catalog` at `version`, unless the catalog has changed since."""
        if catalog.version != version:
            return
        if self._catalog is not catalog or self._version != version:
            self._pages.clear()
            self._catalog, self._version = catalog, version
        if len(self._pages) >= _MAX_PAGES:
            self._pages.pop(next(iter(self._pages)))
        self._pages[key] = page
