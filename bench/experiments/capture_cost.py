"""What observing a document costs when a peer's update is applied to it (P2's cards).

``python -m bench.experiments.capture_cost [--docs 10000] [--size 2048] [--reps 5]``

Each of ``--docs`` fresh documents gets one update holding a text of ``--size`` characters
(a joining device receives one such update per card), applied three ways: on a document
nobody observes; on one observed by a callback that keeps ``event.update`` (how
:class:`engine.replica.Replica` captures what a transaction changed); and on one observed by
a callback that ignores the event.  Prints the median over ``--reps`` of each, per document.
pycrdt builds the event, and the update it carries, for every observed transaction, whether
or not the callback reads it.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import time
from collections.abc import Callable
from typing import Any

from pycrdt import Doc, Text, TransactionEvent


def _updates(docs: int, size: int) -> list[bytes]:
    out = []
    for _ in range(docs):
        doc: Doc[Any] = Doc()
        doc.get("text", type=Text).insert(0, secrets.token_hex(size // 2))
        out.append(doc.get_update())
    return out


def _apply_all(updates: list[bytes], observer: Callable[[TransactionEvent], None] | None) -> float:
    start = time.perf_counter()
    for update in updates:
        doc: Doc[Any] = Doc()
        if observer is not None:
            doc.observe(observer)
        with doc.transaction(origin="peer"):
            doc.apply_update(update)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=10_000)
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--reps", type=int, default=5)
    args = p.parse_args()
    updates = _updates(args.docs, args.size)
    kept: list[bytes] = []
    ways: dict[str, Callable[[TransactionEvent], None] | None] = {
        "not observed": None,
        "observed, update kept": lambda event: kept.append(event.update),
        "observed, event ignored": lambda event: None,
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.reps):  # interleaved, so drift hits every way alike
        for name, observer in ways.items():
            times[name].append(_apply_all(updates, observer))
            kept.clear()
    plain = statistics.median(times["not observed"])
    for name, runs in times.items():
        median = statistics.median(runs)
        print(
            f"{name}: {median / args.docs * 1e6:.1f} µs per document"
            f" ({median:.3f} s for {args.docs}; {median / plain:.2f}× not observed)"
        )


if __name__ == "__main__":
    main()
