"""The merged catalog of all backends and the reverse routing from front names to backends."""

from master_mcp.backends.listing import Listing
from master_mcp.catalog.catalog import Catalog, CatalogEntry, Route
from master_mcp.catalog.naming import FRONT_NAME, NameScheme, UriScheme, uri_key

__all__ = ["FRONT_NAME", "Catalog", "CatalogEntry", "Listing", "NameScheme", "Route", "UriScheme", "uri_key"]
