"""The release of master-mcp, as it introduces itself to clients and to backends."""

VERSION = "0.1.0"
