"""Summaries of repeated measurements: median, p90, p99, spread; ratios between two tools.

A :class:`Summary` never hides its sample count.  Percentiles use the nearest-rank method
on the sorted sample (no interpolation), so with ``n < 100`` the p99 is simply the maximum —
the report prints ``n`` next to it so nobody mistakes a p99 of 10 samples for a tail
estimate.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    p90: float
    p99: float
    min: float
    max: float
    mean: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100) of an already sorted, non-empty sample."""
    if not sorted_values:
        raise ValueError("empty sample")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize(values: Sequence[float]) -> Summary | None:
    if not values:
        return None
    s = sorted(float(v) for v in values)
    return Summary(
        n=len(s),
        median=float(statistics.median(s)),
        p90=percentile(s, 90),
        p99=percentile(s, 99),
        min=s[0],
        max=s[-1],
        mean=float(statistics.fmean(s)),
    )


def ratio(baseline: float | None, ours: float | None) -> float | None:
    """How many times ``baseline`` is larger than ``ours`` (for times: > 1 means we are faster)."""
    if baseline is None or ours is None or ours <= 0:
        return None
    return baseline / ours
