"""The benchmarks' folder probe (``bench/probe.py``) sees every way a file comes to hold
its expected bytes: written in place, renamed in, linked in, inside folders made after the
probe started (a whole new tree at once, as a join makes), and not before the bytes match.
Real files, real inotify."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bench.probe import FolderProbe


def test_arrivals_in_place_renamed_linked_and_in_new_folders(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    wanted = {
        "top.md": b"in place",
        "old/renamed.md": b"renamed in",
        "new/a/b/c/deep.md": b"in a tree made after the probe started",
        "new/a/linked.md": b"linked in",
    }
    with FolderProbe(tmp_path) as probe:
        exp = probe.expect(wanted)
        start = time.perf_counter()
        (tmp_path / "top.md").write_bytes(b"in place")
        (tmp_path / "old" / ".tmp").write_bytes(b"renamed in")
        os.rename(tmp_path / "old" / ".tmp", tmp_path / "old" / "renamed.md")
        # One process makes the tree and its files, faster than any watch can follow.
        subprocess.run(
            ["sh", "-c", "mkdir -p new/a/b/c && printf %s \"$0\" > new/a/b/c/deep.md", wanted[
                "new/a/b/c/deep.md"].decode()],
            cwd=tmp_path, check=True,
        )  # fmt: skip
        (tmp_path / "elsewhere").write_bytes(b"linked in")
        os.link(tmp_path / "elsewhere", tmp_path / "new" / "a" / "linked.md")
        last = exp.wait(10, poll_every=30)  # the poll never runs: events alone must do
        end = time.perf_counter()
    assert exp.pending == {}
    assert exp.polled == 0
    for rel in wanted:
        arrived = exp.arrival(rel)
        assert arrived is not None and start <= arrived <= last <= end, rel


def test_a_file_arrives_only_once_it_holds_the_expected_bytes(tmp_path: Path) -> None:
    card = tmp_path / "card.md"
    with FolderProbe(tmp_path) as probe:
        exp = probe.expect({"card.md": b"final"})
        card.write_bytes(b"not yet")
        with open(card, "ab") as f:  # each write an event; none holds the bytes yet
            f.write(b" still not")
        before = time.perf_counter()
        card.write_bytes(b"final")
        arrived = exp.wait(10, poll_every=30)
    assert arrived >= before
