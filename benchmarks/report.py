"""Rounds of rows -> medians with min/max, ratios taken within each round, and a Markdown table."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

Row = dict[str, Any]

# The figure each scenario's ratio is taken on; True where more is better.
MAIN = {
    "1": ("calls_per_s", True),
    "2": ("calls_per_s", True),
    "3": ("p50_ms", False),
    "4": ("p50_ms", False),
    "5": ("ready_ms", False),
}
SHOWN = {
    "1": ("calls_per_s", "p50_ms", "p99_ms", "cpu_ms_per_call", "client_cpu_ms_per_call"),
    "2": ("calls_per_s", "p50_ms", "p99_ms", "errors", "cpu_ms_per_call"),
    "3": ("p50_ms", "p90_ms", "tools", "client_cpu_ms"),
    "4": ("p50_ms", "p90_ms"),
    "5": ("ready_ms",),
    "6": (
        "kb_per_session",
        "rss_before_kb",
        "rss_after_kb",
        "kb_per_principal",
        "rss_first_kb",
        "rss_half_kb",
        "rss_all_kb",
        "backend_sessions_half",
        "backend_sessions_all",
    ),
}
TITLES = {
    "1": "1. Sequential tools/call on one session",
    "2": "2. Concurrent sessions",
    "3": "3. tools/list of 5,000 tools",
    "4": "4. Session set-up",
    "5": "5. Start-up",
    "6": "6. Memory (RSS of the serving process)",
    "7": "7. CPU ms per call of the process in the middle (utime+stime from /proc/<pid>/stat); for direct rows, the"
    " backend's own (what one SDK server spends on a call)",
}
MASTER = "master"


def _key(row: Row) -> tuple[str, str, str]:
    return row["scenario"], row["case"], row["subject"]


def ratios(rounds: list[list[Row]]) -> dict[tuple[str, str, str], list[float]]:
    """Per (scenario, case, subject): subject/direct of the main figure, one value per round."""
    out: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for rows in rounds:
        direct = {(r["scenario"], r["case"]): r for r in rows if r["subject"] == "direct" and "error" not in r}
        for row in rows:
            scenario = row["scenario"]
            if scenario not in MAIN or "error" in row or (scenario, row["case"]) not in direct:
                continue
            metric, _ = MAIN[scenario]
            base = direct[(scenario, row["case"])]
            if base.get(metric):
                out[_key(row)].append(row[metric] / base[metric])
    return out


def versus_master(rounds: list[list[Row]]) -> dict[tuple[str, str, str], list[float]]:
    """Per peer row: master/peer calls/s within each round (above 1: the master is ahead)."""
    out: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for rows in rounds:
        master = {(r["scenario"], r["case"]): r for r in rows if r["subject"] == MASTER and "error" not in r}
        for row in rows:
            peer = not row["subject"].startswith((MASTER, "direct", "one backend alone"))
            if row["scenario"] in ("1", "2") and peer and "error" not in row:
                mine = master.get((row["scenario"], row["case"]))
                if mine and row.get("calls_per_s"):
                    out[_key(row)].append(mine["calls_per_s"] / row["calls_per_s"])
    return out


def spread(values: list[float], digits: int = 2) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.median(values):.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


def summarize(rounds: list[list[Row]]) -> list[Row]:
    """One row per (scenario, case, subject): each figure as median/min/max over rounds, errors kept."""
    grouped: dict[tuple[str, str, str], list[Row]] = defaultdict(list)
    for rows in rounds:
        for row in rows:
            grouped[_key(row)].append(row)
    ratio, versus = ratios(rounds), versus_master(rounds)
    summary = []
    for key, rows in grouped.items():
        good = [r for r in rows if "error" not in r]
        figures: dict[str, Any] = {}
        for name in {k for r in good for k, v in r.items() if isinstance(v, int | float)}:
            values = [r[name] for r in good if name in r]
            figures[name] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
        entry: Row = {"scenario": key[0], "case": key[1], "subject": key[2], "figures": figures}
        if key in ratio:
            entry["ratio_to_direct"] = ratio[key]
        if key in versus:
            entry["master_vs_this"] = versus[key]
        errors = [r["error"] for r in rows if "error" in r]
        if errors:
            entry["errors"] = errors
        summary.append(entry)
    return summary


def _cell(entry: Row, name: str) -> str:
    figure = entry["figures"].get(name)
    if figure is None:
        return "-"
    digits = 0 if abs(figure["median"]) >= 100 else 2
    if figure["min"] == figure["max"]:
        return f"{figure['median']:.{digits}f}"
    return f"{figure['median']:.{digits}f} [{figure['min']:.{digits}f}..{figure['max']:.{digits}f}]"


def markdown(summary: list[Row], header: str) -> str:
    lines = [header, ""]
    by_scenario: dict[str, list[Row]] = defaultdict(list)
    for entry in summary:
        by_scenario[entry["scenario"]].append(entry)
    for scenario in sorted(by_scenario):
        entries = by_scenario[scenario]
        shown = [n for n in SHOWN[scenario] if any(n in e["figures"] for e in entries)]
        lines += [f"### {TITLES[scenario]}", ""]
        extra = ["ratio to direct"] if scenario in MAIN else []
        extra += ["master ÷ this"] if scenario in ("1", "2") else []
        lines.append("| case | subject | " + " | ".join([*shown, *extra]) + " |")
        lines.append("|" + "---|" * (2 + len(shown) + len(extra)))
        for entry in entries:
            if "errors" in entry and not entry["figures"]:
                cells = [f"error: {entry['errors'][0]}"] + [""] * (len(shown) + len(extra) - 1)
            else:
                cells = [_cell(entry, n) for n in shown]
                if scenario in MAIN:
                    cells.append(
                        spread(entry.get("ratio_to_direct", [])) + ("x" if entry.get("ratio_to_direct") else "")
                    )
                if scenario in ("1", "2"):
                    cells.append(spread(entry.get("master_vs_this", [])) + ("x" if entry.get("master_vs_this") else ""))
            lines.append(f"| {entry['case']} | {entry['subject']} | " + " | ".join(cells) + " |")
        lines.append("")
    cpu = [e for e in summary if "cpu_ms_per_call" in e["figures"]]
    if cpu:
        lines += [f"### {TITLES['7']}", "", "| scenario | case | subject | CPU ms per call |", "|---|---|---|---|"]
        for entry in cpu:
            lines.append(
                f"| {entry['scenario']} | {entry['case']} | {entry['subject']} | {_cell(entry, 'cpu_ms_per_call')} |"
            )
        lines.append("")
    return "\n".join(lines)
