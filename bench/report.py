"""Turning a run's scenarios into the printed table, results.md and results.json.

The table has one line per measured row: scenario, tool, metric, n, median, p90, p99,
spread (min–max), ratio against each baseline named in the row ("3.2× vs syncthing-10s"
means 3.2 times better than that baseline), and the goals judged on that row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.results import Scenario


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _ratios(ratios: dict[str, float | None]) -> str:
    parts = [f"{_num(v)}× vs {k}" for k, v in ratios.items() if v is not None]
    return "; ".join(parts) or "–"


def _verdict(met: bool | None) -> str:
    return {True: "✅ met", False: "❌ missed", None: "? n/a"}[met]


def table_rows(scenarios: list[Scenario]) -> list[list[str]]:
    out: list[list[str]] = []
    for sc in scenarios:
        if sc.error and not sc.rows:
            out.append([sc.id, "ERROR", sc.error[:60], "", "", "", "", "", "", ""])
            continue
        for row in sc.rows:
            s = row.summary
            label = f"{row.tool} {row.metric}"
            goals = [g for g in sc.goals if g.row == label]
            out.append(
                [
                    sc.id,
                    row.tool,
                    f"{row.metric} ({row.unit})",
                    str(s.n) if s else "0",
                    _num(s.median if s else None),
                    _num(s.p90 if s else None) if not row.higher_is_better else "–",
                    _num(s.p99 if s else None) if not row.higher_is_better else "–",
                    f"{_num(s.min)}–{_num(s.max)}" if s else "–",
                    _ratios(row.ratios),
                    "; ".join(f"{_verdict(g.met)} {g.text}" for g in goals),
                ]
            )
    return out


HEADER = ["scenario", "tool", "metric", "n", "median", "p90", "p99", "spread (min–max)",
          "ratio (×, >1 = better)", "goal"]  # fmt: skip


def markdown(scenarios: list[Scenario], meta: dict[str, Any]) -> str:
    lines = ["# Tack benchmark results", ""]
    m = meta["machine"]
    v = meta["versions"]
    lines.append(
        f"Run {meta['started']} ({'quick' if meta['quick'] else 'full'}"
        f"{', sizes overridden: ' + json.dumps(meta['overrides']) if meta['overrides'] else ''}),"
        f" {meta['seconds']:.0f} s. Machine: {m['nproc']} × {m['cpu_model']}, "
        f"{m['ram_gib']} GiB RAM, {m['os']}, kernel {m['kernel']}, load at start "
        f"{m['loadavg_at_start']}."
    )
    lines.append(
        f"Versions: Python {v['python']}, tack {v['tack']}, pycrdt {v['pycrdt']}, "
        f"watchdog {v['watchdog']}, {v['syncthing'] or 'Syncthing: not run'}, "
        f"code under test {v.get('tack_tree', '?')} (each scenario's is in its params), "
        f"{' '.join((v['rsync'] or 'rsync: not found').split()[:3])}."
    )
    if meta.get("filesystem"):
        lines.append(f"Scratch file system: {meta['filesystem']}.")
    if meta.get("syncthing_note"):
        lines.append(f"Syncthing baselines: {meta['syncthing_note']}.")
    lines += ["", "| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for r in table_rows(scenarios):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |")
    lines += ["", "## Goals", ""]
    for sc in scenarios:
        for g in sc.goals:
            lines.append(f"- **{sc.id}** {g.text}: {_verdict(g.met)} ({g.value})")
        if sc.error:
            lines.append(f"- **{sc.id}** ERROR: {sc.error}")
    lines += ["", "## Notes", ""]
    for sc in scenarios:
        lines.append(f"- **{sc.id}** ({sc.title}; {sc.seconds:.0f} s) params: "
                     f"`{json.dumps(sc.params)}`")  # fmt: skip
        for note in sc.notes:
            first = note.strip().splitlines()
            lines.append(f"  - {first[0] if len(first) == 1 else ' / '.join(first[-3:])}")
    prof = [(sc, name, p) for sc in scenarios for name, p in sc.profiles.items()]
    if prof:
        lines += ["", "## Profiles (top inclusive entries)", ""]
        for sc, name, p in prof:
            lines.append(f"### {sc.id} {name} ({p.get('tool', '?')})")
            if "note" in p:
                lines.append(p["note"])
                continue
            lines.append("```")
            for e in p.get("inclusive", [])[:15]:
                lines.append(f"{e['share'] * 100:5.1f}%  {e['frame']}")
            lines.append("-- self --")
            for e in p.get("self", [])[:10]:
                lines.append(f"{e['share'] * 100:5.1f}%  {e['frame']}")
            lines.append("```")
    return "\n".join(lines) + "\n"


def print_table(scenarios: list[Scenario]) -> None:
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # pragma: no cover - rich is a dependency of tack
        for r in table_rows(scenarios):
            print(" | ".join(r))
        return
    table = Table(title="Tack benchmarks", show_lines=False)
    for h in HEADER:
        table.add_column(h, overflow="fold")
    for r in table_rows(scenarios):
        table.add_row(*r)
    Console(width=220).print(table)


def write(out: Path, scenarios: list[Scenario], meta: dict[str, Any]) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    data = {**meta, "scenarios": {sc.id: sc.to_json() for sc in scenarios}}
    js = out / "results.json"
    js.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    md = out / "results.md"
    md.write_text(markdown(scenarios, meta), encoding="utf-8")
    return js, md
