"""The watcher (fsbridge/watcher.py, its process fsbridge/watchproc.py): which events reach
the bridge, and the watcher process's life.

Tack's own traffic -- the store's WAL and blobs under ``.tack/``, its temporary files -- is
dropped; every event the bridge acts on still reaches it.  The first tests hand watchdog's
own event objects to the two halves of the filter, as the observer would; the others run
the real watcher process on a real folder, with a real loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
)

from fsbridge import atomic
from fsbridge import watcher as watcher_module
from fsbridge.atomic import Written, atomic_write, atomic_write_many
from fsbridge.bridge import FsEvent
from fsbridge.watcher import FolderWatcher, WatcherError, accepted
from fsbridge.watchproc import WatchdogSpy, record_bytes, translate

TMP = ".tack-tmp-card.md-0a1b2c3d"


def delivered(root: Path, *events: FileSystemEvent) -> list[FsEvent]:
    """What reaches the bridge of ``events``: the watcher process's filter, then the
    daemon's."""
    real = os.path.realpath(root)
    seen: list[FsEvent] = []
    for event in events:
        record = translate(real, event)
        out = accepted(real, record) if record is not None else None
        if out is not None:
            seen.append(out)
    return seen


def test_tacks_own_state_and_temp_files_never_reach_the_bridge(tmp_path: Path) -> None:
    r = str(tmp_path.resolve())
    assert (
        delivered(
            tmp_path,
            FileModifiedEvent(f"{r}/.tack/store.sqlite-wal"),
            FileCreatedEvent(f"{r}/.tack/blobs/partial/ab12"),
            FileDeletedEvent(f"{r}/.tack/blobs/partial/ab12"),
            FileMovedEvent(f"{r}/.tack/blobs/partial/ab12", f"{r}/.tack/blobs/ab12"),
            FileCreatedEvent(f"{r}/notes/{TMP}"),
            FileModifiedEvent(f"{r}/notes/{TMP}"),
            FileClosedEvent(f"{r}/notes/{TMP}"),
            FileDeletedEvent(f"{r}/notes/{TMP}"),
            FileMovedEvent(f"{r}/notes/{TMP}", f"{r}/notes/card.md"),  # Tack's write landing
            FileCreatedEvent(f"{r}/{TMP}"),
        )
        == []
    )


def test_every_event_the_bridge_acts_on_still_reaches_it(tmp_path: Path) -> None:
    r = str(tmp_path.resolve())
    assert delivered(
        tmp_path,
        FileDeletedEvent(f"{r}/.tack/store.sqlite"),  # the bridge stops Tack
        FileDeletedEvent(f"{r}/.tack"),
        FileMovedEvent(f"{r}/{TMP}", f"{r}/.tackignore"),  # Tack rewrote the ignore rules
        FileMovedEvent(f"{r}/.tack/stray.md", f"{r}/notes/stray.md"),  # moved out of .tack
        DirMovedEvent(f"{r}/.tack-tmp-folder", f"{r}/folder"),  # a folder is no temp file
        DirCreatedEvent(f"{r}/notes"),
        FileCreatedEvent(f"{r}/notes/card.md"),
        FileClosedEvent(f"{r}/notes/card.md"),
        FileMovedEvent(f"{r}/notes/card.md", f"{r}/card.md"),
        FileMovedEvent(f"{r}/.tack/store.sqlite", f"{tmp_path.parent}/elsewhere"),
    ) == [
        FsEvent("deleted", ".tack/store.sqlite"),
        FsEvent("deleted", ".tack"),
        FsEvent("moved", TMP, ".tackignore"),
        FsEvent("moved", ".tack/stray.md", "notes/stray.md"),
        FsEvent("moved", ".tack-tmp-folder", "folder", is_dir=True),
        FsEvent("created", "notes", is_dir=True),
        FsEvent("created", "notes/card.md"),
        FsEvent("closed", "notes/card.md"),
        FsEvent("moved", "notes/card.md", "card.md"),
        FsEvent("deleted", ".tack/store.sqlite"),  # moved out of the space: gone
    ]


class Watching:
    """The real watcher on a folder, on a loop of its own that runs only in :meth:`until`."""

    def __init__(self, root: Path) -> None:
        self.loop = asyncio.new_event_loop()
        self.seen: list[FsEvent] = []
        self.threads: set[int] = set()
        self.fatal: list[str] = []
        self._want: tuple[FsEvent, asyncio.Future[None]] | None = None
        self.watcher = FolderWatcher(root, self._sink, self.loop, on_fatal=self.fatal.append)

    def _sink(self, event: FsEvent) -> None:
        self.seen.append(event)
        self.threads.add(threading.get_ident())
        if self._want is not None and event == self._want[0]:
            self._want[1].set_result(None)

    def until(self, event: FsEvent, timeout: float = 10) -> list[FsEvent]:
        """Run the loop until ``event`` has been delivered (how a test knows the watcher has
        caught up, without sleeping); every event so far."""
        if event not in self.seen:
            self._want = (event, self.loop.create_future())
            try:
                self.loop.run_until_complete(asyncio.wait_for(self._want[1], timeout))
            except TimeoutError:
                raise AssertionError(f"{event} never arrived; saw {self.seen}") from None
            finally:
                self._want = None
        return self.seen

    def close(self) -> None:
        self.watcher.stop()
        self.loop.close()


@contextlib.contextmanager
def watching(root: Path, last: FsEvent) -> Iterator[list[FsEvent]]:
    """The real watcher on ``root`` for the ``with`` block; the events it reported, once
    it has reported ``last`` (the block's final step)."""
    w = Watching(root)
    w.watcher.start()
    try:
        yield w.seen
        w.until(last)
    finally:
        w.close()


@pytest.mark.parametrize("unnamed", [True, False], ids=["unnamed-temps", "named-temps"])
def test_a_batch_of_tack_writes_reaches_the_bridge_as_nothing_but_a_users_save_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    """The real observer: Tack writing new files (from unnamed or named temp files; in a
    batch and one by one) says nothing; a user's save that follows is seen."""
    if unnamed and not atomic._USE_TMPFILE:
        pytest.skip("O_TMPFILE and /proc/self/fd are not available here")
    monkeypatch.setattr(atomic, "_USE_TMPFILE", unnamed)
    (tmp_path / "notes").mkdir()
    with watching(tmp_path, FsEvent("closed", "notes/user.md")) as seen:
        writes = [(tmp_path / "notes" / f"c{i}.md", b"card\n", None) for i in range(20)]
        atomic_write_many(writes, lambda inodes: None)
        assert atomic_write(tmp_path / "notes" / "one.md", b"one\n", None) == Written(None)
        (tmp_path / "notes" / "user.md").write_text("mine\n", encoding="utf-8")
    assert {e.path for e in seen} == {"notes/user.md"}, seen
    # Every landing was seen and answered once.
    assert not [p for p in atomic._landed if p.startswith(str(tmp_path))]


def test_a_hard_link_to_a_card_tack_just_wrote_reaches_the_bridge(tmp_path: Path) -> None:
    """A card Tack has just created is linked under a second name (``ln``, then ``rm`` of
    the first, as some tools rename): the new name is the user's, not Tack's landing."""
    if not atomic._USE_TMPFILE:
        pytest.skip("O_TMPFILE and /proc/self/fd are not available here")
    with watching(tmp_path, FsEvent("deleted", "a.md")) as seen:
        assert atomic_write(tmp_path / "a.md", b"card\n", None) == Written(None)
        os.link(tmp_path / "a.md", tmp_path / "b.md")
        os.unlink(tmp_path / "a.md")
    # (a.md's own "created" may reach the bridge too, if a.md was gone when it was looked at)
    assert FsEvent("created", "b.md") in seen, seen


def test_a_users_file_named_like_an_unnamed_temp_still_reaches_the_bridge(
    tmp_path: Path,
) -> None:
    """inotify names an unnamed temp file ``#<inode>``; a user's own file of such a name
    (emacs's autosaves are ``#name#``) is not Tack's, and its save is seen."""
    with watching(tmp_path, FsEvent("closed", "#12345")) as seen:
        (tmp_path / "#12345").write_text("mine\n", encoding="utf-8")
    assert FsEvent("created", "#12345") in seen and FsEvent("modified", "#12345") in seen


# -- the watcher process's life -----------------------------------------------------------------


def test_a_burst_arrives_on_the_loop_in_order(tmp_path: Path) -> None:
    """A burst (a checkout of hundreds of files) reaches the bridge on the loop's thread, in
    the order the files were made."""
    w = Watching(tmp_path)
    w.watcher.start()
    try:
        names = [f"c{i:03d}.md" for i in range(500)]
        for name in names:
            (tmp_path / name).write_bytes(b"x\n")
        seen = w.until(FsEvent("closed", names[-1]))
    finally:
        w.close()
    assert [e.path for e in seen if e.kind == "created"] == names
    assert w.threads == {threading.get_ident()}  # the loop ran on this thread


@pytest.mark.parametrize("cut", [1, 2, 3, 7, 64])
def test_records_cut_anywhere_between_reads_arrive_whole_and_each_read_in_one_turn(
    tmp_path: Path, cut: int
) -> None:
    """The pipe hands over whatever it holds: a read may end inside a record (or a path).
    Every record arrives whole and once, and one read's records in one delivery."""
    records = [("created", "created", f"notes/c{i}.md", "", False) for i in range(20)] + [
        ("moved", "moved", "a b.md", "ä/\nb.md", False),
        ("", "overflow", "", "", False),
    ]
    stream = b"".join(record_bytes(r) for r in records)
    w = Watching(tmp_path)
    try:
        deliveries: list[list[FsEvent]] = []
        for k in range(0, len(stream), cut):
            events: list[FsEvent] = []
            w.watcher._parse(stream[k : k + cut], events)
            if events:
                deliveries.append(events)
        assert [e for d in deliveries for e in d] == [
            *(FsEvent("created", f"notes/c{i}.md") for i in range(20)),
            FsEvent("moved", "a b.md", "ä/\nb.md"),
            FsEvent("overflow", ""),
        ]
        events = []
        w.watcher._parse(stream, events)
        assert len(events) == len(records)  # all of one read, in one delivery
    finally:
        w.close()


def test_an_event_the_bridge_fails_on_does_not_stop_the_others(tmp_path: Path) -> None:
    w = Watching(tmp_path)
    sink = w._sink

    def failing(event: FsEvent) -> None:
        if event.path == "bad.md":
            raise ValueError("boom")
        sink(event)

    w.watcher._sink = failing
    w.watcher.start()
    try:
        for name in ("a.md", "bad.md", "b.md"):
            (tmp_path / name).write_bytes(b"x\n")
        seen = w.until(FsEvent("closed", "b.md"))
    finally:
        w.close()
    assert {e.path for e in seen} == {"a.md", "b.md"}


def _pid_gone(pid: int, timeout: float = 10) -> bool:
    """Whether ``pid`` has exited (or is a zombie) within ``timeout``: polled, since it is
    not our child to wait for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                if f.read().rpartition(")")[2].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.01)
    return False


def test_a_watcher_process_that_dies_is_replaced_and_the_bridge_rescans(
    tmp_path: Path,
) -> None:
    """Events may be lost while no watcher runs: the bridge is told to rescan (an
    ``overflow``), and the new watcher reports what happens after."""
    w = Watching(tmp_path)
    w.watcher.start()
    try:
        first = w.watcher.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        w.until(FsEvent("overflow", ""))
        assert w.watcher.pid not in (None, first)
        (tmp_path / "after.md").write_bytes(b"x\n")
        w.until(FsEvent("closed", "after.md"))
        assert w.fatal == []
    finally:
        w.close()


def test_a_watcher_that_cannot_be_replaced_stops_the_daemon_with_the_reason(
    tmp_path: Path,
) -> None:
    root = tmp_path / "space"
    root.mkdir()
    w = Watching(root)
    w.watcher.start()
    try:
        pid = w.watcher.pid
        assert pid is not None
        root.rmdir()
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while not w.fatal and time.monotonic() < deadline:
            w.loop.run_until_complete(asyncio.sleep(0.01))
        assert len(w.fatal) == 1 and "cannot watch" in w.fatal[0], w.fatal
    finally:
        w.close()


def test_a_folder_that_cannot_be_watched_is_a_clear_error(tmp_path: Path) -> None:
    w = Watching(tmp_path / "missing")
    try:
        with pytest.raises(WatcherError, match="cannot watch"):
            w.watcher.start()
        assert w.watcher.pid is None
    finally:
        w.close()


def test_ctrl_c_is_the_daemons_to_act_on_not_the_watchers(tmp_path: Path) -> None:
    """A Ctrl-C reaches the whole process group; the watcher process ignores it and goes on
    until the daemon stops it."""
    w = Watching(tmp_path)
    w.watcher.start()
    try:
        pid = w.watcher.pid
        assert pid is not None
        os.kill(pid, signal.SIGINT)
        (tmp_path / "after.md").write_bytes(b"x\n")
        w.until(FsEvent("closed", "after.md"))
        assert w.watcher.pid == pid
        assert FsEvent("overflow", "") not in w.seen
    finally:
        w.close()
    assert _pid_gone(pid)


DAEMON = """
import asyncio, sys
from pathlib import Path
from fsbridge.watcher import FolderWatcher
loop = asyncio.new_event_loop()
watcher = FolderWatcher(Path(sys.argv[1]), lambda event: None, loop)
watcher.start()
print(watcher.pid, flush=True)
loop.run_forever()
"""


def test_the_watcher_process_ends_when_the_daemon_is_killed(tmp_path: Path) -> None:
    """A ``kill -9`` of the daemon leaves no watcher behind: it sees its stdin close."""
    daemon = subprocess.Popen(
        [sys.executable, "-c", DAEMON, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert daemon.stdout is not None
        child = int(daemon.stdout.readline())
        assert not _pid_gone(child, timeout=0)
        daemon.kill()
        daemon.wait()
        assert _pid_gone(child)
    finally:
        daemon.kill()
        daemon.wait()


def test_the_watcher_process_fails_rather_than_watch_on_with_an_incomplete_watch() -> None:
    """watchdog only logs when it cannot rebuild its watches after an overflow; the watcher
    process takes that (any error it logs) as its end, so that the daemon starts a new one
    with a complete watch, while an overflow alone is a rescan."""
    overflows: list[None] = []
    failures: list[str] = []
    spy = WatchdogSpy(lambda: overflows.append(None), failures.append)
    log = logging.getLogger("watchdog.observers.inotify")
    log.addHandler(spy)
    try:
        log.warning("Inotify queue overflowed; reconciling recursive watches below %r", "/x")
        assert overflows == [None] and failures == []
        log.error("Unable to rebuild recursive inotify watches below %r", "/x")
        assert failures == ["Unable to rebuild recursive inotify watches below '/x'"]
    finally:
        log.removeHandler(spy)


def test_a_watcher_thread_that_dies_ends_the_watcher_process(tmp_path: Path) -> None:
    """An exception that kills one of watchdog's threads would leave the watch silent: the
    process's thread hook ends the process instead (the daemon then replaces it)."""
    script = """
import threading
from fsbridge import watchproc
threading.excepthook = watchproc._thread_died
def boom():
    raise OSError("no more watches")
t = threading.Thread(target=boom, name="emitter")
t.start()
t.join()
print("still running")
"""
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1, proc
    assert "still running" not in proc.stdout
    assert "OSError: no more watches" in proc.stderr
    assert "the folder watcher failed: OSError in emitter" in proc.stderr


def test_a_tree_of_new_folders_leaves_the_users_terminal_clean(tmp_path: Path) -> None:
    """``mkdir -p`` of nested folders made watchdog 7 warn, kilobytes per warning, that it
    watched a folder twice (harmless: the same callback is put back); the watcher process
    writes to the daemon's stderr, so that landed in the user's terminal.  Every file in
    the new folders still arrives."""
    root = tmp_path / "space"
    root.mkdir()
    proc = subprocess.Popen(
        watcher_module._child_command(str(root)),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=watcher_module._child_env(),
        cwd="/",
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    records = proc.stdout.fileno()

    def read_more() -> bytes:
        ready, _, _ = select.select([records], [], [], 30)
        assert ready, "the watcher process sent nothing for 30 s"
        chunk = os.read(records, 65536)
        assert chunk, "the watcher process ended"
        return chunk

    try:
        out = b""
        while b"ready" not in out:
            out += read_more()
        names = [f"d{i}/x/y/z/card.md" for i in range(20)]
        for name in names:
            (root / name).parent.mkdir(parents=True)
            (root / name).write_bytes(b"x\n")
        while not all(f"{name}\0".encode() in out for name in names):
            out += read_more()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    proc.stdout.close()
    assert "already exists for watch" not in err, err[:500]
    assert err == "", err[:500]


def test_the_watcher_process_never_imports_code_from_the_folder_tack_runs_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tack up`` may run from inside a space, whose folders a peer can fill: a
    ``fsbridge/watchproc.py`` or ``watchdog/`` there must not be what the watcher runs."""
    marker = tmp_path / "ran"
    for package in ("fsbridge", "watchdog"):
        (tmp_path / package).mkdir()
        payload = f"open({str(marker)!r}, 'a').write({package!r})\n"
        (tmp_path / package / "__init__.py").write_text(payload, encoding="utf-8")
        (tmp_path / package / "watchproc.py").write_text(payload, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    with watching(tmp_path, FsEvent("closed", "after.md")):
        (tmp_path / "after.md").write_bytes(b"x\n")
    assert not marker.exists(), marker.read_text(encoding="utf-8")


def test_a_watcher_that_keeps_dying_is_given_up_on(tmp_path: Path) -> None:
    """Each replacement costs the bridge a rescan: after MAX_REPLACEMENTS within the window,
    the next death stops the daemon with the reason instead of another replacement."""
    w = Watching(tmp_path)
    w.watcher.start()
    try:
        for k in range(watcher_module.MAX_REPLACEMENTS + 1):
            pid = w.watcher.pid
            assert pid is not None, (k, w.fatal)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while w.watcher.pid == pid and time.monotonic() < deadline:
                w.loop.run_until_complete(asyncio.sleep(0.01))
        assert w.seen.count(FsEvent("overflow", "")) == watcher_module.MAX_REPLACEMENTS
        assert len(w.fatal) == 1 and "ended 6 times within 60 s" in w.fatal[0], w.fatal
        assert w.watcher.pid is None
    finally:
        w.close()


def _watcher_children() -> list[int]:
    """This process's live watcher processes."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rpartition(")")[2].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if int(fields[1]) == os.getpid() and fields[0] != "Z" and b"fsbridge.watchproc" in cmdline:
            found.append(int(entry))
    return found


def test_a_daemon_that_fails_to_start_after_its_watcher_leaves_no_watcher_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher starts before the network; a port already taken fails the start after
    it, and the watcher process goes with the daemon."""
    from fsbridge.daemon import NetOptions, serve
    from fsbridge.spacedir import init_space

    monkeypatch.setenv("TACK_HOME", str(tmp_path / "home"))
    init_space(tmp_path / "space")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        net = NetOptions(listen="127.0.0.1", port=port, mdns=False)
        with pytest.raises(OSError):
            asyncio.run(serve(tmp_path / "space", asyncio.Event(), net=net))
    assert _watcher_children() == []
