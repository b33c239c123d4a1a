"""Tests for fsbridge.atomic on real files: compare-and-swap replace, races, failures."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsbridge import atomic
from fsbridge.atomic import TEMP_PREFIX, Changed, Written, atomic_write, fsync_dir, read_bytes


@pytest.fixture(params=["renameat2", "portable"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with renameat2(2) and O_TMPFILE, and with the portable fallbacks (named
    temp files, link/replace)."""
    if request.param == "renameat2" and not atomic._USE_RENAMEAT2:
        pytest.skip("renameat2 is not available here")
    if request.param == "portable":
        monkeypatch.setattr(atomic, "_USE_RENAMEAT2", False)
        monkeypatch.setattr(atomic, "_USE_TMPFILE", False)
    return str(request.param)


def temps(directory: Path) -> list[str]:
    return [p.name for p in directory.rglob(f"{TEMP_PREFIX}*")]


def test_read_bytes(tmp_path: Path) -> None:
    assert read_bytes(tmp_path / "missing") is None
    (tmp_path / "f").write_bytes(b"abc")
    assert read_bytes(tmp_path / "f") == b"abc"
    with pytest.raises(IsADirectoryError):
        read_bytes(tmp_path)


def test_normal_replace(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"old")
    assert atomic_write(path, b"new", b"old") == Written(None)
    assert path.read_bytes() == b"new"
    assert temps(tmp_path) == []


def test_replace_gives_a_new_inode(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"old")
    before = path.stat().st_ino
    with path.open("rb") as reader:
        assert atomic_write(path, b"new", b"old") == Written(None)
        assert reader.read() == b"old"  # a reader of the old file never sees a mix
    assert path.stat().st_ino != before


def test_create_new_file_and_parents(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "Roadmap" / "2025" / "Q1.md"
    assert atomic_write(path, b"plan", None) == Written(None)
    assert path.read_bytes() == b"plan"
    assert temps(tmp_path) == []
    assert path.stat().st_nlink == 1


def test_create_empty_file(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "empty.md"
    assert atomic_write(path, b"", None) == Written(None)
    assert path.read_bytes() == b""


def test_create_refuses_existing_file(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"theirs")
    assert atomic_write(path, b"ours", None) == Changed(b"theirs")
    assert path.read_bytes() == b"theirs"
    assert temps(tmp_path) == []


def test_expected_mismatch_leaves_file_untouched(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"user edit")
    ino = path.stat().st_ino
    assert atomic_write(path, b"ours", b"base") == Changed(b"user edit")
    assert path.read_bytes() == b"user edit"
    assert path.stat().st_ino == ino
    assert temps(tmp_path) == []


def test_expected_but_missing_creates_nothing(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "Gone" / "notes.md"
    assert atomic_write(path, b"ours", b"base") == Changed(None)
    assert not (tmp_path / "Gone").exists()
    (tmp_path / "file").write_bytes(b"")
    assert atomic_write(tmp_path / "file" / "x.md", b"ours", b"base") == Changed(None)


def test_target_is_a_directory(tmp_path: Path, mode: str) -> None:
    (tmp_path / "Board").mkdir()
    for expected in (None, b"x"):
        with pytest.raises(IsADirectoryError):
            atomic_write(tmp_path / "Board", b"x", expected)
    assert temps(tmp_path) == []


def test_mode_is_preserved(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "script.sh"
    path.write_bytes(b"#!/bin/sh\n")
    for bits in (0o640, 0o755, 0o444, 0o600):
        content = path.read_bytes()
        path.chmod(bits)
        assert atomic_write(path, content + b"echo\n", content) == Written(None)
        assert stat.S_IMODE(path.stat().st_mode) == bits


def test_new_file_mode_follows_umask(tmp_path: Path, mode: str) -> None:
    old = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.md", b"x", None)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.md").stat().st_mode) == 0o640


@pytest.mark.skipif(os.geteuid() != 0, reason="changing a file's owner needs root")
def test_owner_is_preserved_when_allowed(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"old")
    os.chown(path, 65534, 65534)
    assert atomic_write(path, b"new", b"old") == Written(None)
    st = path.stat()
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_long_name(tmp_path: Path, mode: str) -> None:
    path = tmp_path / ("é" * 127 + "x")  # 255 bytes: the temp name must be shortened
    assert atomic_write(path, b"one", None) == Written(None)
    assert atomic_write(path, b"two", b"one") == Written(None)
    assert path.read_bytes() == b"two"
    assert temps(tmp_path) == []


def test_in_place_write_during_window_is_returned(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"base")

    def user_saves_in_place() -> None:
        with path.open("r+b") as f:  # same inode, like an editor that writes in place
            f.write(b"BASE plus typing")

    result = atomic_write(path, b"merged", b"base", _before_rename=user_saves_in_place)
    assert result == Written(late_bytes=b"BASE plus typing")
    assert path.read_bytes() == b"merged"
    assert temps(tmp_path) == []


def test_in_place_truncating_write_during_window(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"a long base text")

    def user_saves_in_place() -> None:
        path.write_bytes(b"short")  # O_TRUNC on the same inode

    result = atomic_write(path, b"merged", b"a long base text", _before_rename=user_saves_in_place)
    assert result == Written(late_bytes=b"short")


def test_same_content_rewritten_during_window_is_not_late(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"base")
    result = atomic_write(
        path, b"merged", b"base", _before_rename=lambda: path.write_bytes(b"base")
    )
    assert result == Written(None)


def test_rename_save_during_window_is_never_lost(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"base")

    def editor_saves_by_rename() -> None:
        side = tmp_path / "notes.md.tmp-editor"
        side.write_bytes(b"their save")
        os.replace(side, path)

    result = atomic_write(path, b"merged", b"base", _before_rename=editor_saves_by_rename)
    if mode == "renameat2":
        # Exchanged atomically: ours is in place and theirs comes back to be ingested.
        assert result == Written(late_bytes=b"their save")
        assert path.read_bytes() == b"merged"
    else:
        # Caught by the inode check before the rename: nothing written.
        assert result == Changed(b"their save")
        assert path.read_bytes() == b"their save"
    assert temps(tmp_path) == []


def test_delete_during_window_stays_deleted(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"base")
    result = atomic_write(path, b"merged", b"base", _before_rename=path.unlink)
    assert result == Changed(None)
    assert not path.exists()
    assert temps(tmp_path) == []


def test_directory_renamed_in_during_window_is_put_back(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"base")

    def swap_in_directory() -> None:
        path.unlink()
        path.mkdir()
        (path / "inside").write_bytes(b"keep me")

    with pytest.raises(IsADirectoryError):
        atomic_write(path, b"merged", b"base", _before_rename=swap_in_directory)
    assert (path / "inside").read_bytes() == b"keep me"
    assert temps(tmp_path) == []


def test_file_created_during_create_window_is_not_clobbered(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "new.md"
    result = atomic_write(path, b"ours", None, _before_rename=lambda: path.write_bytes(b"theirs"))
    assert result == Changed(b"theirs")
    assert path.read_bytes() == b"theirs"
    assert temps(tmp_path) == []


def test_error_in_window_cleans_up(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"base")

    def boom() -> None:
        raise OSError(errno.EIO, "simulated I/O error")

    for expected in (b"base", None):
        target = path if expected is not None else tmp_path / "other.md"
        with pytest.raises(OSError, match="simulated"):
            atomic_write(target, b"merged", expected, _before_rename=boom)
    assert path.read_bytes() == b"base"
    assert not (tmp_path / "other.md").exists()
    assert temps(tmp_path) == []


def test_fsync_dir(tmp_path: Path) -> None:
    fsync_dir(tmp_path)
    (tmp_path / "f").write_bytes(b"")
    with pytest.raises(NotADirectoryError):
        fsync_dir(tmp_path / "f")


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str = "64k") -> Iterator[Path]:
    where.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_no_space_left(tmp_path: Path, mode: str) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        path = fs / "notes.md"
        path.write_bytes(b"base")
        with pytest.raises(OSError) as info:
            atomic_write(path, b"x" * (256 * 1024), b"base")
        assert info.value.errno == errno.ENOSPC
        assert path.read_bytes() == b"base"
        assert temps(fs) == []
        with pytest.raises(OSError) as info:
            atomic_write(fs / "new.md", b"x" * (256 * 1024), None)
        assert info.value.errno == errno.ENOSPC
        assert not (fs / "new.md").exists()
        assert temps(fs) == []
        # Space is back once the failed temp is gone: a small write succeeds.
        assert atomic_write(path, b"fits", b"base") == Written(None)


def test_read_only_file_system(tmp_path: Path, mode: str) -> None:
    with small_tmpfs(tmp_path / "fs") as fs:
        path = fs / "notes.md"
        path.write_bytes(b"base")
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        with pytest.raises(OSError) as info:
            atomic_write(path, b"merged", b"base")
        assert info.value.errno == errno.EROFS
        assert path.read_bytes() == b"base"
        assert temps(fs) == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root is not refused by directory permissions")
def test_permission_denied(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(b"base")
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            atomic_write(path, b"merged", b"base")
    finally:
        tmp_path.chmod(0o755)
    assert path.read_bytes() == b"base"


def test_symlink_at_target_is_refused(tmp_path: Path, mode: str) -> None:
    real = tmp_path / "real.md"
    real.write_bytes(b"base")
    link = tmp_path / "link.md"
    link.symlink_to(real)
    dangling = tmp_path / "dangling.md"
    dangling.symlink_to(tmp_path / "nowhere")
    for target, expected in [(link, b"base"), (link, None), (dangling, None), (dangling, b"x")]:
        with pytest.raises(OSError) as info:
            atomic_write(target, b"merged", expected)
        assert info.value.errno == errno.ELOOP
    assert link.is_symlink() and dangling.is_symlink()
    assert real.read_bytes() == b"base"
    assert not (tmp_path / "nowhere").exists()
    assert temps(tmp_path) == []


# -- many files at once -------------------------------------------------------------------------


def test_many_writes_share_the_fsyncs_and_keep_each_files_guarantees(
    tmp_path: Path, mode: str
) -> None:
    from fsbridge.atomic import atomic_write_many

    (tmp_path / "keep.md").write_bytes(b"old")
    (tmp_path / "edited.md").write_bytes(b"user edit")
    (tmp_path / "target").write_bytes(b"t")
    (tmp_path / "link.md").symlink_to(tmp_path / "target")
    told: list[list[int | None]] = []
    outcomes = atomic_write_many(
        [
            (tmp_path / "keep.md", b"new", b"old"),
            (tmp_path / "edited.md", b"ours", b"base"),
            (tmp_path / "Sub" / "Deeper" / "new.md", b"created", None),
            (tmp_path / "link.md", b"x", b"t"),
            (tmp_path / "fresh.md", b"fresh", None),
        ],
        told.append,
    )
    assert outcomes[0] == Written(None)
    assert outcomes[1] == Changed(b"user edit")
    assert outcomes[2] == Written(None)
    assert isinstance(outcomes[3], OSError)  # a symlink is never written through
    assert outcomes[4] == Written(None)
    assert (tmp_path / "keep.md").read_bytes() == b"new"
    assert (tmp_path / "edited.md").read_bytes() == b"user edit"
    assert (tmp_path / "Sub" / "Deeper" / "new.md").read_bytes() == b"created"
    assert (tmp_path / "target").read_bytes() == b"t"
    assert (tmp_path / "fresh.md").read_bytes() == b"fresh"
    [inodes] = told
    assert inodes[3] is None  # refused before any temp file was made
    assert inodes[0] == os.lstat(tmp_path / "keep.md").st_ino  # the temp file became the file
    assert inodes[4] == os.lstat(tmp_path / "fresh.md").st_ino
    leftovers = [p for p in tmp_path.rglob("*") if p.name.startswith(TEMP_PREFIX)]
    assert leftovers == []


def test_many_writes_replace_nothing_when_the_temp_hook_fails(tmp_path: Path, mode: str) -> None:
    from fsbridge.atomic import atomic_write_many

    (tmp_path / "a.md").write_bytes(b"old")

    def store_down(_: list[int | None]) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write_many(
            [(tmp_path / "a.md", b"new", b"old"), (tmp_path / "b.md", b"b", None)], store_down
        )
    assert (tmp_path / "a.md").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.md"]


def test_many_new_files_never_clobber_a_file_that_appears_and_leak_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """More new files than may be open unnamed at once (the rest get named temp files); a
    user's file appearing at one target after the temp files were made (as the durable
    intents are stored) is kept, and that write reports it; every descriptor is closed."""
    from fsbridge.atomic import atomic_write_many

    monkeypatch.setattr(atomic, "_MAX_UNNAMED", 2)
    paths = [tmp_path / f"c{i}.md" for i in range(5)]
    fds_before = len(os.listdir("/proc/self/fd"))

    def user_saves_c3(inodes: list[int | None]) -> None:
        assert all(inode is not None for inode in inodes)
        paths[3].write_bytes(b"the user's")

    outcomes = atomic_write_many([(p, f"card {i}".encode(), None) for i, p in enumerate(paths)],
                                 user_saves_c3)  # fmt: skip
    assert outcomes == [Written(None)] * 3 + [Changed(b"the user's"), Written(None)]
    assert [p.read_bytes() for p in paths] == [b"card 0", b"card 1", b"card 2", b"the user's",
                                               b"card 4"]  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in paths]
    assert len(os.listdir("/proc/self/fd")) == fds_before
    landed = [atomic.landed_here(str(p), p.stat()) for p in paths]
    assert landed == ([True, True, False, False, False] if mode == "renameat2" else [False] * 5)


def test_the_temp_hook_of_one_write_runs_before_the_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "a.md"
    path.write_bytes(b"old")
    seen: list[bytes] = []
    assert atomic_write(path, b"new", b"old", on_temp=lambda _: seen.append(path.read_bytes()))
    assert seen == [b"old"] and path.read_bytes() == b"new"


STRACE = shutil.which("strace")
# strace needs ptrace, which a container's seccomp profile or Yama may deny even to root.
STRACE_TRACES = (
    STRACE is not None
    and subprocess.run(
        [STRACE, "-f", "-qq", "-o", os.devnull, "true"], capture_output=True
    ).returncode
    == 0
)

DURABILITY_PROBE = r"""
import os, sys
from pathlib import Path
from fsbridge.atomic import atomic_write_many
root = Path(sys.argv[1])
names = [f"board{b}/card{c}.md" for b in range(3) for c in range(2)]
writes = [(root / name, b"x" * 100, None) for name in names]
os.write(1, b"START\n")
atomic_write_many(writes)
os.write(1, b"END\n")
"""


def _traced_between_marks(tmp_path: Path, probe: str, space: Path, calls: str) -> list[str]:
    """The system calls (``calls``, strace's names) that ``probe`` made on a new folder
    ``space`` between writing START and END to its stdout, as strace prints them (``-y``:
    with each descriptor's path)."""
    assert STRACE is not None
    trace = tmp_path / "trace.txt"
    space.mkdir()
    subprocess.run(
        [STRACE, "-f", "-qq", "-y", "-o", str(trace), "-e", f"trace={calls}",
         sys.executable, "-c", probe, str(space)],
        check=True, capture_output=True, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    lines = trace.read_text().splitlines()
    start = next(i for i, c in enumerate(lines) if "START" in c)
    end = next(i for i, c in enumerate(lines) if "END" in c)
    return lines[start:end]


@pytest.mark.skipif(not STRACE_TRACES, reason="needs strace, allowed to trace (ptrace)")
def test_many_new_files_in_several_folders_end_with_their_folders_made_durable(
    tmp_path: Path,
) -> None:
    """After the last file of a batch is linked into its folder, every folder's entries are
    made durable before the call returns: one syncfs of their file system, or an fsync of
    each folder."""
    space = tmp_path / "space"
    calls = "write,link,linkat,rename,renameat,renameat2,fsync,syncfs"
    inside = _traced_between_marks(tmp_path, DURABILITY_PROBE, space, calls)
    last_link = max(i for i, c in enumerate(inside) if re.search(r"\b(link|rename)\w*\(", c))
    after = inside[last_link + 1 :]
    synced = any(re.search(r"\bsyncfs\(", c) for c in after)
    fsynced = {m.group(1) for c in after if (m := re.search(r"\bfsync\(\d+<([^>]*)>", c))}
    folders = {str(space / f"board{b}") for b in range(3)}
    assert synced or folders <= fsynced, "\n".join(after)
    assert sorted(p.name for p in (space / "board2").iterdir()) == ["card0.md", "card1.md"]


COMPANION_PROBE = r"""
import os, sys
from pathlib import Path
from engine.store import Base, Store
from fsbridge.atomic import Companion, atomic_write_many
root = Path(sys.argv[1])
store = Store.open(root / ".tack" / "store.sqlite")
names = [f"board{b}/card{c}.md" for b in range(3) for c in range(2)]

def store_intents(inodes):
    # What the bridge does: the write intents, committed without an fsync of their own.
    intents = [Base(f"c{i}#intent", name, f"c{i}", b"x" * 100, "0" * 64, 1)
               for i, name in enumerate(names)]
    store.put_bases_and_meta(intents, {f"c{i}#intent": f"0 {inode}"
                                       for i, inode in enumerate(inodes)})
    return Companion(store.path, store.barrier)

os.write(1, b"START\n")
atomic_write_many([(root / name, b"x" * 100, None) for name in names], store_intents)
os.write(1, b"END\n")
"""


@pytest.mark.skipif(not STRACE_TRACES, reason="needs strace, allowed to trace (ptrace)")
@pytest.mark.skipif(atomic._syncfs is None, reason="needs syncfs(2)")
def test_write_intents_on_the_files_file_system_are_made_durable_by_the_batchs_syncfs(
    tmp_path: Path,
) -> None:
    """The store's write intents must be on disk before any file they announce lands.  With
    the store inside the space (``.tack/``), the one syncfs that makes the batch's temp
    files durable writes the intents' WAL frames back too: they are written before it, no
    file lands before it, and the WAL gets no fsync of its own."""
    space = tmp_path / "space"
    inside = _traced_between_marks(
        tmp_path,
        COMPANION_PROBE,
        space,
        "write,pwrite64,link,linkat,rename,renameat,renameat2,fsync,fdatasync,syncfs",
    )
    first_landing = min(i for i, c in enumerate(inside) if re.search(r"\b(link|rename)\w*\(", c))
    before = inside[:first_landing]
    wal_writes = [i for i, c in enumerate(before) if re.search(r"write\w*\(\d+<[^>]*-wal>", c)]
    assert wal_writes, "the intents were not written before the first file landed"
    syncs = [i for i, c in enumerate(before) if re.search(r"\bsyncfs\(", c)]
    assert syncs and syncs[-1] > wal_writes[-1], "\n".join(before)
    assert not [c for c in before if re.search(r"\bf(data)?sync\(\d+<[^>]*-wal>", c)]
    assert sorted(p.name for p in (space / "board2").iterdir()) == ["card0.md", "card1.md"]


def test_write_intents_on_another_file_system_are_made_durable_before_any_file_lands(
    tmp_path: Path,
) -> None:
    """A store on a file system other than the files' is not covered by their syncfs: its
    own barrier runs, after the intents are stored and before the first file lands."""
    from engine.store import Base, Store
    from fsbridge.atomic import Companion, atomic_write_many

    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on a file system other than the test's temp folder")
    with contextlib.ExitStack() as cleanup:
        elsewhere = Path(
            cleanup.enter_context(tempfile.TemporaryDirectory(dir=shm, prefix="tack-test-"))
        )
        store = Store.open(elsewhere / "store.sqlite")
        cleanup.callback(store.close)
        targets = [tmp_path / "a.md", tmp_path / "b" / "c.md"]
        barriers: list[list[bool]] = []

        def barrier() -> None:
            barriers.append([t.exists() for t in targets])
            store.barrier()

        def store_intents(inodes: list[int | None]) -> Companion:
            store.put_bases_and_meta([Base("a#intent", "a.md", "a", b"A", "0" * 64, 1)], {})
            return Companion(elsewhere / "store.sqlite", barrier)

        outcomes = atomic_write_many([(t, b"A", None) for t in targets], store_intents)
        assert outcomes == [Written(None), Written(None)]
        assert barriers == [[False, False]]  # once, before either file was there
        assert store.get_base("a#intent") is not None


def test_write_intents_on_the_files_file_system_need_no_barrier_of_their_own(
    tmp_path: Path,
) -> None:
    from engine.store import Store
    from fsbridge.atomic import Companion, atomic_write_many

    if atomic._syncfs is None:
        pytest.skip("needs syncfs(2): without it the companion is always fsynced on its own")
    store = Store.open(tmp_path / ".tack" / "store.sqlite")
    try:
        called: list[None] = []
        outcomes = atomic_write_many(
            [(tmp_path / "a.md", b"A", None)],
            lambda _: Companion(tmp_path / ".tack" / "store.sqlite", lambda: called.append(None)),
        )
        assert outcomes == [Written(None)] and called == []
    finally:
        store.close()
