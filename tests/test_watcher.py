"""The watchdog adapter (fsbridge/watcher.py): which events reach the bridge.

Tack's own traffic -- the store's WAL and blobs under ``.tack/``, its temporary files -- is
dropped on the watcher's thread; every event the bridge acts on still reaches it.  The
events are watchdog's own event objects, handed to the handler as its observer would; one
test runs the real observer on a real folder.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)

from fsbridge import atomic
from fsbridge.atomic import Written, atomic_write, atomic_write_many
from fsbridge.bridge import FsEvent
from fsbridge.watcher import FolderWatcher

TMP = ".tack-tmp-card.md-0a1b2c3d"


def delivered(root: Path, *events: FileSystemEvent) -> list[FsEvent]:
    seen: list[FsEvent] = []
    watcher = FolderWatcher(root, seen.append)
    for event in events:
        watcher.on_any_event(event)
    return seen


def test_tacks_own_state_and_temp_files_never_reach_the_bridge(tmp_path: Path) -> None:
    r = str(tmp_path.resolve())
    assert (
        delivered(
            tmp_path,
            FileModifiedEvent(f"{r}/.tack/store.sqlite-wal"),
            FileCreatedEvent(f"{r}/.tack/blobs/partial/ab12"),
            FileDeletedEvent(f"{r}/.tack/blobs/partial/ab12"),
            FileMovedEvent(f"{r}/.tack/blobs/partial/ab12", f"{r}/.tack/blobs/ab12"),
            FileCreatedEvent(f"{r}/notes/{TMP}"),
            FileModifiedEvent(f"{r}/notes/{TMP}"),
            FileClosedEvent(f"{r}/notes/{TMP}"),
            FileDeletedEvent(f"{r}/notes/{TMP}"),
            FileMovedEvent(f"{r}/notes/{TMP}", f"{r}/notes/card.md"),  # Tack's write landing
            FileCreatedEvent(f"{r}/{TMP}"),
        )
        == []
    )


def test_every_event_the_bridge_acts_on_still_reaches_it(tmp_path: Path) -> None:
    r = str(tmp_path.resolve())
    assert delivered(
        tmp_path,
        FileDeletedEvent(f"{r}/.tack/store.sqlite"),  # the bridge stops Tack
        FileDeletedEvent(f"{r}/.tack"),
        FileMovedEvent(f"{r}/{TMP}", f"{r}/.tackignore"),  # Tack rewrote the ignore rules
        FileMovedEvent(f"{r}/.tack/stray.md", f"{r}/notes/stray.md"),  # moved out of .tack
        DirMovedEvent(f"{r}/.tack-tmp-folder", f"{r}/folder"),  # a folder is no temp file
        DirCreatedEvent(f"{r}/notes"),
        FileCreatedEvent(f"{r}/notes/card.md"),
        FileClosedEvent(f"{r}/notes/card.md"),
        FileMovedEvent(f"{r}/notes/card.md", f"{r}/card.md"),
        FileMovedEvent(f"{r}/.tack/store.sqlite", f"{tmp_path.parent}/elsewhere"),
    ) == [
        FsEvent("deleted", ".tack/store.sqlite"),
        FsEvent("deleted", ".tack"),
        FsEvent("moved", TMP, ".tackignore"),
        FsEvent("moved", ".tack/stray.md", "notes/stray.md"),
        FsEvent("moved", ".tack-tmp-folder", "folder", is_dir=True),
        FsEvent("created", "notes", is_dir=True),
        FsEvent("created", "notes/card.md"),
        FsEvent("closed", "notes/card.md"),
        FsEvent("moved", "notes/card.md", "card.md"),
        FsEvent("deleted", ".tack/store.sqlite"),  # moved out of the space: gone
    ]


@contextlib.contextmanager
def watching(root: Path, last: FsEvent) -> Iterator[list[FsEvent]]:
    """The real observer on ``root`` for the ``with`` block; the events it reported, once
    it has reported ``last`` (the block's final step: how a test knows the watcher has
    caught up, without sleeping)."""
    seen: list[FsEvent] = []
    arrived = threading.Event()

    def sink(event: FsEvent) -> None:
        seen.append(event)
        if event == last:
            arrived.set()

    watcher = FolderWatcher(root, sink)
    watcher.start()
    try:
        yield seen
        assert arrived.wait(10), seen
    finally:
        watcher.stop()


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-temps", "named-temps"])
def test_a_batch_of_tack_writes_reaches_the_bridge_as_nothing_but_a_users_save_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """The real observer: Tack writing new files (from unnamed or named temp files; in a
    batch and one by one) says nothing; a user's save that follows is seen."""
    if unnamed and not atomic._USE_TMPFILE:
        pytest.skip("O_TMPFILE and /proc/self/fd are not available here")
    monkeypatch.setattr(atomic, "_USE_TMPFILE", unnamed)
    (tmp_path / "notes").mkdir()
    with watching(tmp_path, FsEvent("closed", "notes/user.md")) as seen:
        writes = [(tmp_path / "notes" / f"c{i}.md", b"card\n", None) for i in range(20)]
        atomic_write_many(writes, lambda inodes: None)
        assert atomic_write(tmp_path / "notes" / "one.md", b"one\n", None) == Written(None)
        (tmp_path / "notes" / "user.md").write_text("mine\n", encoding="utf-8")
    assert {e.path for e in seen} == {"notes/user.md"}, seen
    # Every landing was seen and answered once.
    assert not [p for p in atomic._landed if p.startswith(str(tmp_path))]


def test_a_hard_link_to_a_card_tack_just_wrote_reaches_the_bridge(tmp_path: Path) -> None:
    """A card Tack has just created is linked under a second name (``ln``, then ``rm`` of
    the first, as some tools rename): the new name is the user's, not Tack's landing."""
    if not atomic._USE_TMPFILE:
        pytest.skip("O_TMPFILE and /proc/self/fd are not available here")
    with watching(tmp_path, FsEvent("deleted", "a.md")) as seen:
        assert atomic_write(tmp_path / "a.md", b"card\n", None) == Written(None)
        os.link(tmp_path / "a.md", tmp_path / "b.md")
        os.unlink(tmp_path / "a.md")
    # (a.md's own "created" may reach the bridge too, if a.md was gone when it was looked at)
    assert FsEvent("created", "b.md") in seen, seen


def test_a_users_file_named_like_an_unnamed_temp_still_reaches_the_bridge(
    tmp_path: Path,
) -> None:
    """inotify names an unnamed temp file ``#<inode>``; a user's own file of such a name
    (emacs's autosaves are ``#name#``) is not Tack's, and its save is seen."""
    with watching(tmp_path, FsEvent("closed", "#12345")) as seen:
        (tmp_path / "#12345").write_text("mine\n", encoding="utf-8")
    assert FsEvent("created", "#12345") in seen and FsEvent("modified", "#12345") in seen
