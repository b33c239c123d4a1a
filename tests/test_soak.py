"""Crash and soak with real processes: three ``tack up`` on loopback, real editors, ``kill -9``.

The scene, the invariants and how "deleted" is told apart from "lost" are described in
``tests/soak.py``, which is also the long-profile driver (``.venv/bin/python tests/soak.py
--minutes 30``).  The short profile below is part of the default run (``./dev test``, which CI
runs): ``TACK_SOAK_SECONDS`` (default 120) of saving with at least ``TACK_SOAK_KILLS``
(default 30) SIGKILLs -- typically 40-45 kills and ~1,500 saves in 130-150 s of wall time,
setup and convergence included.  ``TACK_SOAK_SEED`` replays a seed; every failure message
starts with it.  The run's folder (spaces, homes, every daemon's log, ``saves.jsonl``,
``kills.json``, ``events-*.txt``) stays in pytest's ``tmp_path`` for a post-mortem.

Below it: a quick check of the harness's own race detector, and deterministic in-process
reproductions of the bugs the soak found.  Each failed before its fix and stays as a
regression test; a bug found and not yet fixed goes here as ``xfail(strict=True)`` with the
diagnosis as its reason.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pycrdt import Text
from reactivex.testing import TestScheduler
from soak import SED, TEMP_PREFIX, VIM, DirEvents, Save, Soak, TokenSet

import fsbridge.bridge as bridge_module
from engine import MemoryBlobs, Origin, Replica, Store
from engine.spacedoc import TEXT_KEY
from engine.text_edits import Splice, apply_splices
from fsbridge.bridge import BridgeTiming, FolderBridge

SECONDS = float(os.environ.get("TACK_SOAK_SECONDS", "120"))
KILLS = int(os.environ.get("TACK_SOAK_KILLS", "30"))
SEED = int(os.environ.get("TACK_SOAK_SEED", "20240611"))


@pytest.mark.timeout(SECONDS + 420)
def test_three_devices_converge_through_kill_9_every_few_seconds(tmp_path: Path) -> None:
    soak = Soak(tmp_path / "soak", SEED, SECONDS, KILLS, log=lambda s: print(f"soak: {s}"))
    result = soak.run()
    print(result.summary())
    assert not result.failures, result.summary()
    assert len(result.kills) >= KILLS, result.summary()
    assert result.saves, result.summary()
    tools = {"inplace", "replace"} | ({"vim"} if VIM else set()) | ({"sed"} if SED else set())
    assert {s.tool for s in result.saves} >= tools, result.summary()


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


def test_a_stale_save_excuses_only_tokens_its_device_did_not_have_yet(tmp_path: Path) -> None:
    """The harness's leniency: a racy rename-style save may have deleted a token only if the
    token was not already on its device's disk (read there by an earlier save)."""
    soak = Soak(tmp_path, 1, 0, 0)
    numbers = {"tok-w1n000001": 0, "tok-w2n000001": 1}
    saved = Save(1, 1, "A", "alpha.md", "sed", "tok-w1n000001", 1.0, 1.1)
    read_on_c = Save(2, 2, "C", "alpha.md", "sed", "tok-w2n000001", 5.0, 5.1)
    read_on_c.before = TokenSet(numbers, ["tok-w1n000001"])
    assert "tok-w1n000001" in read_on_c.before and "tok-w2n000001" not in read_on_c.before
    stale_on_c = Save(3, 3, "C", "alpha.md", "vim", "tok-w3n000001", 9.0, 9.1, racy=True)
    stale_on_b = Save(4, 3, "B", "alpha.md", "vim", "tok-w3n000002", 9.0, 9.1, racy=True)
    saves = [saved, read_on_c, stale_on_c, stale_on_b]
    assert soak._suspects(saved, saves) == [stale_on_b]  # C had it already: not C's save


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

            # The daemon's hook (its write intents) runs as in any render: a stand-in that
            # dropped it once hid a regression in the bases (RELIABILITY.md, seventh round).
            return real_write(path, data, expected, _before_rename=editor_save, **kw)

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


class Killed(KeyboardInterrupt):
    """Stands for SIGKILL in process.  A KeyboardInterrupt because FolderBridge._safely contains
    every other BaseException (it logs "internal error" and carries on), which a kill never
    lets happen."""


class Life:
    """One life of a Tack process, in process: a replica on a SQLite file and a folder bridge
    on virtual time (as in ``tests/test_crash.py``)."""

    def __init__(self, root: Path, db: Path) -> None:
        self.store = Store.open(db)
        self.replica = Replica(self.store, device="soak-repro")
        self.scheduler = TestScheduler()
        self.bridge = FolderBridge(
            root, self.replica, MemoryBlobs(), self.scheduler, BridgeTiming()
        )
        self.bridge.scan()
        self.scheduler.advance_by(5.0)

    def peer_inserts(self, doc_id: str, pos: int, text: str) -> None:
        """A change that is not the file's (a peer's, here made through the API)."""
        before = self.replica.text(doc_id)
        self.replica.transact(
            doc_id,
            Origin.API,
            lambda d: apply_splices(d.get(TEXT_KEY, type=Text), before, [Splice(pos, 0, text)]),
        )


def test_kill_after_the_rename_then_an_edit_while_down_merges_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    (root / "a.md").write_bytes(b"hello\n")
    first = Life(root, db)
    card = first.replica.card_at("a.md")
    assert card is not None
    real_write = bridge_module.atomic_write

    def write_then_die(path: Path, data: bytes, expected: bytes | None, **kw: Any) -> Any:
        outcome = real_write(path, data, expected, **kw)
        if path.name == "a.md":
            raise Killed
        return outcome

    monkeypatch.setattr(bridge_module, "atomic_write", write_then_die)
    first.peer_inserts(card.id, 5, " world")
    with pytest.raises(Killed):
        first.scheduler.advance_by(5.0)
    monkeypatch.setattr(bridge_module, "atomic_write", real_write)
    first.store.close()
    assert (root / "a.md").read_bytes() == b"hello world\n"  # the rename happened
    with open(root / "a.md", "ab") as f:  # the user saves while Tack is down
        f.write(b"USER\n")

    second = Life(root, db)
    try:
        assert second.replica.text(card.id) == "hello world\nUSER\n"  # bug: "...USER world\n"
        assert (root / "a.md").read_bytes() == b"hello world\nUSER\n"
    finally:
        second.store.close()


def test_a_render_during_an_in_place_save_keeps_the_save(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    (root / "a.md").write_bytes(b"tok-1\n")
    life = Life(root, tmp_path / "store.sqlite")
    try:
        card = life.replica.card_at("a.md")
        assert card is not None
        editor = os.open(root / "a.md", os.O_WRONLY | os.O_TRUNC)  # the save has begun
        life.peer_inserts(card.id, 0, "tok-2\n")  # a peer's line arrives meanwhile
        life.scheduler.advance_by(5.0)
        os.write(editor, b"tok-1\nUSER\n")  # the save completes
        os.close(editor)
        life.bridge.hint("a.md")
        life.scheduler.advance_by(5.0)
        text = life.replica.text(card.id)
        assert sorted(text.splitlines()) == ["USER", "tok-1", "tok-2"], repr(text)  # bug: tok-2
        assert (root / "a.md").read_bytes() == text.encode()
    finally:
        life.store.close()


def test_an_in_place_save_caught_half_done_in_the_replace_window_deletes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    (root / "a.md").write_bytes(b"one\ntwo\n")
    life = Life(root, tmp_path / "store.sqlite")
    try:
        card = life.replica.card_at("a.md")
        assert card is not None
        real_write = bridge_module.atomic_write
        editor: list[int] = []

        def save_begins_in_the_window(
            path: Path, data: bytes, expected: bytes | None, **kw: Any
        ) -> Any:
            if path.name != "a.md" or editor:
                return real_write(path, data, expected, **kw)

            def truncate() -> None:  # nano / vim backupcopy=yes: open(O_TRUNC), then write
                editor.append(os.open(path, os.O_WRONLY | os.O_TRUNC))

            return real_write(path, data, expected, _before_rename=truncate)

        monkeypatch.setattr(bridge_module, "atomic_write", save_begins_in_the_window)
        life.peer_inserts(card.id, 0, "PEER\n")
        life.scheduler.advance_by(1.0)
        assert editor, "the render never wrote a.md"
        os.write(editor[0], b"one\ntwo\nUSER\n")  # the save completes (into the old file)
        os.close(editor[0])
        life.scheduler.advance_by(10.0)
        text = life.replica.text(card.id)
        lines = text.splitlines()
        assert (lines.count("one"), lines.count("two"), lines.count("PEER")) == (1, 1, 1), text
    finally:
        life.store.close()


def test_an_in_place_save_opened_before_the_replace_and_written_after_it_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    (root / "a.md").write_bytes(b"one\ntwo\n")
    life = Life(root, tmp_path / "store.sqlite")
    try:
        card = life.replica.card_at("a.md")
        assert card is not None
        real_write = bridge_module.atomic_write
        editor: list[int] = []

        def save_opens_in_the_window(
            path: Path, data: bytes, expected: bytes | None, **kw: Any
        ) -> Any:
            if path.name != "a.md" or editor:
                return real_write(path, data, expected, **kw)

            def vim_opens() -> None:  # vim, backupcopy=yes: open(O_WRONLY|O_CREAT) ...
                editor.append(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))

            return real_write(path, data, expected, _before_rename=vim_opens)

        monkeypatch.setattr(bridge_module, "atomic_write", save_opens_in_the_window)
        life.peer_inserts(card.id, 0, "PEER\n")
        life.scheduler.advance_by(1.0)
        assert editor, "the render never wrote a.md"
        os.ftruncate(editor[0], 0)  # ... then ftruncate, write, close
        os.write(editor[0], b"one\ntwo\nUSER\n")
        os.close(editor[0])
        life.bridge.hint("a.md")  # inotify reports the write to the old file as a.md's
        life.scheduler.advance_by(10.0)
        text = life.replica.text(card.id)
        lines = text.splitlines()
        assert (lines.count("PEER"), lines.count("USER")) == (1, 1), repr(text)  # bug: no USER
        assert (root / "a.md").read_bytes() == text.encode()
    finally:
        life.store.close()


def test_a_rename_save_while_down_after_a_kill_before_the_write_keeps_the_peer_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    (root / "a.md").write_bytes(b"one\ntwo\n")
    first = Life(root, db)
    card = first.replica.card_at("a.md")
    assert card is not None

    def killed_before_the_write(path: Path, data: bytes, expected: bytes | None, **kw: Any) -> Any:
        temp = path.parent / f"{TEMP_PREFIX}{path.name}-dead"  # written, made durable ...
        temp.write_bytes(data)
        kw["on_temp"](os.lstat(temp).st_ino)  # ... the intents are stored ...
        raise Killed  # ... and the rename never happens

    monkeypatch.setattr(bridge_module, "atomic_write", killed_before_the_write)
    first.peer_inserts(card.id, 0, "PEER\n")
    with pytest.raises(Killed):
        first.scheduler.advance_by(5.0)
    monkeypatch.undo()
    first.store.close()
    assert (root / "a.md").read_bytes() == b"one\ntwo\n"
    temp = root / ".a.md.editor~"  # the user saves while Tack is down: temp file + rename
    temp.write_bytes(b"one\ntwo\nUSER\n")
    os.replace(temp, root / "a.md")

    second = Life(root, db)
    try:
        second.scheduler.advance_by(10.0)
        text = second.replica.text(card.id)
        assert sorted(text.splitlines()) == ["PEER", "USER", "one", "two"], repr(text)  # no PEER
        assert (root / "a.md").read_bytes() == text.encode()
    finally:
        second.store.close()


def test_a_start_up_scan_inside_an_editors_rename_save_keeps_the_card(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    (root / "a.md").write_bytes(b"one\ntwo\n")
    first = Life(root, db)
    card = first.replica.card_at("a.md")
    assert card is not None
    first.store.close()

    os.rename(root / "a.md", root / "a.md~")  # vim saves: the old file becomes the backup...
    store = Store.open(db)
    try:
        replica = Replica(store, device="soak-repro")
        scheduler = TestScheduler()
        bridge = FolderBridge(root, replica, MemoryBlobs(), scheduler, BridgeTiming())
        bridge.scan()  # ...Tack starts in that instant...
        (root / "a.md").write_bytes(b"one\ntwo\nUSER\n")  # ...and vim writes the new file
        os.unlink(root / "a.md~")
        bridge.hint("a.md")  # what the watcher reports
        bridge.hint("a.md~")
        scheduler.advance_by(5.0)
        now = replica.card_at("a.md")
        assert now is not None and now.id == card.id, now  # bug: a new card, the old deleted
        assert replica.text(card.id) == "one\ntwo\nUSER\n"
    finally:
        store.close()


def _written_then_killed(
    root: Path,
    db: Path,
    monkeypatch: pytest.MonkeyPatch,
    initial: bytes = b"one\ntwo\n",
    at: int = 0,
) -> tuple[str, int]:
    """A life that renders a peer's line (``PEER``, inserted at ``at``) into a.md and is
    killed right after the rename, before it settles the intents; returns the card id and
    a.md's inode before the write."""
    (root / "a.md").write_bytes(initial)
    old_inode = os.stat(root / "a.md").st_ino
    first = Life(root, db)
    card = first.replica.card_at("a.md")
    assert card is not None
    real_write = bridge_module.atomic_write

    def write_then_die(path: Path, data: bytes, expected: bytes | None, **kw: Any) -> Any:
        outcome = real_write(path, data, expected, **kw)
        if path.name == "a.md":
            raise Killed
        return outcome

    monkeypatch.setattr(bridge_module, "atomic_write", write_then_die)
    first.peer_inserts(card.id, at, "PEER\n")
    with pytest.raises(Killed):
        first.scheduler.advance_by(5.0)
    monkeypatch.undo()
    first.store.close()
    written = initial[:at] + b"PEER\n" + initial[at:]
    assert (root / "a.md").read_bytes() == written  # Tack's write happened
    return card.id, old_inode


def test_a_rename_save_reusing_the_replaced_inode_number_does_not_double_the_peer_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    card_id, old_inode = _written_then_killed(root, db, monkeypatch)
    temp = root / ".a.md.editor~"  # the user saves while Tack is down: temp file + rename
    temp.write_bytes(b"PEER\none\ntwo\nUSER\n")
    os.replace(temp, root / "a.md")
    # ext4 hands the freed inode number to the next new file; whether this test's temp file
    # got it depends on other files created meanwhile, so say it did.
    real_inode = FolderBridge._inode
    monkeypatch.setattr(
        FolderBridge,
        "_inode",
        staticmethod(lambda p: old_inode if p.name == "a.md" else real_inode(p)),
    )
    second = Life(root, db)
    try:
        text = second.replica.text(card_id)
        assert text == "PEER\none\ntwo\nUSER\n", repr(text)  # bug: "PEER\nPEER\n…"
    finally:
        second.store.close()


def test_a_kill_while_adopting_an_intent_does_not_double_the_peer_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    card_id, _ = _written_then_killed(root, db, monkeypatch)
    store = Store.open(db)  # the next start is killed in the middle of adopting the intent
    real_put, real_replace = store.put_base, store.replace_bases

    def put_then_die(base: Any) -> None:
        if base.key == card_id:
            raise Killed
        real_put(base)

    def replace_then_die(put: list[Any], delete: list[str]) -> None:
        if any(base.key == card_id for base in put):
            raise Killed  # before its transaction commits
        real_replace(put, delete)

    monkeypatch.setattr(store, "put_base", put_then_die)
    monkeypatch.setattr(store, "replace_bases", replace_then_die)
    try:
        replica = Replica(store, device="soak-repro")
        bridge = FolderBridge(root, replica, MemoryBlobs(), TestScheduler(), BridgeTiming())
        with pytest.raises(Killed):
            bridge.scan()
    finally:
        monkeypatch.undo()
        store.close()
    third = Life(root, db)
    try:
        text = third.replica.text(card_id)
        assert text == "PEER\none\ntwo\n", repr(text)  # bug: "PEER\nPEER\none\ntwo\n"
    finally:
        third.store.close()


def test_a_rename_save_around_the_peer_change_after_a_kill_does_not_double_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    card_id, _ = _written_then_killed(root, db, monkeypatch, b"one\ntwo\nthree\n", at=4)
    saved = b"USER1\none\nPEER\ntwo\nthree\nUSER2\n"  # edits before and after PEER's line
    temp = root / ".a.md.editor~"  # saved while Tack is down: temp file + rename
    temp.write_bytes(saved)
    os.replace(temp, root / "a.md")
    second = Life(root, db)
    try:
        text = second.replica.text(card_id)
        assert text == saved.decode(), repr(text)  # bug: "…PEER\nPEER\n…"
    finally:
        second.store.close()


def test_a_rename_save_reusing_a_dead_temp_inode_number_keeps_the_peer_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    (root / "a.md").write_bytes(b"one\ntwo\n")
    first = Life(root, db)
    card = first.replica.card_at("a.md")
    assert card is not None
    temps: list[int] = []
    real_many, real_one = bridge_module.atomic_write_many, bridge_module.atomic_write

    def killed_after_the_intents(store_intents: Any) -> Any:
        def wrapped(inodes: Any) -> None:
            store_intents(inodes)
            temps.extend(inodes if isinstance(inodes, list) else [inodes])
            for left in root.glob(f"{TEMP_PREFIX}*"):  # kill -9 runs no cleanup: the temp
                os.link(left, left.with_name(left.name + "-left"))  # file stays behind
            raise Killed  # the temp file and the intents exist; the rename never happens

        return wrapped

    monkeypatch.setattr(
        bridge_module,
        "atomic_write_many",
        lambda writes, on_temps=None: real_many(writes, killed_after_the_intents(on_temps)),
    )
    monkeypatch.setattr(
        bridge_module,
        "atomic_write",
        lambda path, data, expected, on_temp=None, **kw: real_one(
            path, data, expected, on_temp=killed_after_the_intents(on_temp), **kw
        ),
    )
    first.peer_inserts(card.id, 0, "PEER\n")
    with pytest.raises(Killed):
        first.scheduler.advance_by(5.0)
    monkeypatch.undo()
    first.store.close()
    assert temps and temps[0]
    assert (root / "a.md").read_bytes() == b"one\ntwo\n"  # Tack's write never landed
    temp = root / ".a.md.editor~"  # the user saves while Tack is down: temp file + rename
    temp.write_bytes(b"one\ntwo\nUSER\n")
    os.replace(temp, root / "a.md")
    # The dead temp file's number is free again; say the editor's temp file got it (ext4
    # usually does that; whether it happens here depends on other files created meanwhile).
    real_inode = FolderBridge._inode
    monkeypatch.setattr(
        FolderBridge,
        "_inode",
        staticmethod(lambda p: temps[0] if p.name == "a.md" else real_inode(p)),
    )
    second = Life(root, db)
    try:
        text = second.replica.text(card.id)
        assert sorted(text.splitlines()) == ["PEER", "USER", "one", "two"], repr(text)  # no PEER
    finally:
        second.store.close()


def test_a_late_in_place_save_still_being_written_is_not_ingested_half_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    (root / "a.md").write_bytes(b"one\ntwo\n")
    life = Life(root, tmp_path / "store.sqlite")
    try:
        card = life.replica.card_at("a.md")
        assert card is not None
        real_write = bridge_module.atomic_write
        editor: list[int] = []

        def vim_writes_in_chunks(path: Path, data: bytes, expected: bytes | None, **kw: Any) -> Any:
            if path.name != "a.md" or editor:
                return real_write(path, data, expected, **kw)

            def first_chunk() -> None:  # open, ftruncate, first write -- then preempted
                editor.append(os.open(path, os.O_WRONLY | os.O_CREAT, 0o644))
                os.ftruncate(editor[0], 0)
                os.write(editor[0], b"one\n")

            outcome = real_write(path, data, expected, _before_rename=first_chunk, **kw)
            os.write(editor[0], b"two\nUSER\n")  # the rest, while Tack finishes its write
            return outcome

        monkeypatch.setattr(bridge_module, "atomic_write", vim_writes_in_chunks)
        life.peer_inserts(card.id, 0, "PEER\n")
        life.scheduler.advance_by(1.0)
        assert editor, "the render never wrote a.md"
        os.close(editor[0])  # vim is done
        life.bridge.hint("a.md")
        life.scheduler.advance_by(10.0)
        text = life.replica.text(card.id)
        assert sorted(text.splitlines()) == ["PEER", "USER", "one", "two"], repr(text)
        assert (root / "a.md").read_bytes() == text.encode()  # bug: "PEER\none\n"
    finally:
        life.store.close()


def test_a_start_up_scan_during_an_in_place_save_waits_for_it(tmp_path: Path) -> None:
    root = tmp_path / "space"
    root.mkdir()
    db = tmp_path / "store.sqlite"
    old = b"".join(b"line %d\n" % i for i in range(20))
    (root / "a.md").write_bytes(old)
    first = Life(root, db)
    card = first.replica.card_at("a.md")
    assert card is not None
    first.store.close()
    store = Store.open(db)  # a peer's line arrives while Tack is stopped: stored, not written
    try:
        replica = Replica(store, device="peer")
        text = replica.text(card.id)
        at = text.index("line 15")
        replica.transact(
            card.id,
            Origin.PEER,
            lambda d: apply_splices(d.get(TEXT_KEY, type=Text), text, [Splice(at, 0, "PEER\n")]),
        )
    finally:
        store.close()
    new = old + b"USER\n"  # the user saves in place (vim, backupcopy=yes) from the file
    editor = os.open(root / "a.md", os.O_WRONLY)
    os.ftruncate(editor, 0)
    os.write(editor, new[:40])  # the first chunk is written when Tack starts and scans
    second = Life(root, db)
    try:
        os.write(editor, new[40:])
        os.close(editor)
        second.bridge.hint("a.md")  # the watcher reports the save's close
        second.scheduler.advance_by(10.0)
        expected = new.decode().replace("line 15\n", "PEER\nline 15\n")
        assert second.replica.text(card.id) == expected  # bug: "...line PEER\n5\n..."
    finally:
        second.store.close()
