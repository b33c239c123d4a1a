"""Physical floors: ``cp -r`` and ``rsync`` over loopback for bulk copies, bare pycrdt for
CRDT work.

The rsync floor runs a real ``rsync --daemon`` bound to 127.0.0.1 on a free port and pulls
the tree with ``rsync -a rsync://127.0.0.1:PORT/src/``: the bytes cross a loopback TCP
connection as they would between two machines.  Neither ``cp`` nor plain ``rsync`` fsyncs
what it writes (Tack and Syncthing do), which the report states next to the numbers; two
more rsync rows are the floors of a durable copy: ``--fsync`` (an fsync per file) and a
copy followed by one ``syncfs`` of the destination (durability batched).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from bench.tackdev import BenchError, wait_for

EXCLUDES = (".tack/", ".stfolder/", ".git/", "board.canvas")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cp_r(src: Path, dest: Path) -> float:
    """Seconds for ``cp -r src dest`` (the tree holds only the user's files)."""
    shutil.rmtree(dest, ignore_errors=True)
    t0 = time.perf_counter()
    subprocess.run(["cp", "-r", str(src), str(dest)], check=True)
    return time.perf_counter() - t0


@contextlib.contextmanager
def rsync_daemon(src: Path, work: Path) -> Iterator[str]:
    """An rsync daemon on 127.0.0.1 serving ``src`` as module ``src``; yields its URL."""
    if shutil.which("rsync") is None:
        raise BenchError("rsync is not installed")
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = work / "rsyncd.conf"
    conf.write_text(
        f"pid file = {work / 'rsyncd.pid'}\nuse chroot = false\nuid = 0\ngid = 0\n"
        f"[src]\npath = {src}\nread only = true\n"
        f"exclude = {' '.join(EXCLUDES)}\n"
    )
    proc = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", "--address=127.0.0.1", f"--port={port}",
         f"--config={conf}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 10, "the rsync daemon")
        yield f"rsync://127.0.0.1:{port}/src/"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rsync_pull(url: str, dest: Path, durable: str = "") -> float:
    """Seconds for ``rsync -a`` from ``url`` into an empty ``dest``.

    ``durable="fsync"`` adds rsync's ``--fsync`` (every file made durable on its own, as
    rsync does it); ``durable="syncfs"`` copies first and then makes the whole copy durable
    with one ``sync -f`` (``syncfs(2)``) of the destination's file system, inside the timing
    — the floor of a copy whose durability is batched, as Tack batches it.  Both durable
    modes flush the file system before the clock starts, so that they pay only for the
    copy's own writes."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if durable:
        os.sync()
    t0 = time.perf_counter()
    subprocess.run(["rsync", "-a", *(["--fsync"] if durable == "fsync" else []), url,
                    str(dest) + "/"], check=True)  # fmt: skip
    if durable == "syncfs":
        subprocess.run(["sync", "-f", str(dest)], check=True)
    return time.perf_counter() - t0


def crdt_join_floor(tree: dict[str, bytes], dest: Path, batch: int = 128) -> float:
    """Seconds for the least a CRDT join of ``tree`` does in Python on the receiving side,
    with Tack's libraries and none of its bookkeeping.

    Each text file arrives as a Yjs update of a document holding its text (made before the
    clock starts, as a peer would have it ready).  The receiver applies it to a new pycrdt
    document, reads the text back, keeps the update in SQLite (WAL, ``synchronous=NORMAL``,
    one transaction per ``batch`` files) and writes the file as rsync does (a temp name,
    then a rename).  Binary files are written as they are.  One ``syncfs`` of the
    destination at the end makes it all durable.  Left out: the transport and TLS, the
    bases and write intents that make a crash safe, the layout, logs and status."""
    import sqlite3

    from pycrdt import Doc, Text

    updates: list[tuple[str, bytes | None, bytes]] = []
    for rel, data in tree.items():
        if b"\0" in data:
            updates.append((rel, None, data))
            continue
        doc: Doc[Text] = Doc()
        doc["t"] = Text(data.decode())
        updates.append((rel, doc.get_update(), b""))
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    os.sync()
    t0 = time.perf_counter()
    db = sqlite3.connect(dest / ".store.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("CREATE TABLE log (doc TEXT, seq INTEGER PRIMARY KEY, data BLOB)")
    folders: set[Path] = set()
    for start in range(0, len(updates), batch):
        rows = []
        for rel, update, raw in updates[start : start + batch]:
            if update is None:
                content = raw
            else:
                received: Doc[Text] = Doc()
                received.apply_update(update)
                content = str(received.get("t", type=Text)).encode()
                rows.append((rel, update))
            path = dest / rel
            if path.parent not in folders:
                path.parent.mkdir(parents=True, exist_ok=True)
                folders.add(path.parent)
            temp = path.with_name("." + path.name + ".tmp")
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
            os.rename(temp, path)
        db.execute("BEGIN")
        db.executemany("INSERT INTO log (doc, data) VALUES (?, ?)", rows)
        db.execute("COMMIT")
    db.close()
    subprocess.run(["sync", "-f", str(dest)], check=True)
    return time.perf_counter() - t0


def syscall_beside_busy_thread(directory: Path, calls: int = 2000) -> tuple[float, float]:
    """Microseconds per system call on one thread: alone, then while another Python thread
    runs pure Python (as watchdog's threads do while they handle a burst of inotify
    events).  The call is what a join makes for each new file — ``open(O_TMPFILE)`` in
    ``directory`` — then linked into a new folder inside ``directory`` outside the timing,
    and kept: closing unnamed files frees their inodes, and on an ext4 without a journal
    freed inodes slow the creations that follow for a minute or more (see ``KEEP_COPIES``
    in ``bench/scenarios.py``), so each measurement would slow the next.  Each call
    releases the GIL, and getting it back waits for the busy thread to let go (CPython's
    switch interval): the cost of the GIL handoff, not of the kernel."""
    procs = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)

    def per_call() -> float:
        fds: list[int] = []
        try:
            t0 = time.perf_counter()
            for _ in range(calls):
                fds.append(os.open(directory, os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            elapsed = time.perf_counter() - t0
            kept = Path(tempfile.mkdtemp(prefix="tmpfile-", dir=directory))
            for i, fd in enumerate(fds):
                os.link(str(fd), kept / str(i), src_dir_fd=procs, follow_symlinks=True)
        finally:
            for fd in fds:
                os.close(fd)
        return elapsed / calls * 1e6

    stop = threading.Event()

    def busy() -> None:
        n = 0
        while not stop.is_set():
            n += 1

    try:
        alone = per_call()
        thread = threading.Thread(target=busy, daemon=True)
        thread.start()
        try:
            beside = per_call()
        finally:
            stop.set()
            thread.join()
    finally:
        os.close(procs)
    return alone, beside
