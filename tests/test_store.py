"""The SQLite store on real files: round trips, compaction, crash safety, readers and locks.

Most tests use a store file under ``tmp_path``; the crash test kills a real writer process
with SIGKILL in the middle of a burst of appends and checks that every append it
acknowledged survived and that the database is intact.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from engine.store import PAGE_SIZE, SCHEMA, Appended, Base, Store, StoreError

REPO = Path(__file__).resolve().parent.parent
LOCK_TIMEOUT = 5.0  # Store.open's busy timeout


def item(doc_id: str, data: bytes, summary: str = "", origin: str = "api") -> Appended:
    return Appended(
        doc_id, data, "card-" + doc_id, origin, "device-1", 1700000000.5, "a.md", summary
    )


def text_edits(n: int, seed: str = "x") -> tuple[list[bytes], list[str]]:
    """``n`` real Yjs updates of one text, and the text after each of them."""
    doc: Doc[Any] = Doc()
    text: Text = doc.get("content", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    texts: list[str] = []
    for i in range(n):
        with doc.transaction():
            if i % 5 == 4 and len(text) > 2:
                del text[0:1]  # deletions too, so snapshots carry a delete set
            else:
                text.insert(len(text) if i % 2 else 0, f"{seed}{i}é😀 ")
        texts.append(str(text))
    assert len(updates) == n
    return updates, texts


def text_of(parts: list[bytes]) -> str:
    doc: Doc[Any] = Doc()
    for part in parts:
        doc.apply_update(part)
    return str(doc.get("content", type=Text))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / ".tack" / "store.sqlite"


@pytest.fixture
def store(path: Path) -> Iterator[Store]:
    s = Store.open(path)
    yield s
    s.close()


# -- round trips -------------------------------------------------------------------------------


def test_append_and_load_round_trip_survives_reopening(path: Path) -> None:
    store = Store.open(path)
    seqs = store.append([item("a", b"a1", "first ✓"), item("b", b"b1"), item("a", b"a2")])
    assert seqs == sorted(seqs) and len(set(seqs)) == 3
    more = store.append([item("a", b"a3")])
    assert more[0] > seqs[-1]
    store.set_meta("space_id", "s-1")
    store.close()

    store = Store.open(path)
    assert store.load("a") == [b"a1", b"a2", b"a3"]
    assert store.load("b") == [b"b1"]
    assert store.load("a", upto_seq=seqs[2]) == [b"a1", b"a2"]
    assert store.load("missing") == []
    assert store.latest_seq("a") == more[0]
    assert store.latest_seq("b") == seqs[1]
    assert store.latest_seq("missing") == 0
    assert store.doc_ids() == ["a", "b"]
    assert store.get_meta("space_id") == "s-1" and store.get_meta("nope") is None
    rows = store.history()
    assert [r.seq for r in rows] == [*seqs, *more]
    first = rows[0]
    assert (first.doc_id, first.card, first.origin, first.device) == (
        "a",
        "card-a",
        "api",
        "device-1",
    )
    assert (first.time, first.path, first.summary) == (1700000000.5, "a.md", "first ✓")
    assert [r.seq for r in store.history("card-b")] == [seqs[1]]
    assert [r.seq for r in store.history(limit=2)] == [seqs[2], more[0]]
    store.close()


def test_bases_recorded_with_an_append_get_its_last_seq(store: Store) -> None:
    seen: list[int] = []

    def bases_at(seq: int) -> list[Base]:
        seen.append(seq)
        return [
            Base("k", "a.md", "a", b"hello", "h", seq),
            Base("k2", "b.md", "a", b"", "h2", seq, b"S"),
        ]

    seqs = store.append([item("a", b"1"), item("a", b"2")], bases_at)
    assert seen == [seqs[-1]]
    assert store.get_base("k") == Base("k", "a.md", "a", b"hello", "h", seqs[-1])
    assert store.get_base("k2") == Base("k2", "b.md", "a", b"", "h2", seqs[-1], b"S")
    assert sorted(b.key for b in store.bases()) == ["k", "k2"]
    store.delete_base("k")
    assert store.get_base("k") is None


def test_a_failing_bases_callback_rolls_back_the_whole_append(store: Store) -> None:
    def boom(seq: int) -> list[Base]:
        raise RuntimeError("no base")

    with pytest.raises(RuntimeError):
        store.append([item("a", b"1")], boom)
    assert store.load("a") == [] and store.history() == []


# -- compaction --------------------------------------------------------------------------------


def test_history_survives_compaction(store: Store) -> None:
    updates, texts = text_edits(100)
    seqs = [store.append([item("d", u, f"edit {i}")])[0] for i, u in enumerate(updates)]
    before = store.history(limit=1000)
    assert store.compact_if_large("d", min_rows=64)
    assert len(store.load("d")) == 1, "the log was not folded into a snapshot"
    assert store.history(limit=1000) == before
    assert [h.summary for h in store.history("card-d", limit=1000)] == [
        f"edit {i}" for i in range(100)
    ]
    assert text_of(store.load("d")) == texts[-1]
    assert store.latest_seq("d") == seqs[-1]


def test_compaction_never_folds_rows_a_base_still_needs(store: Store) -> None:
    updates, texts = text_edits(120)
    seqs = [store.append([item("d", u)])[0] for u in updates]
    other = store.append([item("other", b"x")])[0]
    store.put_base(Base("early", "a.md", "d", texts[39].encode(), "h", seqs[39]))
    store.put_base(Base("late", "a.md", "d", texts[99].encode(), "h", seqs[99]))
    # Bases that do not need the log: an explicit state, and another document's base.
    store.put_base(Base("explicit", "b.md", "d", b"", "h", seqs[5], state=b"\x00\x00"))
    store.put_base(Base("elsewhere", "c.md", "other", b"x", "h", other))
    full = text_of(store.load("d"))

    assert store.compact_if_large("d", min_rows=16)
    assert store.load("d", upto_seq=seqs[39]) == store.load("d")[:1], "folded past the base"
    assert text_of(store.load("d", upto_seq=seqs[39])) == texts[39]
    assert text_of(store.load("d", upto_seq=seqs[99])) == texts[99]
    assert text_of(store.load("d")) == full
    assert len(store.load("d")) == 1 + (120 - 40), "rows newer than the oldest base were folded"

    # Once the early base moves on, compaction may fold up to the next one, and no further.
    store.delete_base("early")
    assert store.compact_if_large("d", min_rows=16)
    assert text_of(store.load("d", upto_seq=seqs[99])) == texts[99]
    assert len(store.load("d")) == 1 + (120 - 100)
    assert text_of(store.load("d")) == full
    with pytest.raises(StoreError, match="compacted"):
        store.load("d", upto_seq=seqs[39])
    assert store.load("other") == [b"x"]
    assert store.latest_seq("d") == seqs[-1]


def test_compaction_waits_for_enough_rows(store: Store) -> None:
    updates, texts = text_edits(10)
    for u in updates:
        store.append([item("d", u)])
    assert not store.compact_if_large("d", min_rows=64)
    assert len(store.load("d")) == 10
    assert store.compact_if_large("d", min_rows=10)
    assert not store.compact_if_large("d", min_rows=1), "nothing new to fold"
    assert text_of(store.load("d")) == texts[-1]


@settings(max_examples=40, deadline=None)
@given(
    script=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.integers(1, 12)),
            st.tuples(st.just("base"), st.integers(0, 3)),
            st.tuples(st.just("drop"), st.integers(0, 3)),
            st.tuples(st.just("compact"), st.integers(1, 8)),
        ),
        max_size=25,
    )
)
def test_every_live_base_stays_loadable_whatever_the_compactions(
    script: list[tuple[str, int]],
) -> None:
    store = Store.memory()  # the same code as the file store, on ":memory:"
    updates, texts = text_edits(300)
    text_at: dict[int, str] = {}
    n = 0
    for op, arg in script:
        if op == "append":
            for u in updates[n : n + arg]:
                text_at[store.append([item("d", u)])[0]] = texts[n]
                n += 1
        elif op == "base" and n:
            seq = store.latest_seq("d")
            store.put_base(Base(f"b{arg}", "a.md", "d", text_at[seq].encode(), "h", seq))
        elif op == "drop":
            store.delete_base(f"b{arg}")
        elif op == "compact":
            store.compact_if_large("d", min_rows=arg)
        for base in store.bases():
            assert text_of(store.load("d", upto_seq=base.seq)) == text_at[base.seq]
        assert text_of(store.load("d")) == (texts[n - 1] if n else "")


# -- the per-update path, live compaction, heads --------------------------------------------------


def test_append_one_is_append_of_one_item(store: Store) -> None:
    seq = store.append_one("a", b"a1", "card-a", "api", "device-1", 1700000000.5, "a.md", "s")
    assert store.load("a") == [b"a1"] and store.latest_seq("a") == seq
    (row,) = store.history()
    assert (row.seq, row.card, row.origin, row.device, row.path, row.summary) == (
        seq,
        "card-a",
        "api",
        "device-1",
        "a.md",
        "s",
    )
    seen: list[int] = []

    def bases_at(at: int) -> list[Base]:
        seen.append(at)
        return [Base("k", "a.md", "a", b"x", "h", at)]

    second = store.append_one("a", b"a2", "card-a", "api", "d", 0.0, "a.md", "", bases_at)
    assert seen == [second] and store.get_base("k") == Base("k", "a.md", "a", b"x", "h", second)

    def boom(at: int) -> list[Base]:
        raise RuntimeError("no base")

    with pytest.raises(RuntimeError):
        store.append_one("a", b"a3", "card-a", "api", "d", 0.0, "a.md", "", boom)
    assert store.load("a") == [b"a1", b"a2"] and len(store.history()) == 2


def test_has_log_is_false_only_for_a_document_without_rows(path: Path) -> None:
    """What lets a replica skip looking for documents it never had (a join asks about
    10,000): never false for a document with rows, whichever way they were written."""
    store = Store.open(path)
    assert not store.has_log("a")  # read from the file, then remembered
    store.append_one("a", b"a1", "card-a", "api", "d", 0.0, "a.md", "")
    store.append([item("b", b"b1")])
    updates, texts = text_edits(70)
    store.append([item("c", u) for u in updates])
    assert store.compact_if_large("c")  # every row of c is in its snapshot now
    assert store._conn.execute("SELECT COUNT(*) FROM updates WHERE doc_id = 'c'").fetchone()[0] == 0
    assert store.has_log("a") and store.has_log("b") and store.has_log("c")
    assert not store.has_log("d")
    store.close()
    reopened = Store.open(path)
    assert [reopened.has_log(d) for d in "abcd"] == [True, True, True, False]
    assert text_of(reopened.load("c")) == texts[-1]
    reopened.close()
    # A read-only store is written by another process (the daemon): it remembers nothing.
    readonly = Store.open(path, readonly=True)
    assert readonly.has_log("d")
    readonly.close()


def test_a_write_that_fails_still_counts_its_document_as_logged(store: Store) -> None:
    """A wrong "true" costs a query; a wrong "false" would hide rows."""
    assert not store.has_log("a")

    def boom(at: int) -> list[Base]:
        raise RuntimeError("no base")

    with pytest.raises(RuntimeError):
        store.append_one("a", b"a1", "card-a", "api", "d", 0.0, "a.md", "", boom)
    assert store.load("a") == [] and store.has_log("a")


def test_the_log_floor_is_one_index_probe(store: Store) -> None:
    plan = store._conn.execute(
        "EXPLAIN QUERY PLAN SELECT MIN(seq) FROM bases WHERE doc_id = ? AND state IS NULL",
        ("d",),
    ).fetchall()
    assert "bases_log_floor" in str(plan), plan
    store.put_base(Base("k1", "a.md", "d", b"", "h", 7))
    store.put_base(Base("k2", "a.md", "d", b"", "h", 3, state=b"S"))  # needs no log
    store.put_base(Base("k3", "b.md", "e", b"", "h", 1))
    assert (store.log_floor("d"), store.log_floor("e"), store.log_floor("f")) == (7, 1, None)


def test_compact_to_folds_only_the_rows_it_was_told_about(store: Store) -> None:
    updates, texts = text_edits(30)
    seqs = [store.append([item("d", u)])[0] for u in updates]
    live: Doc[Any] = Doc()
    for u in updates:
        live.apply_update(u)
    state = live.get_update()
    # A row the caller's document does not hold (another writer's) blocks the fold.
    assert not store.compact_to("d", state, seqs[-1], rows=29)
    # So does a base that needs an older state of the log ...
    store.put_base(Base("old", "a.md", "d", b"", "h", seqs[9]))
    assert not store.compact_to("d", state, seqs[-1], rows=30)
    assert store.compact_to("d", state, seqs[-1], rows=30, keep_base_states=False)
    assert store.load("d") == [state] and text_of(store.load("d")) == texts[-1]
    # ... and a snapshot newer than the state offered.
    assert not store.compact_to("d", b"\x00\x00", seqs[5], rows=0)
    store.append([item("d", b"\x00\x00")])
    assert not store.compact_to("d", state, seqs[5], rows=1)
    assert store.latest_seq("d") > seqs[-1]


def test_heads_lag_until_put_and_stale_heads_names_them(store: Store) -> None:
    first = store.append_one("a", b"1", "a", "api", "d", 0.0, "", "")
    store.append([item("b", b"1")])  # no state vector: no head either
    assert store.stale_heads() == ["a", "b"]
    store.put_heads([("a", b"SV-a", first), ("b", b"SV-b", store.latest_seq("b"))])
    assert store.stale_heads() == [] and store.heads() == {"a": b"SV-a", "b": b"SV-b"}
    store.append_one("a", b"2", "a", "api", "d", 0.0, "", "")
    assert store.stale_heads() == ["a"]
    store.append([Appended("b", b"2", "b", "api", "d", 0.0, "", "", state_vector=b"SV-b2")])
    assert store.stale_heads() == ["a"], "append with a state vector writes a current head"


OLD_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE updates (seq INTEGER PRIMARY KEY AUTOINCREMENT, doc_id TEXT NOT NULL,
    data BLOB NOT NULL);
CREATE INDEX updates_doc ON updates (doc_id, seq);
CREATE TABLE snapshots (doc_id TEXT PRIMARY KEY, data BLOB NOT NULL, upto_seq INTEGER NOT NULL);
CREATE TABLE history (seq INTEGER PRIMARY KEY, doc_id TEXT NOT NULL, card TEXT NOT NULL,
    origin TEXT NOT NULL, device TEXT NOT NULL, time REAL NOT NULL, path TEXT NOT NULL,
    summary TEXT NOT NULL);
CREATE INDEX history_card ON history (card, seq);
CREATE TABLE heads (doc_id TEXT PRIMARY KEY, sv BLOB NOT NULL);
CREATE TABLE bases (key TEXT PRIMARY KEY, path TEXT NOT NULL, doc_id TEXT NOT NULL,
    content BLOB NOT NULL, sha256 TEXT NOT NULL, seq INTEGER NOT NULL, state BLOB);
INSERT INTO updates (doc_id, data) VALUES ('a', x'01'), ('b', x'02'), ('a', x'03');
INSERT INTO snapshots VALUES ('c', x'04', 2);
INSERT INTO heads VALUES ('a', x'0a'), ('b', x'0b'), ('c', x'0c');
"""


def test_a_store_from_before_head_seqs_opens_with_every_head_current(path: Path) -> None:
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    old.close()
    reader = Store.open(path, readonly=True)  # e.g. `tack status` before the first `tack up`
    assert reader.stale_heads() == [] and reader.heads() == {"a": b"\n", "b": b"\x0b", "c": b"\x0c"}
    reader.close()
    store = Store.open(path)
    assert store.stale_heads() == []
    assert store.heads() == {"a": b"\n", "b": b"\x0b", "c": b"\x0c"}
    store.append_one("b", b"\x05", "b", "api", "d", 0.0, "", "")
    assert store.stale_heads() == ["b"]
    store.close()
    again = Store.open(path)  # migrating twice changes nothing
    assert again.stale_heads() == ["b"]
    again.close()



def test_a_base_takes_over_its_stand_in_s_row_only_when_that_row_holds_it(
    store: Store,
) -> None:
    """What a written file's intents become: the row of an intent that holds exactly the
    base is re-keyed (its content is not written again); a missing or different stand-in
    never leaves the base missing or stale, and never survives."""

    def base(key: str, content: bytes, seq: int = 7) -> Base:
        return Base(key, "a.md", "doc", content, "sha-" + content.decode(), seq)

    store.put_base(base("a", b"old a"))
    store.put_base(base("a#intent", b"new a"))  # holds exactly what a's base becomes
    store.put_base(base("b#intent", b"new b", seq=6))  # stale: an older write's intent
    store.put_base(base("d#intent", b"not written"))
    rowid = store._conn.execute("SELECT rowid FROM bases WHERE key = 'a#intent'").fetchone()
    store.replace_bases_from(
        [(base("a", b"new a"), "a#intent"), (base("b", b"new b"), "b#intent"),
         (base("c", b"new c"), "c#intent")],
        ["d#intent"],
    )  # fmt: skip
    assert sorted(store.base_keys()) == ["a", "b", "c"]
    assert store.get_base("a") == base("a", b"new a")
    assert store._conn.execute("SELECT rowid FROM bases WHERE key = 'a'").fetchone() == rowid
    assert store.get_base("b") == base("b", b"new b")  # put as given, not the stale row
    assert store.get_base("c") == base("c", b"new c")  # no stand-in at all: put as given
    assert sorted(store.keys_with_base_at("a.md")) == ["a", "b", "c"]


def page_size(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA page_size").fetchone()[0])
    finally:
        conn.close()


def test_a_new_store_fits_three_2_kb_card_rows_in_a_page(path: Path) -> None:
    store = Store.open(path)
    store.append([item(f"doc{i}", os.urandom(1024).hex().encode()) for i in range(30)])
    store.close()
    assert page_size(path) == PAGE_SIZE
    conn = sqlite3.connect(path)
    try:
        (pages,) = conn.execute("SELECT count(*) FROM dbstat WHERE name = 'updates'").fetchone()
    finally:
        conn.close()
    assert pages <= 30 // 3 + 2  # at 4 KiB pages it is one page a row: 30 (and more)


def test_a_store_made_with_4_kib_pages_keeps_them_and_works(path: Path) -> None:
    path.parent.mkdir(parents=True)
    old = sqlite3.connect(path)
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.executescript(SCHEMA)
    old.close()
    store = Store.open(path)
    seqs = store.append([item("a", b"a1"), item("a", b"a2")])
    store.close()
    assert page_size(path) == 4096
    reopened = Store.open(path)
    assert reopened.load("a") == [b"a1", b"a2"] and len(seqs) == 2
    reopened.close()

# -- crash safety ------------------------------------------------------------------------------

WRITER = r"""
import sys
from pathlib import Path
from typing import Any
from engine.store import Appended, Store

store = Store.open(Path(sys.argv[1]))
i = 0
while True:
    batch = []
    for _ in range(3):
        i += 1
        batch.append(Appended("doc", b"update %d" % i, "card", "api", "dev", 0.0, "a.md", str(i)))
    seqs = store.append(batch)
    print(" ".join(map(str, seqs)), flush=True)
"""


@pytest.mark.timeout(60)
def test_every_acknowledged_append_survives_kill_9(path: Path) -> None:
    Store.open(path).close()  # create it, so the writer starts appending at once
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acknowledged: list[int] = []
    try:
        while len(acknowledged) < 600:
            line = proc.stdout.readline()
            assert line, f"the writer died early (exit {proc.poll()})"
            acknowledged += [int(s) for s in line.split()]
        os.kill(proc.pid, signal.SIGKILL)  # mid-burst: it is appending as fast as it can
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for line in rest.splitlines(keepends=True):
        if line.endswith("\n"):  # a complete line was printed after the commit returned
            acknowledged += [int(s) for s in line.split()]

    check = sqlite3.connect(path)
    assert check.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    check.close()
    store = Store.open(path)
    rows = {h.seq: h.summary for h in store.history(limit=10**6)}
    missing = [seq for seq in acknowledged if seq not in rows]
    assert not missing, f"{len(missing)} acknowledged appends lost, first {missing[:5]}"
    # Each append is atomic: a batch of three is all there or not at all, in order.
    data = store.load("doc")
    assert len(data) == len(rows) and len(rows) % 3 == 0
    assert data == [b"update %d" % i for i in range(1, len(data) + 1)]
    assert len(data) >= len(acknowledged)
    store.close()


# -- readers and locks ---------------------------------------------------------------------------


def test_a_readonly_store_sees_what_the_open_writer_committed(path: Path) -> None:
    writer = Store.open(path)
    writer.append([item("a", b"1")])
    reader = Store.open(path, readonly=True)
    try:
        assert reader.load("a") == [b"1"]
        writer.append([item("a", b"2")])
        writer.put_base(Base("k", "a.md", "a", b"12", "h", writer.latest_seq("a")))
        writer.set_meta("problems", "[]")
        assert reader.load("a") == [b"1", b"2"]
        assert [h.seq for h in reader.history()] == [1, 2]
        assert reader.get_base("k") is not None
        assert reader.get_meta("problems") == "[]"
    finally:
        reader.close()
        writer.close()


def test_writing_through_a_readonly_store_is_a_store_error(path: Path) -> None:
    """StoreError: "the store cannot be opened or written; the message says why"."""
    Store.open(path).close()
    reader = Store.open(path, readonly=True)
    try:
        with pytest.raises(StoreError, match=r"readonly|read-only"):
            reader.append([item("a", b"1")])
        with pytest.raises(StoreError, match=r"readonly|read-only"):
            reader.set_meta("k", "v")
    finally:
        reader.close()


def test_opening_a_missing_store_readonly_is_a_store_error(path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the store"):
        Store.open(path, readonly=True)
    assert not path.exists()


def test_a_corrupt_store_file_is_a_store_error(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"this is not a database\n" * 100)
    with pytest.raises(StoreError, match=r"cannot open the store .*not a database"):
        Store.open(path)


def hold_exclusive(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    return conn


@pytest.mark.timeout(60)
def test_a_locked_store_is_a_store_error_not_a_hang(path: Path) -> None:
    Store.open(path).close()  # an existing space: the file is in WAL mode
    holder = hold_exclusive(path)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="locked") as caught:
            store = Store.open(path)
            try:
                store.append([item("a", b"1")])
            finally:
                store.close()
        elapsed = time.monotonic() - started
        assert "store" in str(caught.value)
        assert elapsed < LOCK_TIMEOUT * 2 + 5, f"waited {elapsed:.1f} s for the lock"
    finally:
        holder.rollback()
        holder.close()
    store = Store.open(path)  # once the lock is gone, the store works
    store.append([item("a", b"1")])
    assert store.load("a") == [b"1"]
    store.close()


@pytest.mark.timeout(60)
def test_opening_a_store_that_another_connection_locks_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "fresh.sqlite"
    sqlite3.connect(path).close()  # not yet in WAL mode: switching needs the lock
    holder = hold_exclusive(path)
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"cannot open the store .*locked"):
            Store.open(path)
        assert time.monotonic() - started < LOCK_TIMEOUT * 2 + 5
    finally:
        holder.rollback()
        holder.close()


@pytest.mark.timeout(60)
def test_a_writer_waits_for_a_short_lock_instead_of_failing(path: Path) -> None:
    store = Store.open(path)
    holder = hold_exclusive(path)
    release = threading.Timer(0.3, holder.rollback)
    release.start()
    try:
        assert store.append([item("a", b"1")])  # the busy timeout outlasts the lock
    finally:
        release.join()
        holder.close()
        store.close()
