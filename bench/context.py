"""What every scenario of one run shares: sizes, folders, the Syncthing namespace, options.

Sizes come from :data:`FULL` or :data:`QUICK` and can be overridden one by one
(``--set p2_text=2000``); the effective sizes are written into results.json, and any
override is listed in the report, so a reduced run never passes for a full one.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from bench import syncthing
from bench.results import Scenario


@dataclass(frozen=True)
class Sizes:
    p1_saves: int = 200
    p1_st10_saves: int = 12
    p1_st1_saves: int = 30
    p1_gap_s: float = 0.05
    p2_text: int = 10_000  # BENCHMARKS.md's run used 2,000 (see there why)
    p2_binary: int = 20
    p2_binary_bytes: int = 1 << 20
    per_board: int = 100
    p2_reps: int = 3
    p2_st_reps: int = 2
    p2_floor_reps: int = 5
    p3_every: int = 50
    p3_limit: int = 0  # 0: the whole trace
    p3_paced_ms: float = 5.0
    p4_cards: int = 1000
    p4_reps: int = 6
    p4_st_reps: int = 2
    p5_reps: int = 3
    p5_idle_s: float = 10.0
    p6_limit: int = 0  # 0: all 259,778 patches
    p6_reps: int = 2
    p6_file_limit: int = 3000
    p6_batches: tuple[int, ...] = (16, 128)  # transactions per Replica.batch, extra rows
    p7_devices: int = 8
    p7_reps: int = 40
    timeout_s: float = 1800.0


FULL = Sizes()
QUICK = Sizes(
    p1_saves=12,
    p1_st10_saves=2,
    p1_st1_saves=4,
    p2_text=100,
    p2_binary=2,
    p2_binary_bytes=256 * 1024,
    per_board=50,
    p2_reps=1,
    p2_st_reps=1,
    p2_floor_reps=2,
    p3_every=50,
    p3_limit=2000,
    p4_cards=40,
    p4_reps=1,
    p4_st_reps=1,
    p5_reps=1,
    p5_idle_s=2.0,
    p6_limit=3000,
    p6_reps=2,
    p6_file_limit=100,
    p7_devices=3,
    p7_reps=3,
    timeout_s=60.0,
)


def override(sizes: Sizes, assignments: list[str]) -> tuple[Sizes, dict[str, Any]]:
    known = {f.name: f.type for f in fields(Sizes)}
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or key not in known:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY one of {sorted(known)}")
        current = getattr(sizes, key)
        changes[key] = type(current)(float(value)) if isinstance(current, int) else float(value)
    return replace(sizes, **changes), changes


class Context:
    def __init__(
        self,
        quick: bool,
        sizes: Sizes,
        overrides: dict[str, Any],
        work: Path,
        out: Path,
        use_syncthing: bool,
        profile: bool,
    ) -> None:
        self.quick = quick
        self.sizes = sizes
        self.overrides = overrides
        self.work = work
        self.out = out
        self.profile = profile
        self.results: dict[str, Scenario] = {}
        self.stack = contextlib.ExitStack()
        self._netns: str | None = None
        self.syncthing_note = syncthing.available() if use_syncthing else "turned off"
        self.use_syncthing = use_syncthing and self.syncthing_note is None
        self.shared: dict[str, Any] = {}
        self.t0 = time.monotonic()

    def netns(self) -> str:
        if self._netns is None:
            self._netns = self.stack.enter_context(syncthing.namespace())
        return self._netns

    def say(self, message: str) -> None:
        stamp = time.monotonic() - self.t0
        print(f"[{stamp:7.1f}s] {message}", file=sys.stderr, flush=True)

    def params(self) -> dict[str, Any]:
        return asdict(self.sizes)

    def close(self) -> None:
        self.stack.close()
