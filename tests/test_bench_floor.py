"""The crash-safe join floors of P2 do the work they are named for: every file of the tree
lands with its exact bytes and no temp file left, and each file ends with one base and no
write intent (bench/floor.py), and the floor with a watcher has it see every file placed.
A floor that dropped a file or skipped a step would be faster, and the ratio against it a
lie."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from bench import floor, workload

Floor = Callable[..., float]


@pytest.mark.parametrize("overlap", [False, True], ids=["serial", "overlapped"])
@pytest.mark.parametrize(
    "land",
    [floor.crash_safe_join_floor, floor.tls_join_floor, floor.sync_join_floor],
    ids=["crash-safe", "tls", "sync"],
)
def test_a_join_floor_lands_every_file_with_its_base(
    tmp_path: Path, land: Floor, overlap: bool
) -> None:
    tree = workload.make_tree(30, 2, 10, bin_size=64 * 1024)
    dest = tmp_path / "copy"
    assert land(tree, dest, batch=8, overlap=overlap) > 0
    store = {".store.sqlite", ".store.sqlite-wal", ".store.sqlite-shm"}
    landed = {
        str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and p.name not in store
    }
    assert landed == set(tree)  # nothing missing, no temp file left
    for rel, data in tree.items():
        assert (dest / rel).read_bytes() == data, rel
    with sqlite3.connect(dest / ".store.sqlite") as db:
        bases = db.execute("SELECT key, path FROM bases").fetchall()
        logged = db.execute("SELECT COUNT(*) FROM log").fetchone()[0]
    assert not [key for key, _ in bases if key.endswith("#intent")]
    assert sorted(path for _, path in bases) == sorted(tree)
    assert logged == 30  # one update per text card


def test_the_sync_floors_watcher_sees_every_file_placed(tmp_path: Path) -> None:
    tree = workload.make_tree(40, 3, 10, bin_size=16 * 1024)
    run = floor.sync_join(tree, tmp_path / "copy", batch=8, overlap=True)
    # 43 files are far from the 16,384 events the kernel queues: an overflow here is a bug.
    assert (run.watched.placed, run.watched.overflows) == (set(tree), 0)


def test_the_sync_floor_of_an_empty_space_ends(tmp_path: Path) -> None:
    # Nothing to land: the layout's answer alone ends the join, and the watcher, which
    # expects no placement, ends with it.
    run = floor.sync_join({}, tmp_path / "copy")
    assert (run.watched.placed, run.watched.overflows) == (set(), 0)


def test_the_floors_watcher_counts_every_file_placed_and_nothing_else(tmp_path: Path) -> None:
    space, outside = tmp_path / "space", tmp_path / "outside" / "board"
    space.mkdir()
    outside.mkdir(parents=True)
    for name in ("a.md", "b.md", ".c.md.tmp"):
        (outside / name).write_text(name)
    with floor.placement_watcher(space, 4) as watched:
        # A folder that arrives with its files: watchdog reports them as created, not moved
        # (as it does for files placed in a new folder before its watch is added).
        os.rename(outside, space / "board")
        for rel in ("d.md", "board/e.md"):
            temp = space / rel.replace(".md", ".tmp")
            temp = temp.with_name("." + temp.name)
            temp.write_text(rel)
            os.rename(temp, space / rel)
    # The temp files, the folder and the moves' sources are not placements.
    assert watched.placed == {"board/a.md", "board/b.md", "d.md", "board/e.md"}
    assert watched.overflows == 0
