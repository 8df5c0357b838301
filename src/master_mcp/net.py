"""Small facts about addresses, shared by the HTTP front and the OAuth routes."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str | None) -> bool:
    """True for `localhost` and any loopback address (IPv6 with or without brackets)."""
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
