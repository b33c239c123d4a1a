"""Real editing traces replayed as file saves, synced to a second device.

Trace: ``automerge-paper`` by Martin Kleppmann and Alastair R. Beresford (the editing trace of
"A Conflict-Free Replicated JSON Datatype", automerge/automerge-perf), converted by Joseph
Gentle (josephg/editing-traces); CC BY 4.0, https://creativecommons.org/licenses/by/4.0/,
used unmodified from ``../shared/data/traces``.  ``seph-blog1`` (Joseph Gentle, CC BY 4.0) adds
non-ASCII insertions and deletions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_multidevice import World

from bench.workload import TRACE_CANDIDATES, load_trace, trace_path
from fsbridge.bridge import FsEvent


def load(name: str) -> dict[str, Any]:
    """The trace, from the shared/ folder beside the checkout or the machine's own
    (``bench.workload.TRACE_CANDIDATES``: a clean clone elsewhere finds it there too)."""
    if trace_path(name) is None:
        where = " or ".join(str(folder) for folder in TRACE_CANDIDATES)
        pytest.skip(f"needs the editing trace {name}.json.gz in {where} (the shared/ data)")
    return load_trace(name)


@pytest.mark.parametrize(("trace", "every"), [("automerge-paper", 300), ("seph-blog1", 300)])
def test_a_trace_saved_on_one_device_ends_byte_identical_on_the_other(
    tmp_path: Path, trace: str, every: int
) -> None:
    data = load(trace)
    world = World(tmp_path, 2)
    a, b = world.devices
    doc = data["startContent"]
    a.write("paper.md", doc)
    world.settle()
    patches = 0
    saves = 0
    for txn in data["txns"]:
        for pos, delete, insert in txn["patches"]:
            doc = doc[:pos] + insert + doc[pos + delete :]
            patches += 1
            if patches % every == 0:
                (a.root / "paper.md").write_text(doc, encoding="utf-8")
                a.bridge.on_event(FsEvent("modified", "paper.md"))
                world.scheduler.advance_by(0.1)
                world.net.flush()
                saves += 1
    (a.root / "paper.md").write_text(doc, encoding="utf-8")
    a.bridge.on_event(FsEvent("modified", "paper.md"))
    world.settle()
    assert doc == data["endContent"]
    assert (b.root / "paper.md").read_text(encoding="utf-8") == data["endContent"]
    card = b.replica.card_at("paper.md")
    assert card is not None and b.replica.text(card.id) == data["endContent"]
    assert saves > 100
