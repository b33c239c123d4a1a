"""The watcher's own process: watchdog's observer on the space folder, outside the daemon.

watchdog's observer handles every inotify event in Python on three threads of its own.
Inside the daemon they competed with it for the GIL: while Tack wrote a join's ten thousand
files, the events of its own writes cost the join about a fifth of its time
(BENCHMARKS.md, "Fifth round").  Here the observer runs in a child process, on the other
core, and sends the daemon only the events it must decide on.  ``python -m
fsbridge.watchproc ROOT`` writes them to its stdout and exits when its stdin closes, which
happens when the daemon stops or dies, however it dies.  It ignores SIGINT (a Ctrl-C in the
terminal reaches the whole process group): the daemon decides when it ends.

Each record on stdout is :data:`FIELDS` NUL-terminated fields (paths never hold a NUL):
watchdog's event type, the kind the bridge sees (:class:`fsbridge.bridge.FsEvent`), the
space-relative path, the destination (empty unless moved) and ``1`` for a directory, else
``0``.  Three kinds carry no event: ``ready`` (the watch is in place: nothing later is
missed), ``overflow`` (the kernel's queue overflowed, which watchdog only logs: the bridge
rescans) and ``error`` (the watch could not be set up; the path field says why).  Once
watching, the process exits rather than go on with a watch it cannot trust -- a watchdog
thread died, or watchdog logged an error (it could not rebuild its watches after an
overflow) -- and the daemon starts another.

Dropped here, because the event alone shows it is noise: everything inside ``.tack/`` but
the deletions the bridge stops for, Tack's named temp files, and the writes and close of an
unnamed temp file (inotify names it ``#<inode>`` in its folder) that has no name there.
What needs the daemon's memory -- whether a ``#<inode>`` or a new card's ``created`` is its
own write -- is decided by the daemon (:mod:`fsbridge.watcher`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Callable

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

from fsbridge.atomic import TEMP_PREFIX, unnamed_inode_name

FIELDS = 5
READY = "ready"
OVERFLOW = "overflow"
ERROR = "error"

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
WANTED_EVENTS = [
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

Record = tuple[str, str, str, str, bool]
"""watchdog's event type, the bridge's kind, path, destination ("" if none), is_dir."""


def record_bytes(record: Record) -> bytes:
    etype, kind, path, dest, is_dir = record
    fields = (etype, kind, path, dest, "1" if is_dir else "0")
    return b"".join(os.fsencode(f) + b"\0" for f in fields)


def _rel(root: str, path: str | bytes) -> str | None:
    text = os.fsdecode(path)
    rel = os.path.relpath(text, root)
    if rel == "." or rel.startswith(".."):
        return None
    return rel.replace(os.sep, "/")


def _own_noise(kind: str, path: str, dest: str, is_dir: bool) -> bool:
    """Whether the event concerns only Tack's own state or temp files, which the bridge
    ignores (see :meth:`fsbridge.bridge.FolderBridge.on_event`)."""
    if _TACKIGNORE in (path, dest):
        return False
    if kind == "deleted" and path in _KEPT_DELETES:
        return False

    def temp(rel: str) -> bool:
        return not is_dir and rel.rpartition("/")[2].startswith(TEMP_PREFIX)

    def own(rel: str) -> bool:
        return rel.startswith(_TACK_DIR + "/") or temp(rel)

    if kind == "moved":  # a temp file renamed onto a card: Tack's write landing
        return temp(path) or (own(path) and bool(dest) and own(dest))
    return own(path)


def unnamed_file_event(etype: str, path: str, is_dir: bool) -> bool:
    """Whether the event is a write or close of an unnamed temp file, reported under the
    name ``#<inode>``: such a name holds no file (a user's own file of such a name does)."""
    if is_dir or etype not in ("modified", "closed"):
        return False
    named_as_unnamed = unnamed_inode_name(os.path.basename(path)) is not None
    return named_as_unnamed and not os.path.lexists(path)


def translate(root: str, event: FileSystemEvent) -> Record | None:
    """The record of ``event`` for the daemon (``root`` is the real path of the space), or
    ``None`` for an event the bridge never acts on."""
    etype = event.event_type
    kind = _KINDS.get(etype)
    if kind is None or (etype == "closed" and event.is_directory):
        return None
    is_dir = event.is_directory
    src = _rel(root, event.src_path)
    record: Record | None = None
    if kind == "moved":
        dest = _rel(root, event.dest_path)
        if src is None and dest is not None:
            record = (etype, "created", dest, "", is_dir)
        elif src is not None and dest is None:
            record = (etype, "deleted", src, "", is_dir)
        elif src is not None and dest is not None:
            record = (etype, "moved", src, dest, is_dir)
    elif src is not None:
        record = (etype, kind, src, "", is_dir)
    if record is None or _own_noise(*record[1:]):
        return None
    if unnamed_file_event(etype, os.fsdecode(event.src_path), is_dir):
        return None
    return record


class _Forward(FileSystemEventHandler):
    def __init__(self, root: str, send: Callable[[bytes], None]) -> None:
        super().__init__()
        self._root = root
        self._send = send

    def on_any_event(self, event: FileSystemEvent) -> None:
        record = translate(self._root, event)
        if record is not None:
            self._send(record_bytes(record))


class WatchdogSpy(logging.Handler):
    """Reads watchdog's log: an overflow of the kernel's queue (which watchdog only logs)
    calls ``on_overflow``; an error (it could not rebuild its watches after an overflow)
    calls ``on_failure``, since the watch may be incomplete from then on."""

    def __init__(self, on_overflow: Callable[[], None], on_failure: Callable[[str], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_overflow = on_overflow
        self._on_failure = on_failure

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.ERROR:
            self._on_failure(message)
        elif "overflow" in message.lower():
            self._on_overflow()


def _fail(reason: str) -> None:
    """End the process: the daemon sees its pipe end, starts a new watcher with a complete
    watch, and has the bridge rescan."""
    print(f"tack: the folder watcher failed: {reason}", file=sys.stderr, flush=True)
    os._exit(1)


def _thread_died(args: threading.ExceptHookArgs) -> None:
    """A watchdog thread that dies would leave the watch silent: fail instead."""
    threading.__excepthook__(args)  # the traceback, as Python prints it
    _fail(f"{args.exc_type.__name__} in {args.thread.name if args.thread else 'a thread'}")


def _sender(fd: int) -> Callable[[bytes], None]:
    lock = threading.Lock()

    def send(data: bytes) -> None:
        with lock:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(fd, view) :]
                except BrokenPipeError:
                    os._exit(0)  # the daemon is gone: nobody to tell

    return send


def quiet_double_watches() -> None:
    """Keep watchdog's warning about a folder watched twice off the user's terminal.

    When a tree of folders appears at once (``mkdir -p``, a checkout, a join), watchdog's
    recursive watch adds a folder's watch once while walking its new parent and once more
    for the folder's own creation event.  watchdog 7 then warns (``RuntimeWarning: Callback
    with id ... already exists for watch ...``, kilobytes long) and puts the same callback
    back in its place: nothing is missed.  The process inherits the daemon's stderr, so the
    warning landed in the middle of ``tack up``'s output; only that message is silenced."""
    warnings.filterwarnings(
        "ignore", message=r"Callback with id .* already exists for watch", category=RuntimeWarning
    )


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_double_watches()
    root = os.path.realpath(argv[0])
    send = _sender(sys.stdout.fileno())
    threading.excepthook = _thread_died
    spy = WatchdogSpy(lambda: send(record_bytes(("", OVERFLOW, "", "", False))), _fail)
    for name in ("watchdog.observers.inotify", "watchdog.observers.inotify_c"):
        logging.getLogger(name).addHandler(spy)
    observer = Observer()
    try:
        observer.schedule(_Forward(root, send), root, recursive=True, event_filter=WANTED_EVENTS)
        observer.start()
    except OSError as exc:
        send(record_bytes(("", ERROR, f"cannot watch {root}: {exc}", "", False)))
        return 1
    send(record_bytes(("", READY, "", "", False)))
    while os.read(sys.stdin.fileno(), 4096):
        pass  # the daemon never writes: this returns when it closes its end or dies
    observer.stop()
    observer.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
