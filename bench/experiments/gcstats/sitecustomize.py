"""How much a ``tack up`` process spends collecting garbage, generation by generation.

Not part of Tack: a measuring aid.  Python imports ``sitecustomize`` at start-up from its
path, so putting this folder on ``PYTHONPATH`` (the daemons inherit it) makes every
``tack up`` write one line to ``$TMPDIR/gcstats-<pid>.txt`` when it exits: its GC thresholds,
then per generation the number of collections and the seconds they took (timed by
``gc.callbacks``).  For the eighth round's A/B, a copy sat in the old worktree too (whose
path ``join_ab`` puts first for the old variant's daemons)::

    cp bench/experiments/gcstats/sitecustomize.py <old worktree>/
    PYTHONPATH=bench/experiments/gcstats python -m bench.experiments.join_ab --old <old worktree>
"""

from __future__ import annotations

import atexit
import gc
import os
import sys
import tempfile
import time
from typing import Any

_collections = {0: 0, 1: 0, 2: 0}
_seconds = {0: 0.0, 1: 0.0, 2: 0.0}
_started = [0.0]


def _timed(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[0] = time.perf_counter()
    else:
        generation = int(info["generation"])
        _collections[generation] += 1
        _seconds[generation] += time.perf_counter() - _started[0]


@atexit.register
def _report() -> None:
    if "up" not in sys.argv:
        return
    per_generation = " ".join(
        f"gen{g}: {_collections[g]} in {_seconds[g]:.3f} s" for g in sorted(_collections)
    )
    path = os.path.join(tempfile.gettempdir(), f"gcstats-{os.getpid()}.txt")
    with open(path, "w", encoding="utf-8") as out:
        out.write(f"{' '.join(sys.argv[1:3])} thresholds {gc.get_threshold()} {per_generation}\n")


gc.callbacks.append(_timed)
