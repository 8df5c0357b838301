"""`master-mcp`: serve (HTTP), stdio, check, tools."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import anyio
import uvicorn

from master_mcp import heap, runtime
from master_mcp.app import create_app, is_loopback
from master_mcp.auth.crypto import new_key
from master_mcp.config import ConfigError, MasterConfig, default_config_path, load_config
from master_mcp.logs import setup_logging
from master_mcp.redis_link import StoreUnavailable
from master_mcp.reload import ConfigWatcher
from master_mcp.server import MasterServer

logger = logging.getLogger("master_mcp")
SHUTDOWN_GRACE_S = 10


def _load(path: str | None, log_format: str | None = None) -> MasterConfig:
    config = load_config(Path(path) if path else default_config_path())
    fmt = log_format or config.master.log_format
    setup_logging(config.master.log_level, config.secrets, "json" if fmt == "json" else "text")
    return config


def _with_overrides(config: MasterConfig, args: argparse.Namespace) -> MasterConfig:
    """Command-line flags win over the file, at start-up and at every reload."""
    flags = {k: v for k, v in (("host", getattr(args, "host", None)), ("port", getattr(args, "port", None))) if v}
    if not flags:
        return config
    return config.model_copy(update={"master": config.master.model_copy(update=flags)})


def _serving(master: MasterServer, args: argparse.Namespace) -> MasterServer:
    """A master that serves until stopped: its heap is settled once it is up, and its config file reloaded on
    SIGHUP, and whenever it changes unless `master.watch_config` is off."""
    master.companions.append(heap.settle_when_up)
    source = master.config.source
    if source is not None:
        load = lambda: _with_overrides(load_config(source), args)  # noqa: E731
        watcher = ConfigWatcher(master, source, load, poll=master.config.master.watch_config, on_applied=heap.thaw)
        master.companions.append(watcher.run)
    return master


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


class DrainingServer(uvicorn.Server):
    """On SIGTERM/SIGINT the master first drains (calls in flight finish, new ones are refused), then uvicorn
    stops: left to itself it would cut open response streams short."""

    def __init__(self, config: uvicorn.Config, master: MasterServer) -> None:
        super().__init__(config)
        self._master = master

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._master.draining:  # a second signal: stop now
            super().handle_exit(sig, frame)
            return
        loop = asyncio.get_running_loop()

        async def drain_then_exit() -> None:
            await self._master.drain(SHUTDOWN_GRACE_S)
            super(DrainingServer, self).handle_exit(sig, frame)

        self._drain = loop.create_task(drain_then_exit())


def cmd_serve(args: argparse.Namespace) -> int:
    config = _with_overrides(_load(args.config, args.log_format), args)
    host, port = config.master.host, config.master.port
    if not is_loopback(host) and config.master.auth.mode == "local":
        if not args.allow_remote:
            print(
                f"error: refusing to serve on {host} without inbound auth; pass --allow-remote to do it anyway",
                file=sys.stderr,
            )
            return 2
        logger.warning("serving on %s with no inbound authentication: anyone who can reach it can use it", host)
    master = _serving(MasterServer(config), args)
    app = create_app(master, stateless=args.stateless, json_response=args.json_response)
    # On SIGTERM/SIGINT: stop accepting, give in-flight requests (and open streams) a bounded time, then close.
    settings = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
        **runtime.UVICORN,
    )
    server = DrainingServer(settings, master)
    logger.info("serving MCP at http://%s:%d%s", host, port, config.master.path)
    server.run()  # a failed start (e.g. the shared store is unreachable) is logged, then exits with status 3
    return 0


def cmd_stdio(args: argparse.Namespace) -> int:
    master = _serving(MasterServer(_load(args.config, args.log_format)), args)
    anyio.run(master.run_stdio)
    return 0


async def _connected(config: MasterConfig) -> tuple[MasterServer, bool, list[dict[str, object]]]:
    master = MasterServer(config)
    async with master.running():
        ready, servers = master.readiness()
    return master, ready, servers


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args.config, args.log_format)
    _, ready, servers = anyio.run(_connected, config)
    rows = [["server", "transport", "state", "tools", "resources", "templates", "prompts", "error"]]
    for s in servers:
        problems = [str(p) for p in s.get("problems") or []]  # type: ignore[attr-defined]
        errors = ([str(s["last_error"])] if s.get("last_error") else []) + problems
        error = "; ".join(errors)
        counts = [str(s.get(k, "-")) for k in ("tools", "resources", "templates", "prompts")]
        rows.append([str(s["id"]), str(s["transport"]), str(s["state"]), *counts, error])
    print(_table(rows))
    if not ready:
        print("\nnot every enabled backend is up", file=sys.stderr)
    if any(s.get("problems") for s in servers):
        print("\nsome tools, prompts or resources cannot be served as configured (see error column)", file=sys.stderr)
        return 1
    return 0 if ready else 1


def cmd_tools(args: argparse.Namespace) -> int:
    config = _load(args.config, args.log_format)
    master, _, _ = anyio.run(_connected, config)
    rows = [["tool", "server", "backend name", "title"]]
    for entry in master.catalog.entries():
        if entry.kind == "tool":
            rows.append([entry.front_name, entry.server_id, entry.backend_name, entry.title or ""])
    print(_table(rows))
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    print(new_key())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="master-mcp", description="One MCP endpoint in front of many MCP servers.")
    sub = parser.add_subparsers(dest="command", required=True)
    config_help = "servers.yaml to use (default: $MASTER_MCP_CONFIG, then ./servers.yaml)"

    serve = sub.add_parser("serve", help="serve streamable HTTP (default http://127.0.0.1:8000/mcp)")
    serve.add_argument("--config", help=config_help)
    serve.add_argument("--log-format", choices=["text", "json"], help="log lines as text (default) or JSON")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--stateless",
        action="store_true",
        default=None,
        help="no session state between requests, so any replica can answer any request (config: master.stateless)",
    )
    serve.add_argument("--json-response", action="store_true", help="answer with JSON instead of SSE streams")
    serve.add_argument("--allow-remote", action="store_true", help="allow a non-loopback host without inbound auth")
    serve.set_defaults(func=cmd_serve)

    keygen = sub.add_parser("keygen", help="print a new MASTER_MCP_TOKEN_KEY for the token store")
    keygen.set_defaults(func=cmd_keygen)

    for name, func, text in (
        ("stdio", cmd_stdio, "serve over stdio (what Claude Desktop runs)"),
        ("check", cmd_check, "validate the config, connect every backend, print a table"),
        ("tools", cmd_tools, "print the aggregated tool catalog"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--config", help=config_help)
        command.add_argument("--log-format", choices=["text", "json"], help="log lines as text (default) or JSON")
        command.set_defaults(func=func)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
