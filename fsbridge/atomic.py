"""Atomic, compare-and-swap replacement of a user's file: the only code that writes one.

:func:`atomic_write` replaces ``path`` with new bytes only if the file still holds what the
caller believes it holds (``expected``; ``None`` meaning "must not exist").

Invariants:

* ``path`` never holds a partial write: the new content goes to a temporary file in the same
  directory (named ``.tack-tmp-…``, which :mod:`fsbridge.ignore` always ignores), is fsynced,
  and is then renamed over the target; the directory is fsynced after the rename.  A new
  file's temporary file has no name at all where the kernel allows (``O_TMPFILE``): it is
  written and made durable unnamed, then linked into place with no-replace semantics, so
  that watchers see one ``created`` event rather than a temp file's creation, writes and
  rename (see :func:`landed_here`).  A crash leaves no unnamed file behind: the kernel
  frees it.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsbridge.openwriters import fd_open_for_writing

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
    # The late save was written into the file we displaced (an editor writing in place), so
    # it may still be going on; ``False`` when a whole file was renamed in.
    in_place: bool = field(default=False, compare=False)


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


def _load_syncfs() -> Any:
    try:
        func = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    func.argtypes = [ctypes.c_int]
    func.restype = ctypes.c_int
    return func


_syncfs: Any = _load_syncfs()
_renameat2: Any = _load_renameat2()
_USE_RENAMEAT2 = _renameat2 is not None
"""Whether to use renameat2(2); tests turn it off to exercise the portable fallbacks."""

_UNSUPPORTED = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}

_O_TMPFILE: int = getattr(os, "O_TMPFILE", 0)
_PROC_FDS = "/proc/self/fd"
_USE_TMPFILE = bool(_O_TMPFILE) and os.path.isdir(_PROC_FDS)
"""Whether new files start as unnamed inodes (``O_TMPFILE``, linked into place through
``/proc/self/fd``); tests turn it off to exercise named temp files."""
_MAX_UNNAMED = 512
"""Unnamed temp files open at once in one :func:`atomic_write_many` (each holds a
descriptor until it is linked); further new files in the batch get named temp files."""

_RECENT_MAX = 4096
# Both are bounded (oldest first out).  The watcher looks events up in them as the events
# arrive from its process (fsbridge/watcher.py); a landing forgotten first only means an
# event the bridge takes in and finds to be nothing (the file holds its base).
_unnamed_inodes: dict[int, None] = {}  # inodes of the latest unnamed temp files
_landed: dict[str, tuple[int, int]] = {}  # path → (device, inode) linked there, not yet seen


def _remember(table: dict[Any, Any], key: Any, value: Any) -> None:
    table[key] = value
    if len(table) > _RECENT_MAX:
        with contextlib.suppress(StopIteration, KeyError, RuntimeError):
            del table[next(iter(table))]


def landed_here(path: str, st: os.stat_result) -> bool:
    """Whether ``path`` still holds the file this process linked there from an unnamed temp
    file (``st`` is the path's stat), and that landing was not yet asked about.  Safe to
    call from any thread; each landing answers ``True`` once.

    The watcher drops that file's ``created`` event: it is Tack's own write landing, as a
    temp file renamed onto a card is.  A hard link made to it elsewhere, or any other file
    at the path, is not it."""
    landed = _landed.get(path)
    if landed is None or landed != (st.st_dev, st.st_ino):
        return False
    _landed.pop(path, None)
    return True


def unnamed_inode_name(name: str) -> int | None:
    """The inode that ``name`` stands for, if it is how inotify names an unnamed temp file
    (``#<inode>``: the file has no name of its own, so its writes and close are reported on
    its folder under that one); else ``None``."""
    return int(name[1:]) if name[:1] == "#" and name[1:].isdigit() else None


def unnamed_temp_event(name: str) -> bool:
    """Whether ``name`` is how inotify names one of this process's unnamed temp files."""
    inode = unnamed_inode_name(name)
    return inode is not None and inode in _unnamed_inodes


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


@dataclass(frozen=True)
class Companion:
    """What a batch's ``on_temps`` hook wrote elsewhere that must be durable before any of
    the batch's files is replaced -- the bridge's write intents, in its store: a file it
    was written to, and how to make it durable on its own.

    When that file is on the one file system of the batch's temp files, the one ``syncfs``
    that makes them durable makes it durable too (syncfs writes back every dirty file of
    the file system and commits its journal), so the hook need not fsync it itself: one
    journal commit per batch instead of two.  Otherwise ``make_durable`` is called, after
    the temp files are and before anything is replaced."""

    path: Path
    make_durable: Callable[[], object]


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
    directory: Path,
    target_name: str,
    data: bytes,
    like: os.stat_result | None,
    sync: bool = True,
) -> Path:
    """Write ``data`` to a new temp file beside the target (durably, unless the caller makes
    it durable itself: ``sync=False``); return its path."""
    return _create_temp_inode(directory, target_name, data, like, sync)[0]


def _create_temp_inode(
    directory: Path,
    target_name: str,
    data: bytes,
    like: os.stat_result | None,
    sync: bool = True,
) -> tuple[Path, int]:
    """:func:`_create_temp`, also returning the temp file's inode."""
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
            if sync:
                os.fsync(fd)
            inode = os.fstat(fd).st_ino
        finally:
            os.close(fd)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return temp, inode


def _create_unnamed(directory: Path, data: bytes) -> tuple[int, os.stat_result] | None:
    """An unnamed file in ``directory``'s file system holding ``data`` (not yet durable):
    its descriptor and stat, or ``None`` where unnamed files are not supported here."""
    if not _USE_TMPFILE:
        return None
    try:
        fd = os.open(directory, _O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED or exc.errno == errno.EISDIR:
            return None  # this file system has no O_TMPFILE (EISDIR: nor does the kernel)
        raise
    try:
        st = os.fstat(fd)
        _remember(_unnamed_inodes, st.st_ino, None)
        _write_all(fd, data)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def _link_unnamed(fd: int, st: os.stat_result, path: Path, procs: int) -> None:
    """Give the unnamed file behind ``fd`` (whose stat is ``st``) the name ``path`` unless
    ``path`` exists (FileExistsError): ``linkat`` through ``/proc/self/fd`` (open as
    ``procs``), which needs no privilege.  The landing is noted first, for
    :func:`landed_here`."""
    key = os.fspath(path)
    _remember(_landed, key, (st.st_dev, st.st_ino))
    try:
        os.link(str(fd), path, src_dir_fd=procs, follow_symlinks=True)
    except BaseException:
        _landed.pop(key, None)
        raise


@contextlib.contextmanager
def _proc_fds() -> Iterator[int]:
    """``/proc/self/fd`` open as a directory, for :func:`_link_unnamed`."""
    procs = os.open(_PROC_FDS, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield procs
    finally:
        os.close(procs)


def atomic_write(
    path: Path,
    data: bytes,
    expected: bytes | None,
    *,
    on_temp: Callable[[int], object] | None = None,
    _before_rename: Callable[[], object] | None = None,
) -> Written | Changed:
    """Replace ``path`` with ``data`` if it holds ``expected`` (``None``: must not exist).

    Returns :class:`Written` (with any late in-window save) or :class:`Changed` (nothing
    written).  ``on_temp`` is told the inode of the durable temp file — the inode ``path``
    will have if the write happens — before the target is checked and replaced; if it
    raises, nothing is replaced.  ``_before_rename`` is a test hook run after the check,
    just before the rename.
    """
    target = _check_target(path, expected)
    if isinstance(target, Changed):
        return target
    like = None if expected is None else target
    assert not isinstance(like, Changed)
    if like is None:
        unnamed = _create_unnamed(path.parent, data)
        if unnamed is not None:
            fd, st = unnamed
            try:
                os.fsync(fd)
                if on_temp is not None:
                    on_temp(st.st_ino)
                with _proc_fds() as procs:
                    return _create_new(path, data, _before_rename, unnamed=(fd, st, procs))
            finally:
                os.close(fd)
    temp = _create_temp(path.parent, path.name, data, like)
    try:
        if on_temp is not None:
            on_temp(os.lstat(temp).st_ino)
        if like is None:
            return _create_new(path, data, _before_rename, temp=temp)
        assert expected is not None
        return _replace_existing(path, data, expected, like, _before_rename, temp=temp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)


def _check_target(
    path: Path, expected: bytes | None, folders: set[Path] | None = None
) -> os.stat_result | Changed | None:
    """The target's stat (``None``: absent, parents made) or why nothing may be written.
    ``folders`` holds folders known to exist (a batch's earlier targets'), and gains this
    one's."""
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
        if folders is None or path.parent not in folders:
            _make_parents(path.parent)
            if folders is not None:
                folders.add(path.parent)
        return None
    if like is None:
        return Changed(None)
    return like


def atomic_write_many(
    writes: list[tuple[Path, bytes, bytes | None]],
    on_temps: Callable[[list[int | None]], Companion | None] | None = None,
) -> list[Written | Changed | OSError]:
    """:func:`atomic_write` for many files, sharing the fsyncs: every temp file is written,
    one ``syncfs(2)`` makes them all durable (an fsync each where syncfs is missing), then
    each target is checked and replaced exactly as :func:`atomic_write` does, and each
    directory is fsynced once at the end.  The guarantees per file are those of
    :func:`atomic_write`; a failure of one file is returned in its place (an ``OSError``)
    and does not stop the others.

    ``on_temps`` is told the inodes of all the temp files at once (``None`` where there is
    none), as :func:`atomic_write`'s ``on_temp`` is, but before they are made durable: what
    it returns (a :class:`Companion`) is made durable with them, before anything is
    replaced.  If it raises, nothing is replaced.
    """
    outcomes: list[Written | Changed | OSError | None] = [None] * len(writes)
    temps: dict[int, tuple[Path, os.stat_result | None]] = {}
    unnamed: dict[int, tuple[int, os.stat_result]] = {}  # write → its unnamed temp file
    inodes: dict[int, int] = {}
    devices: set[int] = set()
    folders: set[Path] = set()  # folders known to exist
    procs: int | None = None  # /proc/self/fd, opened (in ``opened``) for the first link
    opened = contextlib.ExitStack()
    try:
        for i, (path, data, expected) in enumerate(writes):
            try:
                target = _check_target(path, expected, folders)
                if isinstance(target, Changed):
                    outcomes[i] = target
                    continue
                if target is None and len(unnamed) < _MAX_UNNAMED:
                    created = _create_unnamed(path.parent, data)
                    if created is not None:
                        unnamed[i] = created
                        inodes[i] = created[1].st_ino
                        devices.add(created[1].st_dev)
                        continue
                temp, inodes[i] = _create_temp_inode(path.parent, path.name, data, target, False)
                temps[i] = (temp, target)
            except OSError as exc:
                outcomes[i] = exc
        companion = None
        if on_temps is not None:
            companion = on_temps([inodes.get(i) for i in range(len(writes))])
        if temps or unnamed or companion is not None:
            _make_durable([temp for temp, _ in temps.values()], [fd for fd, _ in unnamed.values()],
                          devices, companion)  # fmt: skip
        directories: set[Path] = set()
        for i in sorted([*temps, *unnamed]):
            path, data, expected = writes[i]
            try:
                if i in unnamed:
                    if procs is None:
                        procs = opened.enter_context(_proc_fds())
                    fd, st = unnamed[i]
                    outcome = _create_new(path, data, None, unnamed=(fd, st, procs), sync_dir=False)
                elif expected is None:
                    outcome = _create_new(path, data, None, temp=temps[i][0], sync_dir=False)
                else:
                    like = temps[i][1]
                    assert like is not None
                    outcome = _replace_existing(
                        path, data, expected, like, None, temp=temps[i][0], sync_dir=False
                    )
            except OSError as exc:
                outcomes[i] = exc
                continue
            outcomes[i] = outcome
            if isinstance(outcome, Written):
                directories.add(path.parent)
        _sync_directories(directories)
    finally:
        for temp, _ in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
        for fd, _ in unnamed.values():
            os.close(fd)
        opened.close()
    return [o if o is not None else OSError(errno.EIO, "not written") for o in outcomes]


def _sync_directories(directories: set[Path]) -> None:
    """Make the entries of every folder in ``directories`` durable: one ``syncfs`` of their
    file system when there are several on one (one journal commit, not one per folder),
    else an fsync of each."""
    if len(directories) > 1:
        devices = {os.stat(d).st_dev for d in directories}
        if _one_syncfs(devices, None, next(iter(directories))):
            return
    for directory in sorted(directories):
        fsync_dir(directory)


def _make_durable(
    files: list[Path], fds: list[int], devices: set[int], companion: Companion | None = None
) -> None:
    """fsync every file in ``files`` and every file open as one of ``fds`` (on
    ``devices``), and ``companion``: with one ``syncfs`` of their file system when it can
    (one journal commit instead of one per file), else one fsync each and the companion's
    own way."""
    # A file's device is its folder's (and there are far fewer folders than files).
    devices = devices | {os.stat(d).st_dev for d in {f.parent for f in files}}
    if companion is not None:
        devices.add(os.stat(companion.path).st_dev)
    if _one_syncfs(devices, fds[0] if fds else None, files[0] if files else None):
        return
    for fd in fds:
        os.fsync(fd)
    for file in files:
        fd = os.open(file, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    if companion is not None:
        companion.make_durable()


def _one_syncfs(devices: set[int], fd: int | None, path: Path | None) -> bool:
    """Whether one ``syncfs`` made everything on ``devices`` durable: only when they are one
    file system and syncfs(2) is there and works.  It is called on ``fd``, else on ``path``
    (opened and closed here)."""
    if _syncfs is None or len(devices) != 1 or (fd is None and path is None):
        return False
    if fd is not None:
        return bool(_syncfs(fd) == 0)
    assert path is not None
    opened = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return bool(_syncfs(opened) == 0)
    finally:
        os.close(opened)


def _create_new(
    path: Path,
    data: bytes,
    before_rename: Callable[[], object] | None,
    *,
    temp: Path | None = None,
    unnamed: tuple[int, os.stat_result, int] | None = None,
    sync_dir: bool = True,
) -> Written | Changed:
    """Give ``path`` the durable content of ``unnamed`` (an unnamed file's descriptor and
    stat, and :func:`_proc_fds`), of ``temp``, or of a new temp file holding ``data``,
    unless ``path`` exists."""
    if unnamed is None and temp is None:
        temp = _create_temp(path.parent, path.name, data, None)
    try:
        if before_rename is not None:
            before_rename()
        try:
            if unnamed is not None:
                _link_unnamed(*unnamed[:2], path, unnamed[2])
            elif temp is not None and not _rename2(temp, path, _RENAME_NOREPLACE):
                _link_noreplace(temp, path)
        except FileExistsError:
            return Changed(read_bytes(path))
        if sync_dir:
            fsync_dir(path.parent)
        return Written(None)
    finally:
        if temp is not None:
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
    *,
    temp: Path | None = None,
    sync_dir: bool = True,
) -> Written | Changed:
    temp = temp or _create_temp(path.parent, path.name, data, like)
    old_fd = -1
    writer_active = False
    late_in_place = False
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
                late_in_place = True
                # An editor that opened the file before our exchange and has not written yet
                # is saving into the file we displaced: report it (a late save equal to what
                # we expected) so that the caller watches that file.
                writer_active = late == expected and fd_open_for_writing(old_fd)
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
            late_in_place = True
        if sync_dir:
            fsync_dir(path.parent)
        if writer_active:
            return Written(late, in_place=True)
        if late is not None and late != expected:
            return Written(late, in_place=late_in_place)
        return Written(None)
    finally:
        if old_fd >= 0:
            os.close(old_fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
