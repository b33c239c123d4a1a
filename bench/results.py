"""The shape of benchmark results: rows of summarized measurements, ratios, goal verdicts.

One :class:`Scenario` per P1…P7.  A :class:`Row` is one tool measured one way (``tack``,
``syncthing-10s``, ``rsync-loopback``…) with its raw samples and :class:`~bench.stats.Summary`.
``vs`` names the row it is compared with; :meth:`Scenario.finish` computes every ratio as
"baseline median / this median" for times (how many times faster this row is) and the
inverse for throughputs, so a ratio above 1 always means "this row is better".
A :class:`Goal` states a target from the issue and whether this run met it (``None`` when
the run could not decide, e.g. the baseline was skipped).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.stats import Summary, summarize


@dataclass
class Row:
    tool: str
    metric: str
    unit: str
    values: list[float]
    vs: list[str] = field(default_factory=list)
    higher_is_better: bool = False
    note: str = ""
    summary: Summary | None = None
    ratios: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.summary = summarize(self.values)

    @property
    def median(self) -> float | None:
        return self.summary.median if self.summary else None

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "metric": self.metric,
            "unit": self.unit,
            "summary": self.summary.to_json() if self.summary else None,
            "values": [round(v, 6) for v in self.values],
            "vs": self.vs,
            "ratios": self.ratios,
            "higher_is_better": self.higher_is_better,
            "note": self.note,
        }


@dataclass
class Goal:
    text: str
    met: bool | None
    value: str = ""
    row: str = ""  # the tool/metric the goal was judged on

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "met": self.met, "value": self.value, "row": self.row}


@dataclass
class Scenario:
    id: str
    title: str
    rows: list[Row] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    seconds: float = 0.0

    def add(self, row: Row) -> Row:
        self.rows.append(row)
        return row

    def row(self, tool: str, metric: str | None = None) -> Row | None:
        for r in self.rows:
            if r.tool == tool and (metric is None or r.metric == metric):
                return r
        return None

    def median(self, tool: str, metric: str | None = None) -> float | None:
        r = self.row(tool, metric)
        return r.median if r is not None else None

    def finish(self) -> None:
        for r in self.rows:
            for name in r.vs:
                base = self.row(name, r.metric) or self.row(name)
                if base is None or base.median is None or r.median is None or r.median <= 0:
                    r.ratios[name] = None
                elif r.higher_is_better:
                    r.ratios[name] = r.median / base.median if base.median > 0 else None
                else:
                    r.ratios[name] = base.median / r.median

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "params": self.params,
            "rows": [r.to_json() for r in self.rows],
            "goals": [g.to_json() for g in self.goals],
            "notes": self.notes,
            "profiles": self.profiles,
            "error": self.error,
            "seconds": round(self.seconds, 1),
        }
