"""The benchmark suite of master-mcp: direct connection vs the master vs peer gateways, in the same run.

    .venv/bin/python benchmarks/run.py [--quick] [--rounds N] [--only 1,2,...] [--no-peers] [--update-docs]

It starts its own backends, masters and peers on loopback (the peers, FastMCP's proxy and mcp-proxy, are
installed into their own venvs under .cache/bench-peers/ on first use), runs each selected scenario in every
round, and writes benchmarks/results/<time>.json and .md. Ratios are computed within each round, since the
figures of a shared machine drift between rounds. Not part of the test run.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import markdown, summarize  # noqa: E402
from benchmarks.scenarios import SCENARIOS, Settings  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    import os

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    from importlib.metadata import version

    return (
        f"{os.cpu_count()} cores ({cpu}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"mcp {version('mcp')}, load average at start {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer calls, one round (about 8 min on 2 cores)")
    parser.add_argument("--rounds", type=int, help="rounds (default: 1 with --quick, else 3)")
    parser.add_argument("--only", default="", help="comma-separated scenarios (1-6; 7 comes with 1 and 2)")
    parser.add_argument("--case", default="", help="only the cases of scenarios 1-2 whose name contains this")
    parser.add_argument("--no-peers", action="store_true", help="skip FastMCP's proxy and mcp-proxy")
    parser.add_argument("--update-docs", action="store_true", help="put the table into docs/benchmarks.md")
    args = parser.parse_args()
    rounds = args.rounds or (1 if args.quick else 3)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose among {', '.join(SCENARIOS)}")

    RESULTS.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%dT%H-%M-%SZ", time.gmtime())
    where = machine()
    results: list[list[dict[str, object]]] = []
    with tempfile.TemporaryDirectory(prefix="master-mcp-bench-") as tmp:
        settings = Settings.of(args.quick, not args.no_peers, Path(tmp), args.case)
        for number in range(1, rounds + 1):
            print(f"round {number}/{rounds}", flush=True)
            rows: list[dict[str, object]] = []
            for scenario in chosen:
                rows += anyio.run(SCENARIOS[scenario], settings)
            results.append(rows)

    summary = summarize(results)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout
    changed = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, cwd=ROOT
    ).stdout
    header = (
        f"Run of {started} ({'quick' if args.quick else 'full'}, {rounds} round(s), scenarios {','.join(chosen)}; "
        f"commit {commit.strip()}{' plus working-tree changes' if changed.strip() else ''}). Machine: {where}. "
        "Figures: median [min..max] over rounds; ratios computed within each round."
    )
    table = markdown(summary, header)
    (RESULTS / f"{started}.json").write_text(
        json.dumps({"machine": where, "settings": vars(args), "rounds": results, "summary": summary}, indent=1)
    )
    (RESULTS / f"{started}.md").write_text(table + "\n")
    print("\n" + table)
    print(f"written: {RESULTS / started}.json and .md")
    if args.update_docs:
        text = DOCS.read_text()
        if BEGIN not in text or END not in text:
            sys.exit(f"{DOCS} has no {BEGIN} ... {END} section to replace")
        head, rest = text.split(BEGIN, 1)
        DOCS.write_text(f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}")
        print(f"updated {DOCS}")


if __name__ == "__main__":
    main()
