"""The watcher: inotify events as space-relative :class:`FsEvent` hints, on the owner loop.

watchdog's observer runs in a child process (:mod:`fsbridge.watchproc`), so its threads
never take the daemon's GIL; its records arrive on a pipe that the loop reads.  One read
delivers every record that arrived meanwhile, in order, in one loop turn: a burst (a
``git checkout``, thousands of events) costs one wake-up, and the bridge takes in what it
names together (one network flush for all of it).  Events are hints, never truth: the
bridge always looks at the disk itself.

The child drops what the event alone shows is Tack's noise (its state under ``.tack/``, its
named temp files).  Dropped here, because only this process knows them, are the events of
the unnamed temp files it writes new cards as -- their writes and close, reported as
``#<inode>`` -- and a new card's ``created`` while the path still holds the file Tack
linked there (:func:`fsbridge.atomic.landed_here`).

If the child ends while the daemon runs, a new one is started and the bridge is told to
rescan (events may have been missed); if none can be started, or the child keeps ending
(:data:`MAX_REPLACEMENTS` within :data:`REPLACEMENT_WINDOW` seconds), ``on_fatal`` is told
why.
The child ends by itself when the daemon does: it exits when its stdin closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from fsbridge.atomic import landed_here, unnamed_temp_event
from fsbridge.bridge import FsEvent
from fsbridge.watchproc import ERROR, FIELDS, OVERFLOW, READY, Record

log = logging.getLogger(__name__)

_PIPE_SIZE = 1 << 20  # room for a burst while the loop is busy (Linux; best effort)
# A watcher that keeps dying is given up on (each replacement costs a rescan of the space):
# at most this many replacements within this many seconds.
MAX_REPLACEMENTS = 5
REPLACEMENT_WINDOW = 60.0
_F_SETPIPE_SZ = 1031


class WatcherError(RuntimeError):
    """The watch could not be set up (the path is gone, inotify's watch limit is reached)."""


def accepted(root: str, record: Record) -> FsEvent | None:
    """The bridge's event for a record of the watcher process, or ``None`` when it is Tack
    writing a new file as an unnamed temp file: the temp file's writes and close (reported
    as ``#<inode>``), or the file's creation by its link into place while the path still
    holds it.  ``root`` is the real path of the space."""
    etype, kind, path, dest, is_dir = record
    event = FsEvent(kind, path, dest or None, is_dir)
    if is_dir:
        return event
    if etype in ("modified", "closed"):
        return None if unnamed_temp_event(path.rpartition("/")[2]) else event
    if etype != "created":
        return event  # a file moved in from outside is never Tack's landing
    absolute = os.path.join(root, path)
    try:
        return None if landed_here(absolute, os.lstat(absolute)) else event
    except OSError:
        return event


def _child_command(root: str) -> list[str]:
    """How the watcher process is started.  ``-P`` and a working directory of ``/``: the
    daemon may run from inside a space, whose folders a peer can fill, so the child must
    not import from there (``python -m`` puts the working directory first on its path)."""
    return [sys.executable, "-P", "-m", "fsbridge.watchproc", root]


def _child_env() -> dict[str, str]:
    """The daemon's environment, with its import path (made absolute): the child imports
    this package however the daemon found it."""
    env = dict(os.environ)
    paths = [os.path.abspath(p) for p in sys.path if p and os.path.isdir(p)]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


class FolderWatcher:
    """Watches ``root`` recursively; reports relative events to ``sink`` on ``loop``."""

    def __init__(
        self,
        root: Path,
        sink: Callable[[FsEvent], None],
        loop: asyncio.AbstractEventLoop,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.root = os.path.realpath(root)
        self._sink = sink
        self._loop = loop
        self._on_fatal = on_fatal
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._pending = b""
        self._stopping = False
        self._replaced: collections.deque[float] = collections.deque(maxlen=MAX_REPLACEMENTS)

    @property
    def pid(self) -> int | None:
        """The watcher process's pid (tests kill it to see it replaced)."""
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        """Start watching; returns once the watch is in place (no later edit is missed).
        Raises :class:`WatcherError` if it cannot be set up."""
        self._stopping = False
        early = self._spawn()
        if early:
            self._loop.call_soon(self._deliver, early)

    def stop(self) -> None:
        self._stopping = True
        self._close()

    def _spawn(self) -> list[FsEvent]:
        proc = subprocess.Popen(
            _child_command(self.root),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd="/",
            env=_child_env(),
        )
        assert proc.stdout is not None
        self._proc, self._fd, self._pending = proc, proc.stdout.fileno(), b""
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, _F_SETPIPE_SZ, _PIPE_SIZE)
        early: list[FsEvent] = []
        ready = False
        try:
            # As long as setting up the watch takes (a folder per inotify watch): it ends
            # with ``ready``, an ``error``, or the pipe's end if the child died.
            while not ready:
                data = os.read(self._fd, 1 << 16)
                if not data:
                    raise WatcherError(f"the watcher for {self.root} exited (code {proc.wait()})")
                ready = self._parse(data, early)
        except BaseException:
            self._close()
            raise
        os.set_blocking(self._fd, False)
        self._loop.add_reader(self._fd, self._readable)
        return early

    def _close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the child's cue to stop
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        self._fd = -1

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, _PIPE_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            data = b""
            log.warning("could not read the watcher's events: %s", exc)
        if not data:
            self._replace()
            return
        events: list[FsEvent] = []
        self._parse(data, events)
        self._deliver(events)

    def _replace(self) -> None:
        """The child ended while we run: start another, and rescan for what it missed."""
        code = self._proc.poll() if self._proc is not None else None
        self._close()
        if self._stopping:
            return
        now = time.monotonic()
        if len(self._replaced) == MAX_REPLACEMENTS and now - self._replaced[0] < REPLACEMENT_WINDOW:
            self._give_up(
                f"the folder watcher process ended {MAX_REPLACEMENTS + 1} times within "
                f"{REPLACEMENT_WINDOW:.0f} s (last exit code {code})"
            )
            return
        self._replaced.append(now)
        log.warning("the folder watcher process ended (code %s); starting a new one", code)
        try:
            early = self._spawn()
        except (OSError, WatcherError) as exc:
            self._give_up(str(exc))
            return
        self._deliver([FsEvent("overflow", ""), *early])

    def _give_up(self, why: str) -> None:
        reason = f"cannot watch {self.root} any more: {why}"
        if self._on_fatal is not None:
            self._on_fatal(reason)
        else:
            log.error("%s", reason)

    def _parse(self, data: bytes, events: list[FsEvent]) -> bool:
        """Append the events of the complete records in ``data`` (after what an earlier
        read left over) to ``events``; whether a ``ready`` record was among them."""
        fields = (self._pending + data).split(b"\0")
        complete = (len(fields) - 1) // FIELDS * FIELDS
        self._pending = b"\0".join(fields[complete:])
        ready = False
        for i in range(0, complete, FIELDS):
            etype, kind, path, dest, is_dir = (os.fsdecode(f) for f in fields[i : i + FIELDS])
            if kind == READY:
                ready = True
            elif kind == ERROR:
                raise WatcherError(path)
            elif kind == OVERFLOW:
                events.append(FsEvent("overflow", ""))
            else:
                event = accepted(self.root, (etype, kind, path, dest, is_dir == "1"))
                if event is not None:
                    events.append(event)
        return ready

    def _deliver(self, events: list[FsEvent]) -> None:
        for event in events:
            try:
                self._sink(event)
            except Exception:
                log.exception("internal error while handling %s", event)
