"""Logging to stderr (stdout may carry JSON-RPC), with every known secret redacted from every line."""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import sys
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Literal

_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_AUTH_HEADER = re.compile(r"(?i)(authorization['\"]?\s*[:=]\s*['\"]?)[^'\",\s]+")
_TOKEN_PARAM = re.compile(
    r"(?i)\b(access_token|refresh_token|id_token|client_secret|code_verifier|code|state|flow)=([^&\s\"']+)"
)
MASK = "***"


class RedactingFilter(logging.Filter):
    """Replaces known secret values and anything shaped like a credential before a record is written."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        # Very short values would mask ordinary words; they are not plausible secrets anyway.
        self._secrets |= {s for s in secrets if len(s) >= 6}

    def redact(self, text: str) -> str:
        for secret in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(secret, MASK)
        text = _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", text)
        text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{MASK}", text)
        return _TOKEN_PARAM.sub(lambda m: f"{m.group(1)}={MASK}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redact(message)
        if record.exc_info and record.exc_info[1] is not None:
            formatted = logging.Formatter().formatException(record.exc_info)
            redacted = f"{redacted}\n{self.redact(formatted)}"
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = redacted, None
        return True


REDACTOR = RedactingFilter()

# The front request being served: every log line written while serving it (backend calls included) carries it.
REQUEST_ID: ContextVar[int | None] = ContextVar("master_mcp_request_id", default=None)
# Log correlation needs uniqueness, not secrecy: this process's tag (replicas differ), then a count of its requests.
_PROCESS_TAG = f"{random.getrandbits(24):06x}"
new_request_id = itertools.count(1).__next__


def request_id_text(request_id: int | None) -> str:
    # Formatted only when a line is written: most requests write none, and formatting every id cost 0.7% of the
    # master's CPU on calls to a stdio backend (py-spy).
    return "-" if request_id is None else f"{_PROCESS_TAG}{request_id:06x}"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_text(REQUEST_ID.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, request id, message (and the traceback, when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        return json.dumps(line, ensure_ascii=False)


def setup_logging(level: str = "INFO", secrets: Iterable[str] = (), fmt: Literal["text", "json"] = "text") -> None:
    """Send every log line to stderr, through the redactor; idempotent."""
    REDACTOR.add(secrets)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        if getattr(handler, "_master_mcp", False):
            return
    handler = logging.StreamHandler(sys.stderr)
    text = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
    handler.setFormatter(JsonFormatter() if fmt == "json" else text)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(REDACTOR)
    handler._master_mcp = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # The HTTP client logs every request line at INFO, which is noise next to the master's own lines.
    logging.getLogger("httpx2").setLevel(logging.WARNING)
