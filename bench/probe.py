"""Knowing the moment a folder holds what we expect, from inotify (watchdog) events.

A :class:`FolderProbe` watches one folder tree, asking inotify only for writes, creations
and renames (its own reads must not wake it, nor the daemon watching the same folder).
:meth:`FolderProbe.expect` registers the paths and the exact bytes they must end up
holding *before* the harness acts; every inotify event naming one of those paths
(created, modified, closed, or the target of a rename — the way both Tack and Syncthing
replace files) makes the probe read that file, and the first event after which it matches
is the arrival time of that path.  When a folder appears, the expected files inside it are
looked at at once (they may land before the folder's watch exists).  A slow fallback poll
covers anything else a recursive watch misses; arrivals it finds are counted in
:attr:`Expectation.polled`, so a report can say how many times were only known to the
poll's resolution.

Times are ``time.perf_counter()`` seconds in the harness process.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from fsbridge.watchproc import quiet_double_watches


class ProbeTimeout(TimeoutError):
    pass


def _read(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


class Expectation:
    """Paths (relative to the probe's root) that must come to hold given bytes."""

    def __init__(self, root: str, wanted: Mapping[str, bytes]) -> None:
        self.root = root
        self.pending: dict[str, bytes] = {os.path.join(root, k): v for k, v in wanted.items()}
        self.total = len(self.pending)
        self.arrived: dict[str, float] = {}
        self.polled = 0
        self.done = threading.Event()
        self._lock = threading.Lock()
        if not self.pending:
            self.done.set()

    def check(self, path: str, when: float, polled: bool = False) -> None:
        want = self.pending.get(path)
        if want is None:
            return
        data = _read(path)
        if data is None or data != want:
            return
        with self._lock:
            if self.pending.pop(path, None) is None:
                return
            self.arrived[path] = when
            if polled:
                self.polled += 1
            if not self.pending:
                self.done.set()

    def poll(self) -> None:
        for path in list(self.pending):
            want = self.pending.get(path)
            if want is None:
                continue
            try:
                size = os.stat(path).st_size
            except OSError:
                continue
            if size == len(want):
                self.check(path, time.perf_counter(), polled=True)

    def wait(self, timeout: float, poll_every: float = 0.5) -> float:
        """perf_counter time at which the last expected path arrived."""
        deadline = time.monotonic() + timeout
        while not self.done.wait(poll_every):
            self.poll()
            if self.done.is_set():
                break
            if time.monotonic() >= deadline:
                missing = sorted(os.path.relpath(p, self.root) for p in self.pending)
                raise ProbeTimeout(
                    f"{len(missing)} of {self.total} paths never arrived within {timeout:.0f} s"
                    f" (e.g. {missing[:3]})"
                )
        return max(self.arrived.values()) if self.arrived else time.perf_counter()

    def arrival(self, rel: str) -> float | None:
        return self.arrived.get(os.path.join(self.root, rel))


WRITES = ("created", "modified", "moved", "closed")
"""Events after which a file may hold new bytes.  Never "opened"/"closed_no_write": the
probe's own reads cause those, and reacting to them would spin (and load the daemon that
watches the same folder)."""
FILTER = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent, DirCreatedEvent]


class _Handler(FileSystemEventHandler):
    def __init__(self, probe: FolderProbe) -> None:
        self.probe = probe

    def on_any_event(self, event: FileSystemEvent) -> None:
        when = time.perf_counter()
        exp = self.probe.current
        if exp is None or event.event_type not in WRITES:
            return
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                # Files may land in a new folder before its watch exists: look at them now.
                folder = os.fsdecode(getattr(event, "dest_path", "") or event.src_path) + os.sep
                for path in [p for p in exp.pending if p.startswith(folder)]:
                    exp.check(path, time.perf_counter())
            return
        for p in (event.src_path, getattr(event, "dest_path", "")):
            if p:
                exp.check(os.fsdecode(p), when)


class FolderProbe:
    """One recursive inotify watch on ``root``; one :class:`Expectation` at a time."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.current: Expectation | None = None
        quiet_double_watches()  # the probe sees a join's new folders as the daemon does
        self._observer = Observer()
        self._observer.schedule(_Handler(self), self.root, recursive=True, event_filter=FILTER)
        self._observer.start()

    def expect(self, wanted: Mapping[str, bytes]) -> Expectation:
        exp = Expectation(self.root, wanted)
        self.current = exp
        return exp

    def close(self) -> None:
        self._observer.stop()
        self._observer.join(timeout=5)

    def __enter__(self) -> FolderProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
