"""The processes a benchmark runs: backends, masters and peer gateways on loopback, and what /proc says of them."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import yaml

ROOT = Path(__file__).resolve().parents[1]
BACKEND = str(ROOT / "benchmarks" / "backend.py")
PEER_FASTMCP = str(ROOT / "benchmarks" / "peer_fastmcp.py")
FLOOR = str(ROOT / "benchmarks" / "floor.py")
MASTER = str(Path(sys.executable).with_name("master-mcp"))
PEERS = ROOT / ".cache" / "bench-peers"
# The peers pin their own SDK versions: each gets a venv of its own, never the project's. Each also gets the HTTP
# parser the master serves with, which their uvicorn picks by itself.
PARSER = "httptools==0.9.0"
PEER_PACKAGES = {"fastmcp": f"fastmcp==4.2.3 {PARSER}", "mcp-proxy": f"mcp-proxy==0.13.0 {PARSER}"}
_TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (not its children), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def pid_with(marker: str) -> int:
    """The pid of the one live process whose command line contains `marker` (a unique temp path)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if marker in cmdline and entry.name != str(os.getpid()):
                return int(entry.name)
    raise RuntimeError(f"no process with {marker!r} in its command line")


def wait_http(url: str, timeout: float = 120.0, status: int = 200) -> float:
    """Poll `url` until it answers `status` (any answer when status is 0); returns when it did (monotonic)."""
    deadline = time.monotonic() + timeout
    with httpx2.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            try:
                response = client.get(url)
                if status == 0 or response.status_code == status:
                    return time.monotonic()
            except httpx2.HTTPError:
                pass
            time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer {status or 'at all'} within {timeout:g}s")


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    url: str

    @property
    def pid(self) -> int:
        return self.process.pid


@contextmanager
def spawn(command: list[str], url: str, ready_url: str | None = None, status: int = 0) -> Iterator[Running]:
    """A process serving HTTP at `url`; ready once `ready_url` (default: `url`) answers."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_http(ready_url or url, status=status)
        yield Running(process, url)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def backend_command(*extra: str) -> list[str]:
    return [sys.executable, BACKEND, *extra]


@contextmanager
def http_backend(*extra: str) -> Iterator[Running]:
    port = free_port()
    with spawn(backend_command("--http", str(port), *extra), f"http://127.0.0.1:{port}/mcp") as running:
        yield running


def stdio_server(server_id: str, *extra: str) -> dict[str, Any]:
    return {"id": server_id, "type": "stdio", "command": sys.executable, "args": [BACKEND, *extra]}


def write_config(folder: Path, name: str, servers: list[dict[str, Any]], **master: Any) -> Path:
    """A master config in `folder`; its path is unique, so it also finds the master's pid (`pid_with`)."""
    path = folder / f"{name}-{secrets.token_hex(4)}.yaml"
    settings = {"log_level": "WARNING", "store": {"type": "memory"}, **master}
    path.write_text(yaml.safe_dump({"master": settings, "servers": servers}))
    return path


@contextmanager
def http_master(config_dir: Path, servers: list[dict[str, Any]], *flags: str, **master: Any) -> Iterator[Running]:
    """`master-mcp serve [flags]` on a free loopback port, ready once /readyz says 200."""
    port = free_port()
    config = write_config(config_dir, "master", servers, port=port, base_url=f"http://127.0.0.1:{port}", **master)
    base = f"http://127.0.0.1:{port}"
    command = [MASTER, "serve", "--config", str(config), *flags]
    with spawn(command, f"{base}/mcp", f"{base}/readyz", status=200) as running:
        yield running


def stdio_master_args(config_dir: Path, servers: list[dict[str, Any]]) -> tuple[list[str], str]:
    """Command line of a `master-mcp stdio` (the client spawns it) and the marker that finds its pid."""
    config = write_config(config_dir, "stdio-master", servers)
    return [MASTER, "stdio", "--config", str(config)], str(config)


# ---- peers ---------------------------------------------------------------------------------------------------------


def peer_python(name: str) -> Path:
    """The interpreter of a peer's own venv under .cache/bench-peers, created and filled on first use."""
    folder = PEERS / name
    marker = folder / ".installed"
    wanted = PEER_PACKAGES[name]
    if not marker.exists() or marker.read_text() != wanted:
        folder.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(folder)], check=True, timeout=300)
        pip = [str(folder / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *wanted.split()], check=True, timeout=900)
        marker.write_text(wanted)
    return folder / "bin" / "python"


@contextmanager
def fastmcp_proxy(target: list[str], *, shared: bool) -> Iterator[Running]:
    port = free_port()
    command = [str(peer_python("fastmcp")), PEER_FASTMCP, "--port", str(port), *(["--shared"] if shared else [])]
    with spawn([*command, "--", *target], f"http://127.0.0.1:{port}/mcp") as running:
        yield running


@contextmanager
def mcp_proxy(target: list[str]) -> Iterator[Running]:
    """`mcp-proxy` serving a stdio backend over streamable HTTP (its /mcp endpoint)."""
    port = free_port()
    # `-m`, not its console script: a script names the interpreter by the absolute path the venv was made at.
    command = [
        str(peer_python("mcp-proxy")),
        "-m",
        "mcp_proxy",
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        "--log-level",
        "WARNING",
        "--",
        *target,
    ]
    with spawn(command, f"http://127.0.0.1:{port}/mcp/", f"http://127.0.0.1:{port}/status") as running:
        yield running


@contextmanager
def floor(kind: str, target: list[str]) -> Iterator[Running]:
    """benchmarks/floor.py: the least an SDK gateway (`sdk`, `sdk-auto`: its backend hop negotiates the era) or one
    more process (`bytes` before an HTTP backend, `lines` before a stdio one) costs."""
    port = free_port()
    era = ["--backend-era", "auto"] if kind == "sdk-auto" else []
    command = [sys.executable, FLOOR, "--port", str(port), "--kind", kind.removesuffix("-auto"), *era, "--", *target]
    with spawn(command, f"http://127.0.0.1:{port}/mcp") as running:
        yield running
