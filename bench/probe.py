"""Knowing the moment a folder holds what we expect, from inotify events.

A :class:`FolderProbe` watches one folder tree with inotify itself (one thread reading the
kernel's events in large buffers: the probe runs beside the daemons it measures, on a
2-CPU machine, so what it costs in CPU it takes from them).  It asks inotify only for
writes, creations and renames (its own reads must not wake it, nor the daemon watching the
same folder).  :meth:`FolderProbe.expect` registers the paths and the exact bytes they must
end up holding *before* the harness acts; every inotify event naming one of those paths
(created, modified, closed after writing, or the target of a rename — the way both Tack and
Syncthing replace files) makes the probe read that file, and the first event after which it
matches is the arrival time of that path.  When a folder appears, the probe watches it (and
any folders already inside it), then looks at the expected files inside it at once (they
may land before the folder's watch exists).  A slow fallback poll covers anything else,
and a queue overflow makes the probe look at every pending path; arrivals found that way
are counted in :attr:`Expectation.polled`, so a report can say how many times were only
known to the poll's resolution.

Until the eleventh round the probe used watchdog's observer (three threads and an event
object per event).  During a 10,000-file join the harness process used 0.77–0.89 s of CPU
with it and 0.33–0.44 s with this probe, and Syncthing's join ran about 12 % faster beside
this one (BENCHMARKS.md, "Eleventh round").

Times are ``time.perf_counter()`` seconds in the harness process.
"""

from __future__ import annotations

import ctypes
import errno
import os
import select
import struct
import threading
import time
from collections.abc import Mapping
from pathlib import Path


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

    def check_under(self, folder: str, when: float) -> None:
        """Look at every pending path inside ``folder`` (a folder that just appeared)."""
        prefix = folder.rstrip(os.sep) + os.sep
        for path in [p for p in self.pending if p.startswith(prefix)]:
            self.check(path, when)

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


# From <sys/inotify.h>.
IN_MODIFY = 0x002
IN_CLOSE_WRITE = 0x008
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC
WRITES = IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO
"""Events after which a file may hold new bytes.  Never IN_OPEN, IN_ACCESS or
IN_CLOSE_NOWRITE: the probe's own reads cause those, and reacting to them would spin (and
load the daemon that watches the same folder)."""
HEADER = struct.Struct("iIII")  # wd, mask, cookie, len of the name that follows
READ_SIZE = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)


def _checked(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


class FolderProbe:
    """One recursive inotify watch on ``root``; one :class:`Expectation` at a time."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self.current: Expectation | None = None
        self._fd = _checked(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        self._folders: dict[int, str] = {}
        self._stop_r, self._stop_w = os.pipe()
        self._watch_tree(self.root)
        self._thread = threading.Thread(target=self._run, name="folder-probe", daemon=True)
        self._thread.start()

    def expect(self, wanted: Mapping[str, bytes]) -> Expectation:
        exp = Expectation(self.root, wanted)
        self.current = exp
        return exp

    def close(self) -> None:
        if self._thread.is_alive():
            os.write(self._stop_w, b"x")
            self._thread.join(timeout=5)
        for fd in (self._fd, self._stop_r, self._stop_w):
            os.close(fd)

    def __enter__(self) -> FolderProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _watch_tree(self, top: str) -> None:
        """Watch ``top`` and every folder already inside it (a folder may vanish meanwhile)."""
        for folder, _, _ in os.walk(top):
            wd = _libc.inotify_add_watch(self._fd, os.fsencode(folder), WRITES)
            if wd >= 0:
                self._folders[wd] = folder
            elif ctypes.get_errno() not in (errno.ENOENT, errno.ENOTDIR):
                _checked(wd, f"inotify_add_watch {folder}")

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._stop_r, select.POLLIN)
        while True:
            ready = {fd for fd, _ in poller.poll()}
            if self._stop_r in ready:
                return
            try:
                buf = os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                continue
            self._handle(buf, time.perf_counter())

    def _handle(self, buf: bytes, when: float) -> None:
        exp = self.current
        offset, end = 0, len(buf)
        while offset < end:
            wd, mask, _, size = HEADER.unpack_from(buf, offset)
            name = buf[offset + HEADER.size : offset + HEADER.size + size].rstrip(b"\0")
            offset += HEADER.size + size
            if mask & IN_Q_OVERFLOW:
                if exp is not None:
                    exp.poll()
                continue
            folder = self._folders.get(wd)
            if mask & IN_IGNORED:
                self._folders.pop(wd, None)
                continue
            if folder is None or (exp is None and not mask & IN_ISDIR):
                continue
            path = os.path.join(folder, os.fsdecode(name))
            if mask & IN_ISDIR:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    # Files may land in a new folder before its watch exists: watch it,
                    # then look at what it already holds.
                    self._watch_tree(path)
                    if exp is not None:
                        exp.check_under(path, time.perf_counter())
                continue
            assert exp is not None
            exp.check(path, when)
