"""servers.yaml: every bad input is a clear error naming its key path; secrets and overrides resolve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from master_mcp.config import ConfigError, load_config, parse_config
from master_mcp.server import MasterServer
from tests.conftest import ROOT


def problems_of(data: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.problems


def one(data: Any) -> str:
    problems = problems_of(data)
    assert len(problems) == 1, problems
    return problems[0]


STDIO = {"id": "a", "type": "stdio", "command": "x"}


def test_default_config_is_valid() -> None:
    config = load_config(ROOT / "servers.yaml")
    assert [s.id for s in config.servers] == ["notes", "docs"]
    assert all(s.type == "stdio" for s in config.servers)
    assert config.master.port == 8000 and config.master.namespacing.mode == "prefix"


def test_unknown_keys_name_their_path() -> None:
    assert one({"servers": [STDIO, {**STDIO, "id": "b", "colour": "red"}]}).startswith("servers[1].colour: unknown key")
    assert one({"master": {"namespacing": {"mode": "prefix", "sep": "."}}}).startswith("master.namespacing.sep:")
    assert one({"extra": 1}).startswith("extra: unknown key")


def test_duplicate_and_bad_ids() -> None:
    assert one({"servers": [STDIO, STDIO]}) == "servers[1].id: duplicate id 'a' (first used at servers[0])"
    assert one({"servers": [{**STDIO, "id": "Bad Id"}]}).startswith("servers[0].id: 'Bad Id' is not a valid id")


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ({"id": "a", "type": "stdio"}, "servers[0]: type 'stdio' requires 'command'"),
        ({"id": "a", "type": "http"}, "servers[0]: type 'http' requires 'url'"),
        ({"id": "a", "type": "sse"}, "servers[0]: type 'sse' requires 'url'"),
        ({"id": "a", "type": "local"}, "servers[0]: type 'local' requires 'config'"),
        ({"id": "a", "type": "http", "url": "ftp://x"}, "servers[0].url: must start with http:// or https://"),
        (
            {"id": "a", "type": "http", "url": "http://x", "headers": {"x-key": "k\r\nx-injected: 1"}},
            "servers[0].headers: the header 'x-key' holds a line break or NUL",
        ),
        ({**STDIO, "url": "http://x"}, "servers[0]: 'url' not allowed with type 'stdio'"),
        ({**STDIO, "protocol": "handshake"}, "servers[0]: 'protocol' not allowed with type 'stdio'"),
        (
            {"id": "a", "type": "http", "url": "http://x", "protocol": "2026"},
            "servers[0].protocol: Input should be 'auto' or 'handshake'",
        ),
        ({"id": "a", "type": "carrier-pigeon"}, "servers[0].type: Input should be 'stdio', 'http', 'sse' or 'local'"),
        ({"id": "a", "type": "local", "config": {"port": 0}}, "servers[0].config.port:"),
        ({**STDIO, "tools": {"allow": ["ok*", "bad["]}}, "servers[0].tools.allow: bad glob 'bad['"),
        ({**STDIO, "tools": {"deny": [""]}}, "servers[0].tools.deny: bad glob ''"),
        ({**STDIO, "timeout_s": -1}, "servers[0].timeout_s:"),
        ({**STDIO, "prefix": "has space"}, "servers[0].prefix:"),
    ],
)
def test_server_errors_name_the_key(server: dict[str, Any], expected: str) -> None:
    assert one({"servers": [server]}).startswith(expected)


def test_separator_must_fit_front_names() -> None:
    assert one({"master": {"namespacing": {"separator": "."}}}).startswith("master.namespacing.separator:")


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of({"servers": [{"id": "a", "type": "stdio"}, {"id": "b", "type": "http", "x": 1}]})
    assert len(problems) >= 2


def test_missing_variable_names_key_and_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REMOTE_KEY", raising=False)
    servers = [
        STDIO,
        {"id": "b", "type": "stdio", "command": "y"},
        {"id": "remote", "type": "http", "url": "http://h/mcp", "headers": {"X-Api-Key": "env:REMOTE_KEY"}},
    ]
    assert one({"servers": servers}) == "servers[2].headers.X-Api-Key: environment variable REMOTE_KEY is not set"
    servers[2]["headers"] = {"X-Api-Key": "Bearer ${REMOTE_KEY}"}
    assert one({"servers": servers}) == "servers[2].headers.X-Api-Key: environment variable REMOTE_KEY is not set"


def test_variables_resolve_and_secrets_are_collected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMOTE_KEY", "s3cr3t-value")
    monkeypatch.setenv("REMOTE_HOST", "127.0.0.1")
    config = parse_config(
        {
            "servers": [
                {
                    "id": "remote",
                    "type": "http",
                    "url": "http://${REMOTE_HOST}:9/mcp",
                    "headers": {"X-Api-Key": "env:REMOTE_KEY", "X-Other": "pre-${REMOTE_KEY}"},
                }
            ]
        }
    )
    server = config.servers[0]
    assert server.url == "http://127.0.0.1:9/mcp"
    assert server.headers == {"X-Api-Key": "s3cr3t-value", "X-Other": "pre-s3cr3t-value"}
    assert {"s3cr3t-value", "pre-s3cr3t-value"} <= config.secrets
    assert "s3cr3t-value" not in repr(config)


def test_env_overrides_master_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASTER_MCP_MASTER__PORT", "9123")
    monkeypatch.setenv("MASTER_MCP_MASTER__NAMESPACING__MODE", "conditional")
    config = parse_config({"master": {"port": 8000, "namespacing": {"separator": "--"}}})
    assert config.master.port == 9123
    assert config.master.namespacing.mode == "conditional"
    assert config.master.namespacing.separator == "--"
    monkeypatch.setenv("MASTER_MCP_MASTER__PORT", "not-a-port")
    assert one({}).startswith("master.port:")


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "servers.yaml"
    path.write_text("master:\n  port: 8000\nservers:\n  - id: a\n    args: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line" in info.value.problems[0] and str(path) in str(info.value)


def test_missing_file_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")
    assert one(["a", "list"]).startswith("(top level): must be a mapping")


def test_config_path_defaults_to_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "elsewhere.yaml"
    path.write_text("servers: []\n")
    monkeypatch.setenv("MASTER_MCP_CONFIG", str(path))
    assert load_config().source == path.resolve()


def test_unknown_auth_strategy_names_the_key() -> None:
    config = parse_config({"servers": [STDIO, {**STDIO, "id": "b", "auth_strategy": "magic"}]})
    with pytest.raises(ConfigError) as info:
        MasterServer(config)
    available = "bypass_auth, delegate_oauth, master_oauth, proxy_oauth, token_exchange"
    assert info.value.problems == [f"servers[1].auth_strategy: unknown auth strategy 'magic' (available: {available})"]
    config = parse_config({"servers": [{**STDIO, "auth_config": {"token": "x"}}]})
    with pytest.raises(ConfigError, match=r"servers\[0\].auth_config.token: unknown key"):
        MasterServer(config)
