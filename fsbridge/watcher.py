"""The watchdog adapter: inotify events as space-relative :class:`FsEvent` hints.

Runs watchdog's native observer thread and hands each event to ``sink`` *on that thread*;
the daemon hops it onto the owner loop before anything touches state.  A kernel queue
overflow (which watchdog only logs) becomes an ``overflow`` event so the bridge rescans.
Events are hints, never truth: the bridge always looks at the disk itself.

Tack's own traffic is dropped here, on the watcher's thread, rather than hopped onto the
loop one event at a time only for the bridge to ignore it: events inside ``.tack/`` (the
store's WAL, blobs) and on Tack's temporary files (``.tack-tmp-…``), which make up most
events while Tack writes a join's thousands of files, and the events of the unnamed temp
files new cards are written as (their writes, then the card's ``created`` while the path
still holds Tack's file).  What the bridge does act on among them still passes: the
deletion of ``.tack`` or its store, and anything naming ``.tackignore``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from fsbridge.atomic import TEMP_PREFIX, landed_here, unnamed_temp_event
from fsbridge.bridge import FsEvent

_KINDS = {
    "created": "created",
    "modified": "modified",
    "deleted": "deleted",
    "moved": "moved",
    "closed": "closed",
}

# The events Tack acts on.  Passing them to ``Observer.schedule`` narrows the inotify mask,
# so reads of the space (IN_OPEN, IN_CLOSE_NOWRITE: an indexer, a backup, ``grep -r``)
# never reach Python at all.
_WANTED = [
    FileCreatedEvent,
    DirCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    DirMovedEvent,
    FileDeletedEvent,
    DirDeletedEvent,
    FileClosedEvent,
]


_TACK_DIR = ".tack"
_KEPT_DELETES = (_TACK_DIR, ".tack/store.sqlite")  # the bridge stops when these vanish
_TACKIGNORE = ".tackignore"


def _own_noise(event: FsEvent) -> bool:
    """Whether ``event`` concerns only Tack's own state or temp files, which the bridge
    ignores (see :meth:`fsbridge.bridge.FolderBridge.on_event`)."""
    if _TACKIGNORE in (event.path, event.dest):
        return False
    if event.kind == "deleted" and event.path in _KEPT_DELETES:
        return False

    def temp(rel: str) -> bool:
        return not event.is_dir and rel.rpartition("/")[2].startswith(TEMP_PREFIX)

    def own(rel: str) -> bool:
        return rel.startswith(_TACK_DIR + "/") or temp(rel)

    if event.kind == "moved":  # a temp file renamed onto a card: Tack's write landing
        return temp(event.path) or (own(event.path) and event.dest is not None and own(event.dest))
    return own(event.path)


class _OverflowSpy(logging.Handler):
    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._on_overflow()


class FolderWatcher(FileSystemEventHandler):
    """Watches ``root`` recursively and reports relative events to ``sink``."""

    def __init__(self, root: Path, sink: Callable[[FsEvent], None]) -> None:
        super().__init__()
        self.root = os.path.realpath(root)
        self._sink = sink
        self._observer = Observer()
        self._spy = _OverflowSpy(lambda: sink(FsEvent("overflow", "")))

    def start(self) -> None:
        for name in ("watchdog.observers.inotify", "watchdog.observers.inotify_c"):
            logging.getLogger(name).addHandler(self._spy)
        self._observer.schedule(self, self.root, recursive=True, event_filter=_WANTED)
        self._observer.start()

    def stop(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)
        for name in ("watchdog.observers.inotify", "watchdog.observers.inotify_c"):
            logging.getLogger(name).removeHandler(self._spy)

    def _rel(self, path: str | bytes) -> str | None:
        text = os.fsdecode(path)
        rel = os.path.relpath(text, self.root)
        if rel == "." or rel.startswith(".."):
            return None
        return rel.replace(os.sep, "/")

    def on_any_event(self, event: FileSystemEvent) -> None:
        kind = _KINDS.get(event.event_type)
        if kind is None:
            return
        if event.event_type == "closed" and event.is_directory:
            return
        src = self._rel(event.src_path)
        out: FsEvent | None = None
        if kind == "moved":
            dest = self._rel(event.dest_path)
            if src is None and dest is not None:
                out = FsEvent("created", dest, is_dir=event.is_directory)
            elif src is not None and dest is None:
                out = FsEvent("deleted", src, is_dir=event.is_directory)
            elif src is not None and dest is not None:
                out = FsEvent("moved", src, dest, event.is_directory)
        elif src is not None:
            out = FsEvent(kind, src, is_dir=event.is_directory)
        if out is not None and not _own_noise(out) and not _own_unnamed(event):
            self._sink(out)


def _own_unnamed(event: FileSystemEvent) -> bool:
    """Whether ``event`` is Tack writing a new file as an unnamed temp file: the temp file's
    writes and close (reported as ``#<inode>``), or the file's creation by its link into
    place while the path still holds it (:func:`fsbridge.atomic.landed_here`)."""
    if event.is_directory:
        return False
    src = os.fsdecode(event.src_path)
    if event.event_type in ("modified", "closed"):
        return unnamed_temp_event(src.rpartition("/")[2])
    if event.event_type != "created":
        return False  # a file moved in from outside is never Tack's landing
    try:
        return landed_here(src, os.lstat(src))
    except OSError:
        return False
