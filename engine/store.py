"""The durable store of one space replica: SQLite in WAL mode, one file under ``.tack/``.

It owns five things:

* the **update log** — every Yjs update of every document, appended with its origin, device
  and time, plus at most one **snapshot** per document (a merged update) that replaces the log
  rows it covers once the log has outgrown it;
* the **history** — one human-readable row per change (when, which device, what), which
  compaction never removes, so ``tack log`` keeps working;
* the **bases** — for each file the content that file and its document last agreed on
  (DESIGN §3), with the document state at that moment: either "the log up to ``seq``" or an
  explicit state when the base is not a prefix of the log (after a three-way merge);
* the **heads** — each document's state vector with the seq it reflects, so "are two
  replicas in sync?" can be answered without loading every document.  Heads are a cache,
  written in batches rather than with every update (the replica flushes them): a head may
  lag its log, :meth:`Store.stale_heads` names the documents whose head does, and a digest
  takes those documents' state from the documents themselves;
* small **meta** values (space id, device id, problems).

Durability: commits run with ``synchronous=NORMAL`` in WAL mode — a returned write survives
``kill -9`` of the process at any instant (it is in the WAL), and costs no fsync.  What must
also survive power loss is made so by :meth:`Store.barrier`, one fsync of the WAL that makes
every earlier commit durable: the folder bridge calls it before replacing a user's file (so a
base or write intent is never behind the file on disk), and the network before sending local
updates to peers (so a peer never holds an edit this device could lose).  Local edits that a
power cut took from the store are still in the user's files and are taken in again, with
their base, by the next start-up scan.

Cost per update: :meth:`Store.append_one` is one SQLite transaction holding two rows (the
update and its history row) — the least that keeps an acknowledged update and its history
together through ``kill -9``.

Invariants: compaction never folds log rows newer than the oldest base that refers to them,
so every base state stays reconstructible (a partial index keeps that floor one index probe
away).  A snapshot is either the merge of the rows it replaces (:meth:`compact_if_large`) or
the state of a document that holds exactly those rows (:meth:`compact_to`, which checks
the number of rows it was told the document holds, so a row it never saw is never folded).
The in-memory store used by fast tests is the same code on ``:memory:``.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pycrdt import merge_updates

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS updates (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL,
    data BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS updates_doc ON updates (doc_id, seq);
CREATE TABLE IF NOT EXISTS snapshots (
    doc_id TEXT PRIMARY KEY,
    data BLOB NOT NULL,
    upto_seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    seq INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    card TEXT NOT NULL,
    origin TEXT NOT NULL,
    device TEXT NOT NULL,
    time REAL NOT NULL,
    path TEXT NOT NULL,
    summary TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_card ON history (card, seq);
CREATE TABLE IF NOT EXISTS heads (
    doc_id TEXT PRIMARY KEY,
    sv BLOB NOT NULL,
    seq INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS bases (
    key TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    doc_id TEXT NOT NULL,
    content BLOB NOT NULL,
    sha256 TEXT NOT NULL,
    seq INTEGER NOT NULL,
    state BLOB
);
CREATE INDEX IF NOT EXISTS bases_path ON bases (path);
CREATE INDEX IF NOT EXISTS bases_log_floor ON bases (doc_id, seq) WHERE state IS NULL;
"""

# A new store's page size.  A card's update, and its base's content, is one row each; at
# 4 KiB pages a 2 KB card's row takes a page of its own (two such rows do not fit in one),
# so half of every page is empty.  8 KiB pages hold three such rows: for 10,000 2 KB cards
# the database is 58 MB instead of 86, checkpoints come half as often, and the store's
# writes of a join took 1.1-1.4 s instead of 2.0-2.3 s (BENCHMARKS.md, seventh round).  An
# existing store keeps the page size it was made with (changing it takes a VACUUM out of
# WAL mode).
PAGE_SIZE = 8192

INSERT_UPDATE = "INSERT INTO updates (doc_id, data) VALUES (?, ?)"
INSERT_HISTORY = (
    "INSERT INTO history (seq, doc_id, card, origin, device, time, path, summary)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
PUT_HEAD = "INSERT OR REPLACE INTO heads (doc_id, sv, seq) VALUES (?, ?, ?)"


@dataclass(frozen=True, slots=True)
class Base:
    """What a file and its document last agreed on.

    ``key`` is the card id for file cards (so a rename keeps the base) or ``canvas:<board>``
    for a board's layout file.  The document state at the base is ``state`` when set, else
    the document's log up to and including ``seq``.
    """

    key: str
    path: str
    doc_id: str
    content: bytes
    sha256: str
    seq: int
    state: bytes | None = None


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    seq: int
    doc_id: str
    card: str
    origin: str
    device: str
    time: float
    path: str
    summary: str


@dataclass(frozen=True, slots=True)
class Appended:
    """One update to append: the document, the bytes, and the history row describing it."""

    doc_id: str
    data: bytes
    card: str
    origin: str
    device: str
    time: float
    path: str
    summary: str
    state_vector: bytes = b""  # the document's state vector after this update


@dataclass(frozen=True, slots=True)
class DocLog:
    """A document as stored: its snapshot (if any) and log rows, with their sizes."""

    parts: list[bytes]  # the snapshot first (if any), then the log rows in seq order
    latest_seq: int  # 0 for a document never written
    rows: int  # log rows after the snapshot (up to the seq asked for)
    row_bytes: int
    snapshot_bytes: int


class StoreError(RuntimeError):
    """The store cannot be opened or written (locked, corrupt, disk full); the message says why."""


class Store:
    """SQLite-backed update log, history, bases and meta for one replica."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None = None) -> None:
        self._conn = conn
        self.readonly = False
        self.path = path  # the database file (its WAL is beside it); None in memory
        self._logged: set[str] | None = None  # documents with rows, once asked: see has_log
        self._conn.executescript(SCHEMA)
        self._migrate()

    def _migrate(self) -> None:
        """Bring a store written by an older Tack up to this schema (idempotent)."""
        if self._heads_have_seq():
            return
        with self._tx() as c:
            if self._heads_have_seq():
                return
            c.execute("ALTER TABLE heads ADD COLUMN seq INTEGER NOT NULL DEFAULT 0")
            # Older stores wrote each head with its update: every head is current.
            c.execute(
                "UPDATE heads SET seq = COALESCE("
                "(SELECT MAX(seq) FROM updates u WHERE u.doc_id = heads.doc_id),"
                " (SELECT upto_seq FROM snapshots s WHERE s.doc_id = heads.doc_id), 0)"
            )

    def _heads_have_seq(self) -> bool:
        columns = self._conn.execute("PRAGMA table_info(heads)").fetchall()
        return any(str(col[1]) == "seq" for col in columns)

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Store:
        try:
            if readonly:
                conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(path, timeout=5.0)
                conn.execute(f"PRAGMA page_size={PAGE_SIZE}")  # new stores only: see PAGE_SIZE
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
            conn.isolation_level = None  # explicit BEGIN/COMMIT below
            if readonly:
                return cls._readonly(conn)
            return cls(conn, path)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the store {path}: {exc}") from exc

    @classmethod
    def _readonly(cls, conn: sqlite3.Connection) -> Store:
        store = cls.__new__(cls)
        store._conn = conn
        store.readonly = True
        store.path = None
        store._logged = None
        return store

    @classmethod
    def memory(cls) -> Store:
        conn = sqlite3.connect(":memory:")
        conn.isolation_level = None
        return cls(conn)

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"the store is not writable: {exc}") from exc
        try:
            yield self._conn
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"the store could not be written: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        else:
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise StoreError(f"the store could not commit: {exc}") from exc

    def _rollback(self) -> None:
        # SQLite may have rolled back already (e.g. after SQLITE_FULL).
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("ROLLBACK")

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # -- update log ---------------------------------------------------------------------------

    def append(
        self, items: Iterable[Appended], bases_at: Callable[[int], Iterable[Base]] | None = None
    ) -> list[int]:
        """Append updates (and their history rows) in one durable transaction.

        ``bases_at(seq)``, given the seq of the last appended update, returns bases to record
        in the same transaction (so a crash never separates an update from its base).
        """
        seqs: list[int] = []
        with self._tx() as c:
            for item in items:
                self._note_log(item.doc_id)
                seq = int(c.execute(INSERT_UPDATE, (item.doc_id, item.data)).lastrowid or 0)
                if item.state_vector:
                    c.execute(PUT_HEAD, (item.doc_id, item.state_vector, seq))
                c.execute(
                    INSERT_HISTORY,
                    (
                        seq,
                        item.doc_id,
                        item.card,
                        item.origin,
                        item.device,
                        item.time,
                        item.path,
                        item.summary,
                    ),
                )
                seqs.append(seq)
            if bases_at is not None and seqs:
                for base in bases_at(seqs[-1]):
                    self._put_base(c, base)
        return seqs

    def append_one(
        self,
        doc_id: str,
        data: bytes,
        card: str,
        origin: str,
        device: str,
        time: float,
        path: str,
        summary: str,
        bases_at: Callable[[int], Iterable[Base]] | None = None,
    ) -> int:
        """Append one update and its history row in one durable transaction; its seq.

        The same as ``append([Appended(...)], bases_at)`` without a head, at the least cost
        per call: this is the path every transaction of a replica takes.
        """
        c = self._conn
        try:
            c.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(f"the store is not writable: {exc}") from exc
        try:
            self._note_log(doc_id)
            seq = int(c.execute(INSERT_UPDATE, (doc_id, data)).lastrowid or 0)
            c.execute(INSERT_HISTORY, (seq, doc_id, card, origin, device, time, path, summary))
            if bases_at is not None:
                for base in bases_at(seq):
                    self._put_base(c, base)
            c.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(f"the store could not be written: {exc}") from exc
        except BaseException:
            self._rollback()
            raise
        return seq

    def heads(self) -> dict[str, bytes]:
        """Each document's stored state vector, without loading any document.

        A head may lag its log: see :meth:`stale_heads`.
        """
        rows = self._conn.execute("SELECT doc_id, sv FROM heads").fetchall()
        return {str(r[0]): bytes(r[1]) for r in rows}

    def put_heads(self, heads: Iterable[tuple[str, bytes, int]]) -> None:
        """Record ``(doc_id, state vector, seq it reflects)`` heads in one transaction."""
        with self._tx() as c:
            c.executemany(PUT_HEAD, heads)

    def stale_heads(self) -> list[str]:
        """Documents whose head is missing or older than their last log row."""
        if self.readonly and not self._heads_have_seq():
            return []  # written by an older Tack, which kept every head current
        rows = self._conn.execute(
            "SELECT DISTINCT u.doc_id FROM (SELECT doc_id, MAX(seq) AS last FROM updates"
            " GROUP BY doc_id UNION ALL SELECT doc_id, upto_seq FROM snapshots) AS u"
            " LEFT JOIN heads AS h ON h.doc_id = u.doc_id WHERE h.seq IS NULL OR h.seq < u.last"
        ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def doc_ids(self) -> list[str]:
        rows = self._conn.execute(
            "SELECT doc_id FROM snapshots UNION SELECT DISTINCT doc_id FROM updates"
        ).fetchall()
        return sorted(str(r[0]) for r in rows)

    def has_log(self, doc_id: str) -> bool:
        """Whether rows of ``doc_id`` (log or snapshot) may be stored: false only when none
        is, so a caller may skip :meth:`load_log`.  The first call reads which documents have
        rows; every row written through this store adds its document, before the write (a
        write that fails leaves the answer true, which is safe).  Rows are written by this
        store only: the space lock keeps one ``tack up`` per space, and a read-only store,
        which another process writes, answers true."""
        if self.readonly:
            return True
        if self._logged is None:
            self._logged = set(self.doc_ids())
        return doc_id in self._logged

    def _note_log(self, doc_id: str) -> None:
        if self._logged is not None:
            self._logged.add(doc_id)

    def latest_seq(self, doc_id: str) -> int:
        row = self._conn.execute(
            "SELECT MAX(seq) FROM updates WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if row is not None and row[0] is not None:
            return int(row[0])
        snap = self._conn.execute(
            "SELECT upto_seq FROM snapshots WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        return 0 if snap is None else int(snap[0])

    def load(self, doc_id: str, upto_seq: int | None = None) -> list[bytes]:
        """The snapshot (if any) and the log rows of ``doc_id``, optionally only up to a seq."""
        out: list[bytes] = []
        snap = self._conn.execute(
            "SELECT data, upto_seq FROM snapshots WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if snap is not None:
            if upto_seq is not None and upto_seq < int(snap[1]):
                raise StoreError(f"state of {doc_id} at {upto_seq} was compacted away")
            out.append(bytes(snap[0]))
        query = "SELECT data FROM updates WHERE doc_id = ?"
        args: tuple[object, ...] = (doc_id,)
        if upto_seq is not None:
            query += " AND seq <= ?"
            args = (doc_id, upto_seq)
        out.extend(bytes(r[0]) for r in self._conn.execute(query + " ORDER BY seq", args))
        return out

    def load_log(self, doc_id: str, upto_seq: int | None = None) -> DocLog:
        """The snapshot and log rows of ``doc_id`` (only those up to ``upto_seq`` if given),
        with their sizes and the last seq."""
        snap = self._conn.execute(
            "SELECT data, upto_seq FROM snapshots WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        if upto_seq is None:
            upto_seq = 2**63 - 1
        rows = self._conn.execute(
            "SELECT seq, data FROM updates WHERE doc_id = ? AND seq <= ? ORDER BY seq",
            (doc_id, upto_seq),
        ).fetchall()
        parts = [bytes(r[1]) for r in rows]
        row_bytes = sum(len(p) for p in parts)
        latest = int(rows[-1][0]) if rows else 0
        snapshot_bytes = 0
        if snap is not None:
            snapshot_bytes = len(snap[0])
            parts.insert(0, bytes(snap[0]))
            latest = latest or int(snap[1])
        return DocLog(parts, latest, len(rows), row_bytes, snapshot_bytes)

    def log_size(self, doc_id: str) -> tuple[int, int, int]:
        """Log rows of ``doc_id`` after its snapshot, their bytes, and the snapshot's bytes."""
        rows, row_bytes = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(LENGTH(data)), 0) FROM updates WHERE doc_id = ?",
            (doc_id,),
        ).fetchone()
        snap = self._conn.execute(
            "SELECT LENGTH(data) FROM snapshots WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        return int(rows), int(row_bytes), 0 if snap is None else int(snap[0])

    def log_floor(self, doc_id: str) -> int | None:
        """The oldest seq whose log state a base of ``doc_id`` needs (None: no such base)."""
        row = self._conn.execute(
            "SELECT MIN(seq) FROM bases WHERE doc_id = ? AND state IS NULL", (doc_id,)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def compact_to(
        self,
        doc_id: str,
        state: bytes,
        upto_seq: int,
        rows: int,
        *,
        keep_base_states: bool = True,
        head: bytes | None = None,
    ) -> bool:
        """Replace the snapshot and the log rows of ``doc_id`` up to ``upto_seq`` by ``state``.

        ``state`` is the document's whole state at ``upto_seq`` — the live document's
        ``get_update()`` (one pass over the document instead of a merge of thousands of rows)
        or a scratch document's.  It is written only if the log holds exactly ``rows`` rows up
        to ``upto_seq`` (so no row missing from the caller's document is folded), the current
        snapshot is not newer, and, with ``keep_base_states``, no base needs an older state of
        the log.  ``head`` (the state vector of ``state``, when ``upto_seq`` is the last seq)
        is recorded with it.  True if it compacted.
        """
        with self._tx() as c:
            count = c.execute(
                "SELECT COUNT(*) FROM updates WHERE doc_id = ? AND seq <= ?", (doc_id, upto_seq)
            ).fetchone()[0]
            if not rows or int(count) != rows:
                return False
            snap = c.execute(
                "SELECT upto_seq FROM snapshots WHERE doc_id = ?", (doc_id,)
            ).fetchone()
            if snap is not None and int(snap[0]) > upto_seq:
                return False
            if keep_base_states:
                floor = self.log_floor(doc_id)
                if floor is not None and floor < upto_seq:
                    return False
            self._note_log(doc_id)
            c.execute(
                "INSERT OR REPLACE INTO snapshots (doc_id, data, upto_seq) VALUES (?, ?, ?)",
                (doc_id, state, upto_seq),
            )
            c.execute("DELETE FROM updates WHERE doc_id = ? AND seq <= ?", (doc_id, upto_seq))
            if head is not None:
                c.execute(PUT_HEAD, (doc_id, head, upto_seq))
        return True

    def compact_if_large(
        self, doc_id: str, min_rows: int = 64, *, keep_base_states: bool = True
    ) -> bool:
        """Fold log rows into the snapshot once they outweigh it.

        With ``keep_base_states`` (documents whose old states are forked, i.e. text), rows
        newer than the oldest base that refers to the log are kept; without it (the space
        document, whose bases are only content hashes) everything may fold.
        """
        floor = self.log_floor(doc_id) if keep_base_states else None
        query = "SELECT seq, data FROM updates WHERE doc_id = ?"
        args: tuple[object, ...] = (doc_id,)
        if floor is not None:
            query += " AND seq <= ?"
            args = (doc_id, int(floor))
        rows = self._conn.execute(query + " ORDER BY seq", args).fetchall()
        if len(rows) < min_rows:
            return False
        snap = self._conn.execute(
            "SELECT data FROM snapshots WHERE doc_id = ?", (doc_id,)
        ).fetchone()
        log_bytes = sum(len(r[1]) for r in rows)
        if snap is not None and log_bytes < len(snap[0]):
            return False
        parts = ([bytes(snap[0])] if snap is not None else []) + [bytes(r[1]) for r in rows]
        merged = merge_updates(*parts)
        upto = int(rows[-1][0])
        with self._tx() as c:
            self._note_log(doc_id)
            c.execute(
                "INSERT OR REPLACE INTO snapshots (doc_id, data, upto_seq) VALUES (?, ?, ?)",
                (doc_id, merged, upto),
            )
            c.execute("DELETE FROM updates WHERE doc_id = ? AND seq <= ?", (doc_id, upto))
        return True

    # -- history ------------------------------------------------------------------------------

    def history(self, card: str | None = None, limit: int = 200) -> list[HistoryEntry]:
        """The newest ``limit`` history rows, oldest first; of one card when ``card`` is given."""
        cols = "seq, doc_id, card, origin, device, time, path, summary"
        if card is None:
            rows = self._conn.execute(
                f"SELECT {cols} FROM history ORDER BY seq DESC LIMIT ?", (limit,)
            ).fetchall()
        else:
            rows = self._conn.execute(
                f"SELECT {cols} FROM history WHERE card = ? ORDER BY seq DESC LIMIT ?",
                (card, limit),
            ).fetchall()
        return [
            HistoryEntry(
                int(r[0]),
                str(r[1]),
                str(r[2]),
                str(r[3]),
                str(r[4]),
                float(r[5]),
                str(r[6]),
                str(r[7]),
            )
            for r in reversed(rows)
        ]

    # -- bases --------------------------------------------------------------------------------

    def get_base(self, key: str) -> Base | None:
        row = self._conn.execute(
            "SELECT key, path, doc_id, content, sha256, seq, state FROM bases WHERE key = ?",
            (key,),
        ).fetchone()
        if row is None:
            return None
        return Base(
            str(row[0]),
            str(row[1]),
            str(row[2]),
            bytes(row[3]),
            str(row[4]),
            int(row[5]),
            None if row[6] is None else bytes(row[6]),
        )

    def keys_with_base_at(self, path: str) -> list[str]:
        """Keys of the bases (intents included) whose file is ``path``."""
        rows = self._conn.execute("SELECT key FROM bases WHERE path = ?", (path,)).fetchall()
        return [str(r[0]) for r in rows]

    def base_digests(self) -> dict[str, tuple[str, str, str, int, bool]]:
        """Every base (intents included) without its content or state, by key:
        ``(path, doc_id, sha256, seq, has_state)``.  One query for what a start-up scan
        compares each file with (the contents of 10,000 bases would be 20 MB read for
        nothing)."""
        rows = self._conn.execute(
            "SELECT key, path, doc_id, sha256, seq, state IS NOT NULL FROM bases"
        ).fetchall()
        return {str(r[0]): (str(r[1]), str(r[2]), str(r[3]), int(r[4]), bool(r[5])) for r in rows}

    def base_keys(self) -> list[str]:
        """The keys of every base (intents included), from the key index alone."""
        return [str(r[0]) for r in self._conn.execute("SELECT key FROM bases").fetchall()]

    def latest_seqs(self) -> dict[str, int]:
        """:meth:`latest_seq` of every document with a log row or a snapshot, in one query."""
        rows = self._conn.execute(
            "SELECT doc_id, MAX(last) FROM (SELECT doc_id, MAX(seq) AS last FROM updates"
            " GROUP BY doc_id UNION ALL SELECT doc_id, upto_seq FROM snapshots) GROUP BY doc_id"
        ).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def bases(self) -> list[Base]:
        rows = self._conn.execute(
            "SELECT key, path, doc_id, content, sha256, seq, state FROM bases"
        ).fetchall()
        return [
            Base(
                str(r[0]),
                str(r[1]),
                str(r[2]),
                bytes(r[3]),
                str(r[4]),
                int(r[5]),
                None if r[6] is None else bytes(r[6]),
            )
            for r in rows
        ]

    def barrier(self) -> None:
        """Make every commit so far durable against power loss (one fsync of the WAL)."""
        self._conn.execute("PRAGMA synchronous=FULL")
        try:
            with self._tx() as c:
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('barrier', '')")
        finally:
            self._conn.execute("PRAGMA synchronous=NORMAL")

    def put_base(self, base: Base) -> None:
        with self._tx() as c:
            self._put_base(c, base)

    def put_bases_durably(self, bases: list[Base], meta: dict[str, str]) -> None:
        """Store bases and meta values in one transaction that is durable against power loss
        when this returns (one WAL fsync, which covers every earlier commit too): how a write
        intent is made to outlive the file it announces."""
        self._conn.execute("PRAGMA synchronous=FULL")
        try:
            self.put_bases_and_meta(bases, meta)
        finally:
            self._conn.execute("PRAGMA synchronous=NORMAL")

    def put_bases_and_meta(self, bases: list[Base], meta: dict[str, str]) -> None:
        """:meth:`put_bases_durably` without the fsync: durable only once the caller makes
        the store's file system durable (a ``syncfs`` of it) or calls :meth:`barrier`."""
        with self._tx() as c:
            for base in bases:
                self._put_base(c, base)
            for key, value in meta.items():
                c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def replace_bases(self, put: list[Base], delete: list[str]) -> None:
        """Put some bases and delete others (by key) in one transaction."""
        with self._tx() as c:
            for base in put:
                self._put_base(c, base)
            self._delete_bases(c, delete)

    def replace_bases_from(self, put: list[tuple[Base, str]], delete: list[str]) -> None:
        """Put each base of ``put`` and delete the bases keyed ``delete``, in one transaction.

        Each base comes with a stand-in key: when the stand-in's row holds exactly that base
        (a write intent, stored just before its file was written), the row is given the
        base's key instead of the content being written a second time.  Otherwise the base
        is put as given, and the stand-in's row, if any, deleted."""
        with self._tx() as c:
            for base, standin in put:
                taken = c.execute(
                    "UPDATE OR REPLACE bases SET key = ? WHERE key = ? AND path = ?"
                    " AND doc_id = ? AND sha256 = ? AND seq = ? AND state IS ?",
                    (base.key, standin, base.path, base.doc_id, base.sha256, base.seq,
                     base.state),
                ).rowcount  # fmt: skip
                if not taken:
                    self._put_base(c, base)
                    self._delete_bases(c, [standin])
            self._delete_bases(c, delete)

    @staticmethod
    def _delete_bases(c: sqlite3.Connection, keys: Iterable[str]) -> None:
        c.executemany("DELETE FROM bases WHERE key = ?", ((key,) for key in keys))

    @staticmethod
    def _put_base(c: sqlite3.Connection, base: Base) -> None:
        c.execute(
            "INSERT OR REPLACE INTO bases (key, path, doc_id, content, sha256, seq, state)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (base.key, base.path, base.doc_id, base.content, base.sha256, base.seq, base.state),
        )

    def intents_for(self, path: str) -> list[Base]:
        """Write intents (bases stored just before a write) recorded for the file ``path``."""
        return [
            base
            for key in self.keys_with_base_at(path)
            if key.endswith("#intent") and (base := self.get_base(key)) is not None
        ]

    def delete_base(self, key: str) -> None:
        with self._tx() as c:
            self._delete_bases(c, [key])
