"""Reading `servers.yaml`: YAML, `${VAR}` / `env:VAR` secrets, `MASTER_MCP_*` overrides, errors with key paths."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from master_mcp.config.models import MasterConfig

CONFIG_ENV = "MASTER_MCP_CONFIG"
PYTHON_ENV = "MASTER_MCP_PYTHON"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_ENV_VALUE = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")


class ConfigError(Exception):
    """An invalid configuration; each line of the message names the key path it is about."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        super().__init__(f"invalid config {source}:\n" + "\n".join(f"  {p}" for p in problems))


def default_config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV) or "servers.yaml")


def key_path(parts: tuple[Any, ...] | list[Any]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _environment() -> Mapping[str, str]:
    # The interpreter running the master is the one that certainly has `mcp` installed, so the
    # bundled example backends can name it without knowing where the venv is.
    env = dict(os.environ)
    env.setdefault(PYTHON_ENV, sys.executable)
    return env


_SECRET_SECTIONS = frozenset({"headers", "env"})
_SECRET_NAME = re.compile(r"(?i)(secret|password|api_?key|^token$|_token$|^token_source$)")


def _holds_secret(path: tuple[Any, ...]) -> bool:
    names = [p for p in path if isinstance(p, str)]
    if _SECRET_SECTIONS.intersection(names):
        return True
    return bool(names) and bool(_SECRET_NAME.search(names[-1]))


def resolve_secrets(
    node: Any, env: Mapping[str, str], path: tuple[Any, ...], problems: list[str], secrets: set[str] | None = None
) -> Any:
    """Substitute `${VAR}` and `env:VAR`; values that are (or may be) credentials are added to `secrets`."""
    found = secrets if secrets is not None else set()
    if isinstance(node, dict):
        return {k: resolve_secrets(v, env, (*path, k), problems, found) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve_secrets(v, env, (*path, i), problems, found) for i, v in enumerate(node)]
    if not isinstance(node, str):
        return node
    if whole := _ENV_VALUE.match(node):
        name = whole.group(1)
        if name not in env:
            problems.append(f"{key_path(path)}: environment variable {name} is not set")
            return node
        found.add(env[name])
        return env[name]
    secret = _holds_secret(path)
    if secret:
        found.add(_VAR.sub(lambda m: env.get(m.group(1), m.group(0)), node))

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in env:
            problems.append(f"{key_path(path)}: environment variable {name} is not set")
            return match.group(0)
        if secret or _SECRET_NAME.search(name):
            found.add(env[name])  # the bare value too: it may be logged without what surrounds it here
        return env[name]

    return _VAR.sub(substitute, node)


class _EnvOverrides(BaseSettings):
    """`MASTER_MCP_MASTER__PORT=9000` style overrides of the `master` block."""

    model_config = SettingsConfigDict(env_prefix="MASTER_MCP_", env_nested_delimiter="__", extra="ignore")
    master: dict[str, Any] = {}


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _duplicate_ids(servers: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(servers, list):
        return problems
    first_seen: dict[str, int] = {}
    for index, server in enumerate(servers):
        if isinstance(server, dict) and isinstance(server.get("id"), str):
            sid = server["id"]
            if sid in first_seen:
                problems.append(f"servers[{index}].id: duplicate id {sid!r} (first used at servers[{first_seen[sid]}])")
            else:
                first_seen[sid] = index
    return problems


def _validation_problems(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        problems.append(f"{key_path(item['loc'])}: {message}")
    return problems


def parse_config(data: Any, source: str = "<config>") -> MasterConfig:
    """Validate an already-parsed YAML document; raises `ConfigError` naming every bad key."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): must be a mapping with 'master' and 'servers'"])
    problems: list[str] = []
    secrets: set[str] = set()
    data = resolve_secrets(data, _environment(), (), problems, secrets)
    overrides = _EnvOverrides().master
    if overrides:
        master = data.get("master") or {}
        if isinstance(master, dict):
            data["master"] = _deep_merge(master, overrides)
    problems += _duplicate_ids(data.get("servers"))
    if problems:
        raise ConfigError(source, problems)
    try:
        config = MasterConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, _validation_problems(exc)) from None
    return config.model_copy(update={"secrets": frozenset(secrets | _store_secrets(config))})


def _store_secrets(config: MasterConfig) -> set[str]:
    """The Redis URL may carry a password, however it was written (literal, `${VAR}`, an env override)."""
    url = config.master.store.url
    if url is None:
        return set()
    password = urlsplit(url).password
    return {url, *((password, unquote(password)) if password else ())}


def load_config(path: str | Path | None = None) -> MasterConfig:
    """Load and validate a config file (default: `$MASTER_MCP_CONFIG`, then `./servers.yaml`)."""
    file = Path(path) if path is not None else default_config_path()
    source = str(file)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"(file): cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "unknown position"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, [f"(yaml) {where}: {problem}"]) from None
    config = parse_config(data, source)
    return config.model_copy(update={"source": file.resolve()})
