"""Physical floors: ``cp -r`` and ``rsync`` over loopback for bulk copies, bare pycrdt for
CRDT work.

The rsync floor runs a real ``rsync --daemon`` bound to 127.0.0.1 on a free port and pulls
the tree with ``rsync -a rsync://127.0.0.1:PORT/src/``: the bytes cross a loopback TCP
connection as they would between two machines.  Neither ``cp`` nor plain ``rsync`` fsyncs
what it writes (Tack and Syncthing do), which the report states next to the numbers; two
more rsync rows are the floors of a durable copy: ``--fsync`` (an fsync per file) and a
copy followed by one ``syncfs`` of the destination (durability batched).

The CRDT floors are the receiving side of a join done the leanest way in Python: bare
(:func:`crdt_join_floor`), crash-safe as DESIGN.md asks of every write to the user's folder
(:func:`crash_safe_join_floor`), that fed over TLS by another process, the paths read
from a layout document (:func:`tls_join_floor`), and that with the Yjs sync protocol per
document, blobs checked by hash and a watcher on the folder (:func:`sync_join_floor`): the
least a Tack join does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pycrdt import (
    Doc,
    Map,
    Text,
    YMessageType,
    YSyncMessageType,
    create_sync_message,
    read_message,
    write_message,
)

from bench.tackdev import BenchError, wait_for

EXCLUDES = (".tack/", ".stfolder/", ".git/", "board.canvas")
# The checkout, on the PYTHONPATH of the floors' helper processes (founders, watcher).
_CHECKOUT_ENV = {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}

# A card as it reaches a joining device: (card id, path, its text's update, or None for a
# binary card, and then the binary card's bytes).
Arrival = tuple[str, str, bytes | None, bytes]


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


def _text_update(data: bytes) -> bytes | None:
    """The update of a document holding ``data`` as its text, as a peer has it ready, or
    None for a binary file (one holding a NUL byte)."""
    if b"\0" in data:
        return None
    doc: Doc[Text] = Doc()
    doc["t"] = Text(data.decode())
    return doc.get_update()


def _text_of(update: bytes) -> bytes:
    """The text of a card's document received as ``update``, encoded for its file."""
    received: Doc[Text] = Doc()
    received.apply_update(update)
    return str(received.get("t", type=Text)).encode()


def _temp_file(path: Path, content: bytes, folders: set[Path]) -> Path:
    """A new temp file beside ``path`` holding ``content`` (its folder made the first time,
    and noted in ``folders``), not made durable."""
    if path.parent not in folders:
        path.parent.mkdir(parents=True, exist_ok=True)
        folders.add(path.parent)
    temp = path.with_name("." + path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
    return temp


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

    updates: list[tuple[str, bytes | None, bytes]] = []
    for rel, data in tree.items():
        update = _text_update(data)
        updates.append((rel, update, data if update is None else b""))
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
                content = _text_of(update)
                rows.append((rel, update))
            path = dest / rel
            os.rename(_temp_file(path, content, folders), path)
        db.execute("BEGIN")
        db.executemany("INSERT INTO log (doc, data) VALUES (?, ?)", rows)
        db.execute("COMMIT")
    db.close()
    subprocess.run(["sync", "-f", str(dest)], check=True)
    return time.perf_counter() - t0


class _CrashSafeLanding:
    """The least the receiving side of a join can do per batch of files and still survive a
    crash the way DESIGN.md asks (see :func:`crash_safe_join_floor`).

    With ``overlap`` a second thread makes each batch durable and renames its files into
    place (system calls that release the GIL) while this one prepares the next batch; a
    batch's intents become bases once its files are placed.  Without it, each batch is
    placed before the next is prepared."""

    def __init__(self, dest: Path, overlap: bool = False) -> None:
        import ctypes
        import sqlite3

        self.dest = dest
        self._syncfs = ctypes.CDLL(None, use_errno=True).syncfs
        self._top = os.open(dest, os.O_RDONLY | os.O_CLOEXEC)
        self.db = sqlite3.connect(dest / ".store.sqlite", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("CREATE TABLE log (doc TEXT, seq INTEGER PRIMARY KEY, data BLOB)")
        self.db.execute(
            "CREATE TABLE bases (key TEXT PRIMARY KEY, path TEXT, content BLOB, sha256 TEXT)"
        )
        self._folders: set[Path] = set()
        self._placer = ThreadPoolExecutor(1) if overlap else None
        self._placing: tuple[Future[None], list[str]] | None = None  # a batch, its intents

    def land(self, batch: list[Arrival]) -> None:
        """Land ``(card id, path, text card's update or None, binary card's bytes)`` each."""
        intents, renames = self._prepare(batch)
        if self._placer is None:
            self._place(renames)
            self._settle(intents)
            return
        self.finish()
        self._placing = (self._placer.submit(self._place, renames), intents)

    def finish(self) -> None:
        """Wait for the batch being placed, if any, and make its intents bases."""
        if self._placing is not None:
            placing, intents = self._placing
            self._placing = None
            placing.result()
            self._settle(intents)

    def _prepare(self, batch: list[Arrival]) -> tuple[list[str], list[tuple[Path, Path]]]:
        """Apply, write the temp files, log the updates and store the intents; the intents'
        keys and the renames to make."""
        logged: list[tuple[str, bytes]] = []
        intents: list[tuple[str, str, bytes, str]] = []
        renames: list[tuple[Path, Path]] = []
        for card, rel, update, raw in batch:
            content = raw
            if update is not None:
                content = _text_of(update)
                logged.append((card, update))
            path = self.dest / rel
            temp = _temp_file(path, content, self._folders)
            digest = hashlib.sha256(content).hexdigest()
            intents.append((card + "#intent", rel, content if update else b"", digest))
            renames.append((temp, path))
        self._commit("INSERT INTO log (doc, data) VALUES (?, ?)", logged)
        self._commit("INSERT INTO bases VALUES (?, ?, ?, ?)", intents)
        return [key for key, _, _, _ in intents], renames

    def _place(self, renames: list[tuple[Path, Path]]) -> None:
        self._make_durable()  # the temp files and the intents, before any rename
        for temp, path in renames:
            os.rename(temp, path)
        self._make_durable()  # the renames, before the intents become bases

    def _settle(self, intents: list[str]) -> None:
        self._commit(
            "UPDATE bases SET key = ? WHERE key = ?",
            [(key.removesuffix("#intent"), key) for key in intents],
        )

    def _commit(self, sql: str, rows: Sequence[tuple[object, ...]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(sql, rows)
        self.db.execute("COMMIT")

    def _make_durable(self) -> None:
        if self._syncfs(self._top) != 0:
            import ctypes

            raise OSError(ctypes.get_errno(), "syncfs failed")

    def close(self) -> None:
        if self._placer is not None:
            self._placer.shutdown()
        self.db.close()
        os.close(self._top)


class _ArrivalBatches:
    """Cards as they arrive, landed by ``landing`` ``size`` at a time."""

    def __init__(self, landing: _CrashSafeLanding, size: int) -> None:
        self._landing = landing
        self._size = size
        self._arrived: list[Arrival] = []
        self._landed = 0

    def add(self, arrival: Arrival) -> None:
        self._arrived.append(arrival)
        if len(self._arrived) >= self._size:
            self._land()

    def done(self) -> int:
        """Land what is left and wait for every batch; how many cards landed."""
        if self._arrived:
            self._land()
        self._landing.finish()
        return self._landed

    def _land(self) -> None:
        self._landing.land(self._arrived)
        self._landed += len(self._arrived)
        self._arrived = []


def _join_payload(tree: dict[str, bytes]) -> tuple[bytes, list[Arrival]]:
    """What a founder has ready for a joining device: the update of a layout document
    naming every card's path and every binary card's SHA-256 (maps of card id to path and
    to digest, the least Tack's space document holds), and per card its id, path, and the
    update of its text (or a binary card's bytes).  Card ids are random, as Tack's are."""
    import secrets

    items: list[Arrival] = []
    for rel, data in tree.items():
        update = _text_update(data)
        items.append((secrets.token_urlsafe(12), rel, update, data if update is None else b""))
    layout: Doc[Map[str]] = Doc()
    layout["cards"] = Map({card: rel for card, rel, _, _ in items})
    layout["blobs"] = Map(
        {card: hashlib.sha256(raw).hexdigest() for card, _, update, raw in items if update is None}
    )
    return layout.get_update(), items


def crash_safe_join_floor(
    tree: dict[str, bytes], dest: Path, batch: int = 128, overlap: bool = False
) -> float:
    """Seconds for :func:`crdt_join_floor` with the crash safety DESIGN.md asks of every
    write to the user's folder, done the least costly way Tack's model of bases allows.

    The same apply, read and SQLite log, plus, per ``batch`` files: a *write intent* per file
    (a row holding the content the file is about to get, keyed by its card's random id) in
    a transaction of its own; one ``syncfs`` that makes the batch's temp files and the
    intents durable before any file is renamed into place (else a crash can leave an empty
    file, or a file no intent explains); the renames; a second ``syncfs`` that makes them
    durable; and a transaction that turns each intent into the file's base (the row's key
    changed, its content not written again).  A crash at any point leaves the old file and
    an intent, or the new file and its base.  Left out, as in :func:`crdt_join_floor`: the
    transport, the layout, the watcher, logs and status, and every check against a
    concurrent edit."""
    _, items = _join_payload(tree)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    os.sync()
    t0 = time.perf_counter()
    landing = _CrashSafeLanding(dest, overlap)
    try:
        for start in range(0, len(items), batch):
            landing.land(items[start : start + batch])
        landing.finish()
    finally:
        landing.close()
    return time.perf_counter() - t0


# The founder of :func:`tls_join_floor`: sends a file of ready frames over TLS (Tack's own:
# TLS 1.3, both sides presenting a device certificate), as fast as the connection takes them.
_SENDER = """
import socket, sys
from pathlib import Path
from engine.tls import TlsMaterial, client_context
host, port, payload, cert, key = sys.argv[1:6]
ctx = client_context(TlsMaterial(Path(cert), Path(key), b""))
with socket.create_connection((host, int(port))) as raw:
    with ctx.wrap_socket(raw) as tls, open(payload, "rb") as frames:
        while chunk := frames.read(1 << 20):
            tls.sendall(chunk)
"""
# The founder of :func:`sync_join_floor`: answers the joining device's asks (see there).
_SYNC_FOUNDER = "import sys; from bench.floor import answer_asks; answer_asks(*sys.argv[1:6])"
_FRAME = struct.Struct(">cHI")  # kind, id length, data length
_LAYOUT_ID = ""  # the layout document's id in frames (a card's id is never empty)
Frame = tuple[bytes, str, bytes]


def _frame(kind: bytes, name: str, data: bytes) -> bytes:
    return _FRAME.pack(kind, len(name), len(data)) + name.encode() + data


def _take_frames(buffer: bytearray) -> list[Frame]:
    """The whole frames at the start of ``buffer`` as (kind, id, data), removed from it."""
    frames: list[Frame] = []
    at = 0
    while len(buffer) - at >= _FRAME.size:
        kind, id_len, data_len = _FRAME.unpack_from(buffer, at)
        start = at + _FRAME.size
        end = start + id_len + data_len
        if end > len(buffer):
            break
        name = bytes(buffer[start : start + id_len]).decode()
        frames.append((kind, name, bytes(buffer[start + id_len : end])))
        at = end
    del buffer[:at]
    return frames


def _write_payload(path: Path, layout_update: bytes, items: list[Arrival]) -> None:
    """The founder's documents, framed: ``L`` the layout's update, ``T`` a text card's
    update, ``B`` a binary card's bytes."""
    with open(path, "wb") as out:
        out.write(_frame(b"L", _LAYOUT_ID, layout_update))
        for card, _, update, raw in items:
            out.write(_frame(b"B", card, raw) if update is None else _frame(b"T", card, update))


def _join_from_founder(
    script: str, payload: Path, work: Path, receive: Callable[[ssl.SSLSocket], int]
) -> tuple[float, int]:
    """Runs ``script`` as a founder process that connects over Tack's TLS (``argv``: host,
    port, ``payload``, its certificate and key) and ``receive`` on the accepted connection;
    the seconds from the accept (TLS handshake included) to ``receive``'s end, and what it
    returned."""
    from engine.identity import load_or_create
    from engine.tls import issue_leaf, server_context

    founder = issue_leaf(load_or_create(work / "founder", "floor founder"))
    server = server_context(issue_leaf(load_or_create(work / "joiner", "floor joiner")))
    # No session tickets: the TLS floor's sender never reads, and a socket closed with
    # unread data is reset, which can cut off the last frames in flight.
    server.num_tickets = 0
    os.sync()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(60)  # a founder that never connects fails the floor
        port = listener.getsockname()[1]
        sender = subprocess.Popen(
            [sys.executable, "-c", script, "127.0.0.1", str(port), str(payload),
             str(founder.cert_path), str(founder.key_path)],
            env=os.environ | _CHECKOUT_ENV,
        )  # fmt: skip
        try:
            conn, _ = listener.accept()
            conn.settimeout(None)
            t0 = time.perf_counter()
            with server.wrap_socket(conn, server_side=True) as tls:
                received = receive(tls)
            elapsed = time.perf_counter() - t0
        finally:
            try:
                sender.wait(60)
            except subprocess.TimeoutExpired:
                sender.kill()
                sender.wait()
    if sender.returncode != 0:
        raise BenchError(f"the floor's founder exited {sender.returncode}")
    return elapsed, received


def tls_join_floor(
    tree: dict[str, bytes], dest: Path, batch: int = 128, overlap: bool = False
) -> float:
    """Seconds for :func:`crash_safe_join_floor` when the cards come from another process
    over Tack's TLS on loopback, with a layout that names their paths.

    A founder process (started before the clock, its frames ready in a file) connects and
    sends the update of a layout document mapping every card id to its path, then each
    card's update (or a binary card's bytes), framed.  The receiver, one thread with
    blocking sockets, applies the layout, reads the paths from it, and lands the cards as
    they arrive in batches of ``batch``, crash-safely.  The clock runs from the accepted
    connection (TLS handshake included) to the last batch's bases.  Left out: any
    authentication, the sync protocol's own messages, the watcher, logs and status, and
    every check against a concurrent edit."""
    layout_update, items = _join_payload(tree)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="tls-join-floor-"))
    try:
        _write_payload(work / "payload", layout_update, items)
        elapsed, landed = _join_from_founder(
            _SENDER, work / "payload", work, lambda tls: _receive(tls, dest, batch, overlap)
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if landed != len(items):
        raise BenchError(f"the floor's receiver landed {landed} of {len(items)} cards")
    return elapsed


def _receive(tls: socket.socket, dest: Path, batch: int, overlap: bool) -> int:
    """The receiving side of :func:`tls_join_floor`, until the sender closes; how many
    cards it landed."""
    landing = _CrashSafeLanding(dest, overlap)
    try:
        cards = _ArrivalBatches(landing, batch)
        paths: dict[str, str] = {}
        buffer = bytearray()
        chunk = bytearray(1 << 20)
        while n := tls.recv_into(chunk):
            buffer += chunk[:n]
            for kind, card, data in _take_frames(buffer):
                if kind == b"L":
                    layout: Doc[Map[str]] = Doc()
                    layout.apply_update(data)
                    paths = json.loads(str(layout.get("cards", type=Map)))
                elif kind == b"T":
                    cards.add((card, paths[card], data, b""))
                else:
                    cards.add((card, paths[card], None, data))
        return cards.done()
    finally:
        landing.close()


# The watcher of :func:`sync_join_floor`: watchdog's observer on the folder, in a process of
# its own as Tack runs it, with Tack's event mask.  It drops every event but counts the files
# it saw placed, and the overflows of the kernel's queue (which watchdog only logs).  A file
# is seen placed when it is renamed into place, or, in a folder made so shortly before that
# watchdog's watch on it came after the rename, when watchdog reports it as created (its
# walk of a new folder); temp files and the store (names starting with a dot) are not
# counted.  Once its stdin closes (the join is over) it ends as soon as it has seen every
# file placed, or at once if an overflow lost some, and writes the overflows' count and the
# placed files' paths, NUL-separated.
_WATCHER = """
import logging, os, sys, threading
from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer
from fsbridge.watchproc import WANTED_EVENTS
root, expected = sys.argv[1], int(sys.argv[2])
placed, overflows, enough = set(), [0], threading.Event()
def seen(path, event):
    if not event.is_directory and not os.path.basename(path).startswith("."):
        placed.add(path)
        if len(placed) >= expected:
            enough.set()
class Count(FileSystemEventHandler):
    def on_moved(self, event):
        seen(event.dest_path, event)
    def on_created(self, event):
        seen(event.src_path, event)
class Overflows(logging.Handler):
    def emit(self, record):
        if "overflow" in record.getMessage():
            overflows[0] += 1
logging.getLogger("watchdog.observers").addHandler(Overflows())
observer = Observer()
observer.schedule(Count(), root, recursive=True, event_filter=WANTED_EVENTS)
observer.start()
print("ready", flush=True)
sys.stdin.read()
while len(placed) < expected and not overflows[0]:
    enough.wait(0.05)
observer.stop()
report = [str(overflows[0]), *(os.path.relpath(path, root) for path in placed)]
sys.stdout.buffer.write(b"\\0".join(os.fsencode(field) for field in report))
"""
_ASK_WINDOW = 256  # asks the joining device keeps unanswered, at least
_STEP1 = bytes((YMessageType.SYNC, YSyncMessageType.SYNC_STEP1))  # a SyncStep1's first bytes
_STEP2 = bytes((YMessageType.SYNC, YSyncMessageType.SYNC_STEP2))  # a SyncStep2's first bytes


def answer_asks(host: str, port: str, payload: str, cert: str, key: str) -> None:
    """The founder of :func:`sync_join_floor`: connects over Tack's TLS with the documents
    of ``payload`` (see :func:`_write_payload`) at hand, and answers each ask until the
    joining device closes: a y-protocols SyncStep1 for a document with its SyncStep2, and a
    ``G`` for a binary card with its bytes.  The asker holds nothing, so each SyncStep1's
    state vector is empty, and the document's stored update, as it is, is the answer: a
    SyncStep2 may carry any update that covers what the asker lacks, and this is the least a
    founder can do.  The answers to everything one read brought are sent together."""
    from engine.tls import TlsMaterial, client_context

    stored: dict[str, bytes] = {}
    for _, name, data in _take_frames(bytearray(Path(payload).read_bytes())):
        stored[name] = data
    nothing = read_message(create_sync_message(Doc())[2:])  # an empty state vector
    ctx = client_context(TlsMaterial(Path(cert), Path(key), b""))
    with socket.create_connection((host, int(port))) as raw, ctx.wrap_socket(raw) as tls:
        buffer = bytearray()
        while chunk := tls.recv(1 << 16):
            buffer += chunk
            answers = []
            for kind, name, data in _take_frames(buffer):
                if kind == b"G":
                    answers.append(_frame(b"B", name, stored[name]))
                elif data[:2] == _STEP1 and read_message(data[2:]) == nothing:
                    answers.append(_frame(b"S", name, _STEP2 + write_message(stored[name])))
                else:
                    raise BenchError(f"not the SyncStep1 of a device holding nothing: {data!r}")
            tls.sendall(b"".join(answers))


def _sync_update(message: bytes) -> bytes:
    """The update inside a y-protocols SyncStep2 message."""
    if message[:2] != _STEP2:
        raise BenchError(f"not a SyncStep2: {message[:2]!r}")
    return read_message(message[2:])


def _receive_synced(tls: ssl.SSLSocket, dest: Path, batch: int, overlap: bool) -> int:
    """The joining side of :func:`sync_join_floor`; how many cards it landed."""
    landing = _CrashSafeLanding(dest, overlap)
    try:
        nothing = create_sync_message(Doc())  # SyncStep1 of a device that holds nothing
        tls.sendall(_frame(b"S", _LAYOUT_ID, nothing))
        buffer = bytearray()
        chunk = bytearray(1 << 20)
        layout: Doc[Map[str]] = Doc()
        answer: list[Frame] = []
        while not answer:  # the layout's answer comes alone: nothing else has been asked
            n = tls.recv_into(chunk)
            if not n:
                raise BenchError("the founder closed before sending the layout")
            buffer += chunk[:n]
            answer = _take_frames(buffer)
        layout.apply_update(_sync_update(answer[0][2]))
        paths: dict[str, str] = json.loads(str(layout.get("cards", type=Map)))
        digests: dict[str, str] = json.loads(str(layout.get("blobs", type=Map)))
        asks = [_frame(b"G", card, b"") if card in digests else _frame(b"S", card, nothing)
                for card in paths]  # fmt: skip
        cards = _ArrivalBatches(landing, batch)
        asked = answered = 0
        while answered < len(asks):
            if asked < len(asks) and asked - answered <= _ASK_WINDOW:
                tls.sendall(b"".join(asks[asked : asked + _ASK_WINDOW]))
                asked = min(len(asks), asked + _ASK_WINDOW)
                continue
            n = tls.recv_into(chunk)
            if not n:
                raise BenchError(f"the founder closed after {answered} of {len(asks)} answers")
            buffer += chunk[:n]
            for kind, card, data in _take_frames(buffer):
                answered += 1
                if kind == b"S":
                    cards.add((card, paths[card], _sync_update(data), b""))
                elif hashlib.sha256(data).hexdigest() == digests[card]:
                    cards.add((card, paths[card], None, data))
                else:
                    raise BenchError(f"card {card}'s bytes do not match their digest")
        return cards.done()
    finally:
        landing.close()


@dataclass(frozen=True)
class SyncJoin:
    """One run of :func:`sync_join`: its seconds, and what its watcher saw."""

    seconds: float
    watched: Watched


def sync_join_floor(
    tree: dict[str, bytes], dest: Path, batch: int = 128, overlap: bool = False
) -> float:
    """Seconds for :func:`sync_join`."""
    return sync_join(tree, dest, batch, overlap).seconds


def sync_join(
    tree: dict[str, bytes], dest: Path, batch: int = 128, overlap: bool = False
) -> SyncJoin:
    """:func:`tls_join_floor` with the parts of a join DESIGN.md names that it
    leaves out: the Yjs sync protocol per document, blobs verified by hash, and a watcher
    on the folder (a save made during a join must not be lost).

    The joining device asks for the layout document with a y-protocols SyncStep1 (it holds
    nothing), applies the founder's SyncStep2, then asks for every card: a SyncStep1 for a
    text card, a request for a binary card's bytes, which it checks against the digest the
    layout holds.  It keeps at least ``_ASK_WINDOW`` asks in flight and lands the answers
    as they come, in batches of ``batch``, crash-safely.  The founder (:func:`answer_asks`)
    answers from every document's update, read before the clock.  A watchdog observer, in a
    process of its own and with Tack's event mask, watches the folder from before the
    clock; once the join is over it must have seen every file placed, unless
    the kernel's event queue overflowed (a Tack would then rescan the space; not timed here).
    Left out: any authentication, the founder's own asks, blob chunking, logs and status,
    and every check against a concurrent edit."""
    layout_update, items = _join_payload(tree)
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    work = Path(tempfile.mkdtemp(prefix="sync-join-floor-"))
    try:
        with placement_watcher(dest, len(items)) as watched:
            _write_payload(work / "payload", layout_update, items)
            elapsed, landed = _join_from_founder(
                _SYNC_FOUNDER, work / "payload", work,
                lambda tls: _receive_synced(tls, dest, batch, overlap),
            )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if landed != len(items):
        raise BenchError(f"the floor's joiner landed {landed} of {len(items)} cards")
    if len(watched.placed) < len(items) and not watched.overflows:
        raise BenchError(
            f"the floor's watcher saw {len(watched.placed)} of {len(items)} files placed"
        )
    return SyncJoin(elapsed, watched)


@dataclass
class Watched:
    """What the watcher of :func:`placement_watcher` saw."""

    placed: set[str] = field(default_factory=set)  # files placed, relative to the folder
    overflows: int = 0  # times the kernel's event queue overflowed, losing events


@contextlib.contextmanager
def placement_watcher(folder: Path, expected: int) -> Iterator[Watched]:
    """The watcher of :func:`sync_join` on ``folder`` (see ``_WATCHER``), watching once
    this is entered.  When the block ends, what it yields is filled in, once the watcher has
    seen ``expected`` files placed or lost some to an overflow (a minute at most)."""
    watcher = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(folder), str(expected)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        env=os.environ | _CHECKOUT_ENV,
    )  # fmt: skip
    assert watcher.stdout is not None
    try:
        if watcher.stdout.readline() != b"ready\n":
            raise BenchError("the floor's watcher did not start")
        watched = Watched()
        yield watched
        report = watcher.communicate(timeout=60)[0]  # closes its stdin: the join is over
        overflows, *placed = report.split(b"\0")
        watched.overflows = int(overflows)
        watched.placed = {os.fsdecode(path) for path in placed}
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()


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
