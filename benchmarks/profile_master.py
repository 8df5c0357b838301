"""Where a call's time goes inside the master: py-spy samples the master process while a client makes calls.

    .venv/bin/python benchmarks/profile_master.py [--backend http|stdio] [--calls 2000] [--top 30]
        [--sessions 32] [--subject master|floor]

`--sessions N` drives N sessions at once (scenario 2's load) instead of one; `--subject floor` samples the bare
SDK gateway of benchmarks/floor.py under the same load, so the two profiles can be set side by side.

py-spy is installed into its own venv under .cache/bench-peers/profilers (never into the project's). Prints the
functions with the largest inclusive and self share of the master's samples, and keeps the collapsed stacks in
benchmarks/results/ for a flame graph.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import measure  # noqa: E402
from benchmarks.procs import PEERS, backend_command, floor, http_backend, http_master, stdio_server  # noqa: E402

PROFILERS = PEERS / "profilers"


def py_spy() -> str:
    executable = PROFILERS / "bin" / "py-spy"
    if not executable.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PROFILERS)], check=True, timeout=300)
        pip = [str(PROFILERS / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "py-spy"], check=True, timeout=900)
    return str(executable)


def frame_name(frame: str) -> str:
    """`func (path/to/module.py:line)` -> `func (module.py)`: samples of one function add up across its lines."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(path).parts
    short = "/".join(parts[parts.index("site-packages") + 1 :]) if "site-packages" in parts else Path(path).name
    return f"{name} ({short})"


def summarize(collapsed: Path, top: int) -> None:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")[1:]]  # the first frame is the process/thread
        total += count
        for name in set(frames):
            inclusive[name] += count
        if frames:
            own[frames[-1]] += count
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\ntop {top} by {title} share:")
        for name, count in counter.most_common(top):
            print(f"  {100 * count / total:5.1f}%  {name}")


async def drive(url: str, tool: str, calls: int, era: str, sessions: int) -> None:
    if sessions > 1:
        await measure.concurrent(url, tool, sessions, max(1, calls // sessions))
    else:
        await measure.sequential(url, tool, calls, 20, era)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", choices=("http", "stdio"), default="http")
    parser.add_argument("--era", choices=("legacy", "2026-07-28"), default="legacy", help="the client's protocol era")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--gil", action="store_true", help="only samples holding the GIL (Python on the CPU)")
    parser.add_argument("--sessions", type=int, default=1, help="sessions calling at once")
    parser.add_argument("--subject", choices=("master", "floor"), default="master")
    args = parser.parse_args()
    name = f"profile-{args.subject}-{args.backend}-{time.strftime('%H%M%S')}.txt"
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, http_backend() as backend:
        if args.subject == "floor":
            subject, tool = floor("sdk", [backend.url] if args.backend == "http" else backend_command()), "echo"
        else:
            server = {"id": "b", "type": "http", "url": backend.url} if args.backend == "http" else stdio_server("b")
            subject, tool = http_master(Path(tmp), [server]), "b__echo"
        with subject as master:
            spy = subprocess.Popen(
                [
                    py_spy(),
                    "record",
                    "--pid",
                    str(master.pid),
                    "--rate",
                    str(args.rate),
                    "--format",
                    "raw",
                    "--output",
                    str(out),
                    "--nonblocking",
                    *(["--gil"] if args.gil else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)
            anyio.run(drive, master.url, tool, args.calls, args.era, args.sessions)
            spy.send_signal(2)  # SIGINT: py-spy writes its output and exits
            spy.wait(60)
    summarize(out, args.top)
    print(f"\ncollapsed stacks: {out}")


if __name__ == "__main__":
    main()
