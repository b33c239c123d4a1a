"""Whether some process has a file open for writing: an editor in the middle of a save.

Editors that save in place (nano, vim with ``backupcopy=yes``, many IDEs) truncate the file
and then write the new bytes.  Between the two the file is empty or partial, and for as long
as the editor takes — a slow disk, a large file, a stopped process — it is not a save at all.
Tack must neither ingest that state (it would read as "the user deleted everything") nor
rename a peer's version over the file the editor is still writing (the save would land in
an unlinked inode).

Linux tells us exactly this through file leases (``fcntl(2)``, ``F_SETLEASE``): a read lease
is refused with ``EAGAIN`` while any process holds the file open for writing.  We take one
on a read-only descriptor and drop it at once.  While we hold it, another process opening
the file for writing would make the kernel signal us (``SIGIO`` by default, whose default
action ends the process), so the lease's signal is switched to ``SIGURG``, which is ignored
by default — and the open is delayed only for the microseconds until we release the lease.

Where leases are unavailable (not Linux, not the file's owner, a file system without them)
the answer is ``False``: Tack behaves as it did without the check.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
from pathlib import Path

_F_SETLEASE = getattr(fcntl, "F_SETLEASE", None)
_F_SETSIG = getattr(fcntl, "F_SETSIG", None)
_F_RDLCK = getattr(fcntl, "F_RDLCK", 0)
_F_UNLCK = getattr(fcntl, "F_UNLCK", 2)
_LEASE_SIGNAL = int(getattr(signal, "SIGURG", 0))


def open_for_writing(path: Path) -> bool:
    """Whether a process (this one included) holds ``path`` open for writing right now."""
    if _F_SETLEASE is None:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fd_open_for_writing(fd)
    finally:
        os.close(fd)


def fd_open_for_writing(fd: int) -> bool:
    """:func:`open_for_writing` for the file behind ``fd``, a *read-only* descriptor (it works
    on a file that has no name any more, such as one Tack just replaced)."""
    if _F_SETLEASE is None:
        return False
    try:
        if _F_SETSIG is not None:
            fcntl.fcntl(fd, _F_SETSIG, _LEASE_SIGNAL)
        try:
            fcntl.fcntl(fd, _F_SETLEASE, _F_RDLCK)
        except OSError as exc:
            return exc.errno == errno.EAGAIN
        fcntl.fcntl(fd, _F_SETLEASE, _F_UNLCK)
        return False
    except OSError:
        return False
