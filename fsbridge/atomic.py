"""Atomic, compare-and-swap replacement of a user's file: the only code that writes one.

:func:`atomic_write` replaces ``path`` with new bytes only if the file still holds what the
caller believes it holds (``expected``; ``None`` meaning "must not exist").

Invariants:

* ``path`` never holds a partial write: the new content goes to a temporary file in the same
  directory (named ``.tack-tmp-…``, which :mod:`fsbridge.ignore` always ignores), is fsynced,
  and is then renamed over the target; the directory is fsynced after the rename.
* On any error the temporary file is removed and the error propagates as :class:`OSError`;
  ``path`` is left as it was.
* Nothing a user saved is lost by us:

  - if the file is not ``expected`` when checked, nothing is written (:class:`Changed`);
  - a file that appears while we create one is never clobbered (no-replace rename);
  - a save that lands between our check and our rename — bytes written in place into the old
    file, or (where the kernel supports ``RENAME_EXCHANGE``) another file renamed over the
    target — is read back after our rename and returned as :attr:`Written.late_bytes`, so the
    caller can ingest it as an edit.  A file deleted in that window stays deleted.

* The replacement keeps the old file's permission bits (and, best effort, its owner and
  group); a new file gets ``0o666 & ~umask``.  Missing parent directories are created (and
  each one made durable by fsyncing its parent) only when creating a new file.
* A symbolic link at ``path`` is neither written through nor replaced: :func:`atomic_write`
  raises :class:`OSError` (``ELOOP``) and leaves it alone.  (:func:`read_bytes` follows links;
  whether a link is a card at all is the scanner's decision.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TEMP_PREFIX = ".tack-tmp-"
"""Every temporary file Tack creates starts with this; :mod:`fsbridge.ignore` ignores them."""
_NAME_MAX = 255
_RANDOM_LEN = 8  # hex characters

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1
_RENAME_EXCHANGE = 2


@dataclass(frozen=True)
class Written:
    """The new content is in place.

    ``late_bytes`` is what someone saved into the target during the replace window (after our
    check, before our rename) and so is no longer visible on disk; ``None`` if nothing was.
    """

    late_bytes: bytes | None


@dataclass(frozen=True)
class Changed:
    """The file was not what the caller expected; nothing was written.

    ``current`` is what the file held when checked (``None``: it does not exist).
    """

    current: bytes | None


def _load_renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    return func


_renameat2: Any = _load_renameat2()
_USE_RENAMEAT2 = _renameat2 is not None
"""Whether to use renameat2(2); tests turn it off to exercise the portable fallbacks."""

_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}


def _rename2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(src, dst, flags); False if the kernel or file system does not support it."""
    if not _USE_RENAMEAT2:
        return False
    ret = _renameat2(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags)
    if ret == 0:
        return True
    err = ctypes.get_errno()
    if err in _UNSUPPORTED:
        return False
    raise OSError(err, os.strerror(err), str(src), None, str(dst))


class NotARegularFile(OSError):
    """The path is a symlink, FIFO, socket or device: Tack never reads through it."""


def read_bytes(path: Path) -> bytes | None:
    """The content of the regular file ``path``, or ``None`` if it does not exist.

    Never follows a final symlink and never blocks on a FIFO (``O_NOFOLLOW | O_NONBLOCK``):
    those raise :class:`NotARegularFile`.  Raises :class:`IsADirectoryError` for a directory
    and other :class:`OSError` as is.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise NotARegularFile(
                errno.ELOOP, "is a symbolic link (not followed)", str(path)
            ) from exc
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if not stat.S_ISREG(mode):
            raise NotARegularFile(errno.EINVAL, "is not a regular file", str(path))
        os.set_blocking(fd, True)
        return _read_all(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make the entries of directory ``path`` durable (renames, creations, removals).

    File systems that cannot fsync a directory (EINVAL) are taken as having nothing to do.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _read_all(fd: int) -> bytes:
    """Everything in the file behind ``fd``, from offset 0."""
    os.lseek(fd, 0, os.SEEK_SET)
    chunks: list[bytes] = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _temp_name(target_name: str) -> str:
    """``.tack-tmp-<name>-<random>``, with ``<name>`` shortened to keep within NAME_MAX."""
    room = _NAME_MAX - len(TEMP_PREFIX) - 1 - _RANDOM_LEN
    name = os.fsdecode(os.fsencode(target_name)[:room])
    return f"{TEMP_PREFIX}{name}-{secrets.token_hex(_RANDOM_LEN // 2)}"


def _make_parents(directory: Path) -> None:
    """Create ``directory`` and missing ancestors, fsyncing each new one's parent."""
    missing: list[Path] = []
    cursor = directory
    while not cursor.is_dir():
        missing.append(cursor)
        if cursor.parent == cursor:
            break
        cursor = cursor.parent
    for new_dir in reversed(missing):
        try:
            os.mkdir(new_dir)
        except FileExistsError:
            if not new_dir.is_dir():
                raise
            continue
        fsync_dir(new_dir.parent)


def _create_temp(
    directory: Path, target_name: str, data: bytes, like: os.stat_result | None
) -> Path:
    """Write ``data`` durably to a new temp file beside the target; return its path."""
    for _ in range(100):
        temp = directory / _temp_name(target_name)
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(errno.EEXIST, "could not create a unique temp file", str(directory))
    try:
        try:
            if like is not None:
                if (like.st_uid, like.st_gid) != (os.geteuid(), os.getegid()):
                    with contextlib.suppress(PermissionError):
                        os.fchown(fd, like.st_uid, like.st_gid)
                os.fchmod(fd, stat.S_IMODE(like.st_mode))
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return temp


def atomic_write(
    path: Path,
    data: bytes,
    expected: bytes | None,
    *,
    _before_rename: Callable[[], object] | None = None,
) -> Written | Changed:
    """Replace ``path`` with ``data`` if it holds ``expected`` (``None``: must not exist).

    Returns :class:`Written` (with any late in-window save) or :class:`Changed` (nothing
    written).  ``_before_rename`` is a test hook run after the check, just before the rename.
    """
    directory = path.parent
    try:
        like: os.stat_result | None = os.lstat(path)
    except FileNotFoundError:
        like = None
    except NotADirectoryError:
        if expected is not None:
            return Changed(None)  # a parent is a file, so the target does not exist
        raise
    if like is not None and stat.S_ISDIR(like.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if like is not None and stat.S_ISLNK(like.st_mode):
        raise OSError(errno.ELOOP, "refusing to replace a symbolic link", str(path))
    if expected is None:
        if like is not None:
            return Changed(read_bytes(path))
        _make_parents(directory)
        return _create_new(path, data, _before_rename)
    if like is None:
        return Changed(None)
    return _replace_existing(path, data, expected, like, _before_rename)


def _create_new(
    path: Path, data: bytes, before_rename: Callable[[], object] | None
) -> Written | Changed:
    temp = _create_temp(path.parent, path.name, data, None)
    try:
        if before_rename is not None:
            before_rename()
        try:
            if not _rename2(temp, path, _RENAME_NOREPLACE):
                _link_noreplace(temp, path)
        except FileExistsError:
            return Changed(read_bytes(path))
        fsync_dir(path.parent)
        return Written(None)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _link_noreplace(temp: Path, path: Path) -> None:
    """Give ``temp``'s file the name ``path`` unless ``path`` exists (FileExistsError)."""
    try:
        os.link(temp, path)
    except FileExistsError:
        raise
    except OSError as exc:
        # No hard links here (e.g. vfat): check-then-rename, with a tiny unavoidable window.
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK):
            raise
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.rename(temp, path)
    # The temp name is unlinked by the caller.


def _replace_existing(
    path: Path,
    data: bytes,
    expected: bytes,
    like: os.stat_result,
    before_rename: Callable[[], object] | None,
) -> Written | Changed:
    temp = _create_temp(path.parent, path.name, data, like)
    old_fd = -1
    try:
        try:
            old_fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            return Changed(None)
        old_stat = os.fstat(old_fd)
        if stat.S_ISDIR(old_stat.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        current = _read_all(old_fd)
        if current != expected:
            return Changed(current)
        if before_rename is not None:
            before_rename()

        try:
            exchanged = _rename2(temp, path, _RENAME_EXCHANGE)
        except FileNotFoundError:
            if os.path.lexists(temp):
                return Changed(None)  # the target was deleted in the window: leave it so
            raise
        if exchanged:
            # ``temp`` now names whatever was at ``path`` an instant ago.
            displaced = os.lstat(temp)
            if (displaced.st_dev, displaced.st_ino) == (old_stat.st_dev, old_stat.st_ino):
                late: bytes | None = _read_all(old_fd)
            elif stat.S_ISREG(displaced.st_mode):
                late = read_bytes(temp)  # someone renamed their own save over the target
            else:
                # Not a file any more (a directory or symlink renamed in): put it back.
                _rename2(temp, path, _RENAME_EXCHANGE)
                return Changed(read_bytes(path))
            os.unlink(temp)
        else:
            try:
                now = os.lstat(path)
            except FileNotFoundError:
                return Changed(None)
            if (now.st_dev, now.st_ino) != (old_stat.st_dev, old_stat.st_ino):
                return Changed(read_bytes(path))
            os.replace(temp, path)
            late = _read_all(old_fd)
        fsync_dir(path.parent)
        return Written(late if late is not None and late != expected else None)
    finally:
        if old_fd >= 0:
            os.close(old_fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
