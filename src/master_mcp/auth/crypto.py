"""AES-GCM sealing of stored credentials, each ciphertext bound to the key it is stored under."""

from __future__ import annotations

import base64
import binascii
import os
import secrets

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

TOKEN_KEY_ENV = "MASTER_MCP_TOKEN_KEY"
_NONCE_BYTES = 12


class SealError(Exception):
    """A ciphertext that does not open: tampered, moved to another key, or sealed with another master key."""


class MasterKeyError(Exception):
    """The configured master key is missing or malformed; the message says how to fix it."""


def new_key() -> str:
    """A fresh 256-bit key in the form `MASTER_MCP_TOKEN_KEY` takes (what `master-mcp keygen` prints)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")


def decode_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise MasterKeyError(
            f"{TOKEN_KEY_ENV} must be 32 bytes in URL-safe base64; generate one with `master-mcp keygen`"
        )
    return raw


def key_from_environment(*, required: bool) -> bytes:
    """The master key from the environment; without one, an ephemeral key unless `required`."""
    text = os.environ.get(TOKEN_KEY_ENV)
    if text:
        return decode_key(text)
    if required:
        raise MasterKeyError(
            f"a persistent token store needs {TOKEN_KEY_ENV}: run `master-mcp keygen` and export its output"
            f" as {TOKEN_KEY_ENV} (or use `store: {{type: memory}}`, which forgets tokens on restart)"
        )
    return secrets.token_bytes(32)


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, binding: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, binding)

    def open(self, sealed: bytes, binding: bytes) -> bytes:
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], binding)
        except (InvalidTag, ValueError):
            raise SealError("stored credential failed authentication") from None
