"""How low can a CRDT join's floor go once it is crash-safe? (P2)

``python -m bench.experiments.join_floors [--reps 4] [--cards 10000] [--batch 128]``

Runs P2's floors (:mod:`bench.floor`) on the same tree of ``--cards`` 2 KB text cards and
20 1 MB binary cards, round after round, each into a fresh folder that is kept until the
end (deleting 10,000 files slows the creations that follow: see ``KEEP_COPIES`` in
``bench/scenarios.py``):

* ``bare``: :func:`~bench.floor.crdt_join_floor` (no crash bookkeeping);
* ``crash-safe``: :func:`~bench.floor.crash_safe_join_floor`, and the same with
  ``overlap`` (a second thread makes each batch durable and renames it while the next one
  is prepared);
* ``tls``: :func:`~bench.floor.tls_join_floor`, with and without ``overlap``;
* ``sync``: :func:`~bench.floor.sync_join_floor` (y-sync per card, hashes, a watcher),
  overlapped.

Checks that every copy holds the tree's exact bytes, and prints each round and the medians.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench import floor, workload

FLOORS: dict[str, Callable[[dict[str, bytes], Path, int], float]] = {
    "bare": floor.crdt_join_floor,
    "crash-safe": floor.crash_safe_join_floor,
    "crash-safe, overlapped": partial(floor.crash_safe_join_floor, overlap=True),
    "tls": floor.tls_join_floor,
    "tls, overlapped": partial(floor.tls_join_floor, overlap=True),
    "sync, overlapped": partial(floor.sync_join_floor, overlap=True),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--cards", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=128)
    args = p.parse_args()
    tree = workload.make_tree(args.cards, 20, 100)
    work = Path(tempfile.mkdtemp(prefix="tack-join-floors-"))
    times: dict[str, list[float]] = {name: [] for name in FLOORS}
    try:
        for rep in range(args.reps):
            for name, land in FLOORS.items():
                dest = work / f"{rep}-{name.replace(' ', '')}"
                times[name].append(land(tree, dest, args.batch))
                wrong = [rel for rel, data in tree.items() if (dest / rel).read_bytes() != data]
                if wrong:
                    raise SystemExit(f"{name} left {len(wrong)} files wrong, e.g. {wrong[0]}")
            print(f"round {rep}: " + ", ".join(f"{n} {t[-1]:.3f} s" for n, t in times.items()),
                  flush=True)  # fmt: skip
        for name, values in times.items():
            print(f"{name}: median {statistics.median(values):.3f} s "
                  f"({min(values):.3f}-{max(values):.3f})")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
