"""One running ``tack up`` per space: an exclusive ``flock`` on ``<space>/.tack/lock``.

Invariants:

* The lock is the kernel's ``flock`` on the open lock file, so it vanishes with its holder,
  however the holder dies (even ``kill -9``); a stale lock file never blocks anyone.
* The lock file is created when missing and never deleted (deleting it would let two processes
  hold locks on two different inodes of "the same" file).  While held, it contains the
  holder's pid and a newline; its content is a hint for messages, never the lock itself.
* The lock descriptor is not inherited by child processes (``O_CLOEXEC``), so a program that
  Tack starts cannot keep the space locked after Tack exits.
* :func:`holder_pid` only probes: it never blocks, never writes and never takes the lock from
  a holder.  Its brief shared-lock probe could make a concurrent :meth:`SpaceLock.acquire`
  fail, so ``acquire`` tells a probe (shared) apart from a holder (exclusive) and retries.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from types import TracebackType

LOCK_NAME = "lock"
_PROBE_RETRIES = 1000


class AlreadyRunning(RuntimeError):
    """Another process holds the space lock; ``pid`` is its pid when known."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        where = f" (pid {pid})" if pid is not None else ""
        super().__init__(f"Tack is already running for this space{where}")


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii").strip()
        pid = int(text)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return pid if pid > 0 else None


class SpaceLock:
    """The exclusive lock of the space whose state directory is ``tack_dir``.

    ``tack_dir`` must exist.  Use as a context manager, or call :meth:`acquire` and
    :meth:`release`.
    """

    def __init__(self, tack_dir: Path) -> None:
        self.path = tack_dir / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`AlreadyRunning` at once (never waits)."""
        if self._fd is not None:
            raise RuntimeError("SpaceLock is already held by this object")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            self._lock_exclusive(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except BaseException:
            os.close(fd)  # closing drops the lock if we got it
            raise
        self._fd = fd

    @staticmethod
    def _lock_exclusive(fd: int) -> None:
        for _ in range(_PROBE_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                pass
            # Held by someone: an exclusive holder (a running Tack) refuses a shared lock too;
            # a shared holder is only a momentary holder_pid() probe, so try again.
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                raise AlreadyRunning(_read_pid(fd)) from None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.sched_yield()
        raise AlreadyRunning(_read_pid(fd))

    def release(self) -> None:
        """Give the lock up (and clear the pid); a no-op when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)

    def __enter__(self) -> SpaceLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def holder_pid(tack_dir: Path) -> int | None:
    """The pid of the process holding the space lock, or ``None`` if nobody holds it.

    Also ``None`` when the lock is held but its pid cannot be read (a holder that has not yet
    written it); use :class:`SpaceLock` itself to decide whether a space is free.
    """
    try:
        fd = os.open(tack_dir / LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
