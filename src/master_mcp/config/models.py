"""The `servers.yaml` schema: every key a user may write, and what each one must hold."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SERVER_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
FRONT_NAME_CHARS = re.compile(r"^[a-zA-Z0-9_-]*$")

TransportType = Literal["stdio", "http", "sse", "local"]
NamespacingMode = Literal["prefix", "conditional", "none"]

# Keys that only make sense for some transports; anything else set on a server is a mistake
# worth reporting rather than silently ignoring.
_KEYS_BY_TYPE: dict[str, frozenset[str]] = {
    "stdio": frozenset({"command", "args", "env", "cwd"}),
    "http": frozenset({"url", "urls", "load_balancing", "headers", "protocol"}),
    "sse": frozenset({"url", "headers"}),
    "local": frozenset({"config", "headers", "protocol"}),
}
_REQUIRED_BY_TYPE: dict[str, tuple[str, ...]] = {
    "stdio": ("command",),
    "http": ("url",),
    "sse": ("url",),
    "local": ("config",),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Namespacing(_Strict):
    mode: NamespacingMode = "prefix"
    separator: str = "__"

    @field_validator("separator")
    @classmethod
    def _separator_fits_names(cls, value: str) -> str:
        if not value or not FRONT_NAME_CHARS.match(value):
            raise ValueError(
                "must be non-empty and use only letters, digits, '_' or '-'"
                " (front names must match ^[a-zA-Z0-9_-]{1,64}$)"
            )
        return value


class StaticToken(_Strict):
    """One inbound bearer token (give it as `env:VAR`) and the subject it stands for."""

    token: str = Field(repr=False, min_length=16)
    subject: str = Field(min_length=1)
    scopes: list[str] = []


# Asymmetric signatures only: `none` proves nothing, and HS* with a published key lets anyone sign.
SIGNING_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
DEFAULT_ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"]
_OAUTH_KEYS = (
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "jwks_uri",
    "introspection_endpoint",
    "client_id",
    "client_secret",
    "redirect_uri",
    "scopes",
    "audience",
    "algorithms",
)


class InboundAuth(_Strict):
    """Who may call the master: `local` (one user, loopback), `static_tokens` (bearer tokens mapped to subjects) or
    `master_oauth` (tokens of an OAuth authorization server, verified as JWTs against its JWKS or by introspection)."""

    mode: Literal["local", "static_tokens", "master_oauth"] = "local"
    tokens: list[StaticToken] = []
    required_scopes: list[str] = []
    issuer: str | None = None
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    jwks_uri: str | None = None
    introspection_endpoint: str | None = None
    client_id: str | None = None
    client_secret: str | None = Field(default=None, repr=False)
    redirect_uri: str | None = None
    scopes: list[str] = []
    audience: str | None = None
    algorithms: list[str] = DEFAULT_ALGORITHMS

    @field_validator(
        "issuer", "authorization_endpoint", "token_endpoint", "jwks_uri", "introspection_endpoint", "redirect_uri"
    )
    @classmethod
    def _is_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one signing algorithm")
        for name in value:
            if name not in SIGNING_ALGORITHMS:
                raise ValueError(
                    f"{name!r} is not allowed: use asymmetric algorithms only"
                    f" ({', '.join(sorted(SIGNING_ALGORITHMS))}); 'none' and HS* never verify an authorization"
                    " server's token"
                )
        return value

    @model_validator(mode="after")
    def _tokens_fit_mode(self) -> InboundAuth:
        if self.mode == "static_tokens" and not self.tokens:
            raise ValueError("mode 'static_tokens' needs at least one entry in 'tokens'")
        if self.mode != "static_tokens" and self.tokens:
            raise ValueError("'tokens' are only used with mode 'static_tokens'")
        subjects = [t.subject for t in self.tokens]
        if len(subjects) != len(set(subjects)):
            raise ValueError("each token needs its own subject")
        if self.mode != "master_oauth":
            foreign = [key for key in _OAUTH_KEYS if key in self.model_fields_set]
            if foreign:
                raise ValueError(f"{', '.join(repr(k) for k in foreign)} only used with mode 'master_oauth'")
            return self
        if self.issuer is None:
            raise ValueError("mode 'master_oauth' needs 'issuer' (its authorization server)")
        if self.introspection_endpoint is not None and (self.client_id is None or self.client_secret is None):
            raise ValueError(
                "'introspection_endpoint' needs 'client_id' and 'client_secret' (the master authenticates)"
            )
        return self


class TokenStoreSettings(_Strict):
    """Where per-user backend tokens (and pending OAuth flows) live: `sqlite` (one file) survives restarts, `memory`
    does not, `redis` is shared by every replica of the master (tokens, flows, catalog invalidation)."""

    type: Literal["memory", "sqlite", "redis"] = "sqlite"
    path: str = "master-mcp-tokens.db"
    # repr=False: the URL may carry the Redis password.
    url: str | None = Field(default=None, repr=False)
    key_prefix: str = Field(default="master-mcp:", min_length=1)
    timeout_s: float = Field(default=5.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _url_is_redis(cls, value: str | None) -> str | None:
        # The messages never echo the value: it may hold a password.
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError("must start with redis:// (or rediss:// for TLS)")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ValueError("has a malformed port") from None
        if not parts.hostname:
            raise ValueError("names no host")
        return value

    @model_validator(mode="after")
    def _url_fits_type(self) -> TokenStoreSettings:
        if self.type == "redis" and self.url is None:
            raise ValueError("type 'redis' requires 'url' (redis://host:port/db or rediss:// for TLS)")
        if self.type != "redis" and self.url is not None:
            raise ValueError("'url' is only used with type 'redis'")
        return self


class SessionSettings(_Strict):
    """Bounds on per-principal backend sessions (one per user of a per-user backend)."""

    max_per_server: int = Field(default=256, ge=1)
    idle_timeout_s: float = Field(default=900.0, gt=0)


class CircuitBreakerSettings(_Strict):
    failure_threshold: int = Field(default=5, ge=1)
    recovery_timeout_s: float = Field(default=30.0, gt=0)
    half_open_max_calls: int = Field(default=1, ge=1)


class Routing(_Strict):
    circuit_breaker: CircuitBreakerSettings = CircuitBreakerSettings()


class MasterSettings(_Strict):
    name: str = "master-mcp"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    path: str = "/mcp"
    base_url: str | None = None
    namespacing: Namespacing = Namespacing()
    page_size: int = Field(default=1000, ge=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"
    connect_timeout_s: float = Field(default=15.0, gt=0)
    # Apply edits of this file while running (and on SIGHUP): servers come, go and change without a restart.
    watch_config: bool = True
    auth: InboundAuth = InboundAuth()
    store: TokenStoreSettings = TokenStoreSettings()
    sessions: SessionSettings = SessionSettings()
    # Streamable HTTP with no session state between requests (`serve --stateless`): any replica answers any request.
    stateless: bool = False

    @field_validator("path")
    @classmethod
    def _path_is_absolute(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @property
    def public_base_url(self) -> str:
        return self.base_url or f"http://{self.host}:{self.port}"


class LocalEndpoint(_Strict):
    port: int = Field(ge=1, le=65535)
    host: str = "127.0.0.1"
    path: str = "/mcp"


class ToolFilter(_Strict):
    allow: list[str] = []
    deny: list[str] = []

    @field_validator("allow", "deny")
    @classmethod
    def _globs_are_sane(cls, globs: list[str]) -> list[str]:
        for glob in globs:
            if not glob or glob != glob.strip():
                raise ValueError(f"bad glob {glob!r}: empty or surrounded by white space")
            if glob.count("[") != glob.count("]"):
                raise ValueError(f"bad glob {glob!r}: unbalanced '[' ']'")
        return globs


class CrashLoop(_Strict):
    """When a backend counts as failing rather than merely down: `crashes` drops within `window_s` seconds."""

    crashes: int = Field(default=5, ge=1)
    window_s: float = Field(default=60.0, gt=0)


class ServerConfig(_Strict):
    id: str
    type: TransportType
    command: str | None = None
    args: list[str] = []
    # repr=False: these may hold credentials, and a model's repr ends up in tracebacks and debug logs.
    env: dict[str, str] = Field(default={}, repr=False)
    cwd: str | None = None
    url: str | None = None
    # Several instances of one stateless HTTP backend, instead of `url`.
    urls: list[str] = []
    load_balancing: Literal["round_robin", "health"] = "round_robin"
    headers: dict[str, str] = Field(default={}, repr=False)
    # "auto": 2026-07-28 clients that can answer nothing are served in their era where the backend offers it (see
    # backends/lane.py); "handshake": every call goes on the backend's handshake session.
    protocol: Literal["auto", "handshake"] = "auto"
    config: LocalEndpoint | None = None
    prefix: str | None = None
    tools: ToolFilter = ToolFilter()
    timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float | None = Field(default=None, gt=0)
    crash_loop: CrashLoop = CrashLoop()
    enabled: bool = True
    auth_strategy: str = "bypass_auth"
    auth_config: dict[str, Any] = Field(default={}, repr=False)

    @field_validator("id")
    @classmethod
    def _id_is_slug(cls, value: str) -> str:
        if not SERVER_ID_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a valid id: use [a-z0-9][a-z0-9_-]*")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_fits_names(cls, value: str | None) -> str | None:
        if value is not None and not FRONT_NAME_CHARS.match(value):
            raise ValueError("use only letters, digits, '_' or '-'")
        return value

    @field_validator("headers")
    @classmethod
    def _headers_fit_on_a_line(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if any(c in name + text for c in "\r\n\0"):
                # The value is never shown: it may be a credential.
                raise ValueError(f"the header {name.strip()[:40]!r} holds a line break or NUL")
        return value

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("urls")
    @classmethod
    def _urls_are_http(cls, values: list[str]) -> list[str]:
        for value in values:
            cls._url_is_http(value)
        if len(set(values)) != len(values):
            raise ValueError("lists an instance twice")
        return values

    @model_validator(mode="after")
    def _keys_fit_type(self) -> ServerConfig:
        if self.type == "http" and self.urls:
            if self.url is not None:
                raise ValueError("give either 'url' or 'urls', not both")
            object.__setattr__(self, "url", self.urls[0])  # the address every session starts from
        if "load_balancing" in self.model_fields_set and not self.urls:
            raise ValueError("'load_balancing' needs 'urls' (several instances)")
        missing = [key for key in _REQUIRED_BY_TYPE[self.type] if getattr(self, key) is None]
        if missing:
            raise ValueError(f"type {self.type!r} requires {', '.join(repr(k) for k in missing)}")
        allowed = _KEYS_BY_TYPE[self.type]
        foreign = sorted(
            key
            for keys in _KEYS_BY_TYPE.values()
            for key in keys
            if key not in allowed and key in self.model_fields_set
        )
        if foreign:
            raise ValueError(
                f"{', '.join(repr(k) for k in dict.fromkeys(foreign))} not allowed with type {self.type!r}"
            )
        return self

    @property
    def name_prefix(self) -> str:
        return self.id if self.prefix is None else self.prefix

    @property
    def endpoint_url(self) -> str | None:
        if self.type == "local" and self.config is not None:
            return f"http://{self.config.host}:{self.config.port}{self.config.path}"
        return self.url


class MasterConfig(_Strict):
    master: MasterSettings = MasterSettings()
    routing: Routing = Routing()
    servers: list[ServerConfig] = []
    source: Path | None = Field(default=None, exclude=True)
    # Values that must never reach a log line: whatever came from `env:VAR`, headers, child env, auth_config.
    secrets: frozenset[str] = Field(default=frozenset(), exclude=True, repr=False)

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source is not None else Path.cwd()

    def server(self, server_id: str) -> ServerConfig:
        for server in self.servers:
            if server.id == server_id:
                return server
        raise KeyError(server_id)
