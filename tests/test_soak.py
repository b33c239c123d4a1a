"""Crash and soak with real processes: three ``tack up`` on loopback, real editors, ``kill -9``.

The scene, the invariants and how "deleted" is told apart from "lost" are described in
``tests/soak.py``, which is also the long-profile driver (``.venv/bin/python tests/soak.py
--minutes 30``).  Here CI runs the short profile: ``TACK_SOAK_SECONDS`` (default 120) of
saving, with at least ``TACK_SOAK_KILLS`` (default 30) SIGKILLs; ``TACK_SOAK_SEED`` replays a
seed (every failure message prints it).  The run's folder (spaces, homes, every daemon's log,
``saves.jsonl``, ``kills.json``) stays in pytest's ``tmp_path`` for a post-mortem.

Below it: a quick check of the harness's own race detector, and deterministic reproductions
of bugs the soak found (``xfail(strict=True)`` until they are fixed).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Text
from reactivex.testing import TestScheduler
from soak import TEMP_PREFIX, DirEvents, Soak

import fsbridge.bridge as bridge_module
from engine import MemoryBlobs, Origin, Replica, Store
from engine.spacedoc import TEXT_KEY
from engine.text_edits import Splice, apply_splices
from fsbridge.bridge import BridgeTiming, FolderBridge

SECONDS = float(os.environ.get("TACK_SOAK_SECONDS", "120"))
KILLS = int(os.environ.get("TACK_SOAK_KILLS", "30"))
SEED = int(os.environ.get("TACK_SOAK_SEED", "20240611"))


@pytest.mark.slow
@pytest.mark.timeout(SECONDS + 420)
def test_three_devices_converge_through_kill_9_every_few_seconds(tmp_path: Path) -> None:
    soak = Soak(tmp_path / "soak", SEED, SECONDS, KILLS, log=lambda s: print(f"soak: {s}"))
    result = soak.run()
    print(result.summary())
    assert not result.failures, result.summary()
    assert len(result.kills) >= KILLS, result.summary()
    assert result.saves, result.summary()
    assert {s.tool for s in result.saves} >= {"inplace", "replace"}, result.summary()


def test_race_detector_brackets_tack_renames(tmp_path: Path) -> None:
    """The harness's inotify stream puts a Tack-style rename between a save's two markers."""
    (tmp_path / "a.md").write_bytes(b"x\n")
    events = DirEvents({"": tmp_path})
    try:
        for marker in (".soak-1-a~", ".soak-2-a~"):
            (tmp_path / marker).touch()
        temp = tmp_path / f"{TEMP_PREFIX}a.md-0123abcd"
        temp.write_bytes(b"y\n")
        os.replace(temp, tmp_path / "a.md")
        (tmp_path / "own.tmp").write_bytes(b"z\n")
        os.replace(tmp_path / "own.tmp", tmp_path / "a.md")  # a user's rename: not Tack's
        for marker in (".soak-1-b~", ".soak-2-b~", ".soak-3-a~", ".soak-3-b~"):
            (tmp_path / marker).touch()
    finally:
        events.close()
    between = events.tack_writes_between()
    assert between("", "a.md", ".soak-1-a~", ".soak-1-b~")
    assert not between("", "a.md", ".soak-3-a~", ".soak-3-b~")
    assert not between("", "b.md", ".soak-1-a~", ".soak-1-b~")


# -- bugs the soak found, reproduced deterministically ---------------------------------------------


def test_save_in_the_replace_window_is_merged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    (root / "a.md").write_bytes(b"one\ntwo\n")
    store = Store.open(tmp_path / "store.sqlite")
    try:
        replica = Replica(store, device="soak-repro")
        scheduler = TestScheduler()
        bridge = FolderBridge(root, replica, MemoryBlobs(), scheduler, BridgeTiming())
        bridge.scan()
        scheduler.advance_by(5.0)
        card = replica.card_at("a.md")
        assert card is not None

        real_write = bridge_module.atomic_write
        fired: list[bytes] = []

        def user_saves_during_the_replace(
            path: Path, data: bytes, expected: bytes | None, **kw: Any
        ) -> Any:
            if path.name != "a.md" or fired:
                return real_write(path, data, expected, **kw)

            def editor_save() -> None:  # after Tack's check, before its rename
                temp = path.with_name(".a.md.editor~")
                temp.write_bytes(b"one\ntwo\nUSER\n")
                os.replace(temp, path)
                fired.append(data)

            return real_write(path, data, expected, _before_rename=editor_save)

        monkeypatch.setattr(bridge_module, "atomic_write", user_saves_during_the_replace)
        # A peer's edit arrives; rendering it races with the user's save.
        before = replica.text(card.id)
        replica.transact(
            card.id,
            Origin.API,
            lambda d: apply_splices(d.get(TEXT_KEY, type=Text), before, [Splice(0, 0, "PEER\n")]),
        )
        scheduler.advance_by(10.0)
        assert fired, "the render never wrote a.md"

        text = replica.text(card.id)
        assert (text.count("PEER"), text.count("USER")) == (1, 1), repr(text)
        assert (root / "a.md").read_bytes() == text.encode()
    finally:
        store.close()
