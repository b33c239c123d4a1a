"""The replica: one transaction → one durable change on the stream; replicas converge.

Runs on ``Store.memory()`` (the same SQLite code on ``:memory:``) except where durability is
the point, which uses a store file and a second connection to it.
"""

from __future__ import annotations

import gc
import sqlite3
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text, merge_updates

import engine.replica as replica_module
from engine import SPACE_DOC, Base, CardView, Change, Origin, Replica, Store, StoreError, spacedoc
from engine.replica import COMPACT_MIN_ROWS, REREAD_ALL_CARDS, Pending, sha256_hex
from engine.spacedoc import TEXT_KEY
from engine.text_edits import Splice, apply_splices, apply_splices_to_str

DOC = "card-1"


def record(replica: Replica) -> list[Change]:
    seen: list[Change] = []
    replica.changes.subscribe(seen.append)
    return seen


def splice(replica: Replica, doc_id: str, pos: int, delete: int, insert: str) -> Change | None:
    """An edit in code points, through the one place that converts them to UTF-8 offsets."""
    current = replica.text(doc_id)

    def mutate(doc: Doc[Any]) -> None:
        apply_splices(doc.get(TEXT_KEY, type=Text), current, [Splice(pos, delete, insert)])

    return replica.transact(doc_id, Origin.API, mutate, summary=f"+{len(insert)}")


def append_text(replica: Replica, doc_id: str, insert: str) -> Change | None:
    return splice(replica, doc_id, len(replica.text(doc_id)), 0, insert)


# -- transact ----------------------------------------------------------------------------------


@pytest.mark.parametrize("origin", list(Origin))
def test_transact_emits_one_change_with_its_origin_once_it_is_durable(
    tmp_path: Path, origin: Origin
) -> None:
    path = tmp_path / "store.sqlite"
    replica = Replica(Store.open(path), device="dev-1")
    durable: list[bool] = []

    def check_durable(change: Change) -> None:
        # Another connection (as after a crash and restart) already finds the change.
        other = Store.open(path, readonly=True)
        try:
            rows = [h for h in other.history() if h.seq == change.seq]
            durable.append(
                change.update in other.load(change.doc_id)
                and len(rows) == 1
                and rows[0].origin == origin.value
            )
        finally:
            other.close()

    seen = record(replica)
    replica.changes.subscribe(check_durable)
    peer = "dev-2" if origin is Origin.PEER else None
    change = replica.transact(
        DOC,
        origin,
        lambda d: d.get(TEXT_KEY, type=Text).insert(0, "héllo 😀"),
        summary="+7",
        path="a.md",
        peer=peer,
    )
    assert seen == [change]
    assert change is not None
    assert (change.doc_id, change.origin, change.summary, change.peer) == (DOC, origin, "+7", peer)
    assert durable == [True]
    assert change.seq == replica.latest_seq(DOC)
    row = replica.store.history()[-1]
    assert (row.seq, row.path, row.device) == (change.seq, "a.md", peer or "dev-1")
    replica.store.close()

    reopened = Replica(Store.open(path), device="dev-1")
    assert reopened.text(DOC) == "héllo 😀"
    reopened.store.close()


def test_one_transaction_of_many_operations_is_one_change() -> None:
    replica = Replica(Store.memory(), device="dev")
    seen = record(replica)

    def many(doc: Doc[Any]) -> None:
        text = doc.get(TEXT_KEY, type=Text)
        for i in range(20):
            text.insert(len(text), f"{i},")
        del text[0:2]

    replica.transact(DOC, Origin.API, many)
    assert len(seen) == 1
    assert len(replica.store.load(DOC)) == 1
    assert replica.text(DOC) == ",".join(str(i) for i in range(1, 20)) + ","


def test_an_empty_transaction_emits_nothing_and_writes_nothing() -> None:
    replica = Replica(Store.memory(), device="dev")
    append_text(replica, DOC, "abc")
    seen = record(replica)
    seq = replica.latest_seq(DOC)
    rows = len(replica.store.history())

    assert replica.transact(DOC, Origin.API, lambda d: None) is None
    assert replica.transact(DOC, Origin.API, lambda d: d.get(TEXT_KEY, type=Text)) is None
    assert splice(replica, DOC, 1, 0, "") is None
    assert seen == []
    assert replica.latest_seq(DOC) == seq
    assert len(replica.store.history()) == rows


def test_an_empty_transaction_still_records_its_bases_at_the_current_seq() -> None:
    replica = Replica(Store.memory(), device="dev")
    append_text(replica, DOC, "abc")
    seen = record(replica)
    pending = Pending(DOC, "a.md", b"abc")
    assert replica.transact(DOC, Origin.FILE, lambda d: None, bases=[pending]) is None
    assert seen == []
    assert replica.store.get_base(DOC) == Base(
        DOC, "a.md", DOC, b"abc", sha256_hex(b"abc"), replica.latest_seq(DOC)
    )


def test_redelivering_a_known_update_emits_nothing() -> None:
    a, b = Replica(Store.memory(), "A"), Replica(Store.memory(), "B")
    change = append_text(a, DOC, "once")
    assert change is not None
    seen = record(b)
    assert b.apply_update(DOC, change.update, Origin.PEER, peer="A") is not None
    assert b.apply_update(DOC, change.update, Origin.PEER, peer="A") is None
    assert [c.origin for c in seen] == [Origin.PEER]
    assert b.text(DOC) == "once"


def test_space_changes_refresh_the_card_views() -> None:
    replica = Replica(Store.memory(), device="dev")
    view = CardView("c1", "text", "a.md", "", node={"x": 0, "y": 0, "width": 400, "height": 400})
    replica.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.put_card(d, view))
    assert replica.card_at("a.md") == view
    replica.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.update_card(d, "c1", path="b.md"))
    assert replica.card_at("a.md") is None
    card = replica.card_at("b.md")
    assert card is not None and card.id == "c1"


# -- convergence -------------------------------------------------------------------------------

TEXT = st.text(
    st.one_of(
        st.sampled_from("ab \n"),
        st.sampled_from("é中😀\u0301\r"),
        st.characters(codec="utf-8", exclude_categories=["Cs"]),
    ),
    max_size=6,
)
EDIT = st.tuples(st.just("edit"), st.integers(0, 1), st.floats(0, 1), st.integers(0, 4), TEXT)
DELIVER = st.tuples(st.just("deliver"), st.integers(0, 1), st.integers(1, 3))


class Pair:
    """Two replicas wired through their change streams, with a delivery queue each way."""

    def __init__(self) -> None:
        self.replicas = [Replica(Store.memory(), "A"), Replica(Store.memory(), "B")]
        self.outbox: list[list[Change]] = [[], []]
        for i, replica in enumerate(self.replicas):
            replica.changes.subscribe(self._sender(i))

    def _sender(self, i: int) -> Callable[[Change], None]:
        def send(change: Change) -> None:
            if change.origin is not Origin.PEER:  # never echo a peer's update back
                self.outbox[i].append(change)

        return send

    def deliver(self, src: int, count: int) -> None:
        batch, self.outbox[src] = self.outbox[src][:count], self.outbox[src][count:]
        for change in batch:
            self.replicas[1 - src].apply_update(
                change.doc_id, change.update, Origin.PEER, peer=self.replicas[src].device
            )

    def settle(self) -> None:
        while self.outbox[0] or self.outbox[1]:
            self.deliver(0, len(self.outbox[0]))
            self.deliver(1, len(self.outbox[1]))


@settings(max_examples=150, deadline=None)
@given(script=st.lists(st.one_of(EDIT, DELIVER), max_size=40))
def test_replicas_exchanging_changes_converge(
    script: list[tuple[Any, ...]],
) -> None:
    pair = Pair()
    peer_changes: list[Change] = []
    pair.replicas[1].changes.subscribe(
        lambda c: peer_changes.append(c) if c.origin is Origin.PEER else None
    )
    for step in script:
        if step[0] == "edit":
            _, who, where, delete, insert = step
            replica = pair.replicas[who]
            current = replica.text(DOC)
            pos = int(where * len(current))
            edit = Splice(pos, min(delete, len(current) - pos), insert)
            splice(replica, DOC, *edit)
            # Locally an edit does what the same splice does to a Python string (non-ASCII too).
            assert replica.text(DOC) == apply_splices_to_str(current, [edit])
        else:
            _, src, count = step
            pair.deliver(src, count)
    pair.settle()
    a, b = pair.replicas
    assert a.text(DOC) == b.text(DOC)
    # Nothing either has is missing from the other: a full-state update is a no-op both ways.
    assert b.apply_update(DOC, a.encode_state(DOC), Origin.PEER) is None
    assert a.apply_update(DOC, b.encode_state(DOC), Origin.PEER) is None
    assert all(c.peer == "A" for c in peer_changes)
    # What each replica published is durable: a restart reloads the same text.
    assert Replica(a.store, "A").text(DOC) == a.text(DOC)
    assert Replica(b.store, "B").text(DOC) == b.text(DOC)


@settings(max_examples=50, deadline=None)
@given(base=TEXT, left=TEXT, right=TEXT)
def test_concurrent_inserts_keep_both_sides_intact(base: str, left: str, right: str) -> None:
    pair = Pair()
    a, b = pair.replicas
    append_text(a, DOC, base)
    pair.settle()
    splice(a, DOC, 0, 0, left)  # concurrently: A types at the start, B at the end
    splice(b, DOC, len(base), 0, right)
    pair.settle()
    if base:
        assert a.text(DOC) == b.text(DOC) == left + base + right
    else:  # both typed at the same spot: the client ids break the tie, the same everywhere
        assert a.text(DOC) == b.text(DOC)
        assert a.text(DOC) in (left + right, right + left)


# -- forks and reloads -------------------------------------------------------------------------


def test_fork_reproduces_the_text_at_a_base_even_after_compaction() -> None:
    replica = Replica(Store.memory(), device="dev")
    for word in ("héllo", " wörld", " 😀"):
        append_text(replica, DOC, word)
    at_base = replica.text(DOC)
    content = at_base.encode()
    base = Base(DOC, "a.md", DOC, content, sha256_hex(content), replica.latest_seq(DOC))
    replica.store.put_base(base)
    for i in range(80):
        splice(replica, DOC, 0, 1 if i % 3 == 0 else 0, f"{i}ü")
    live = replica.doc(DOC)

    fork = replica.fork(DOC, base)
    assert str(fork.get(TEXT_KEY, type=Text)) == at_base
    assert fork.client_id != live.client_id
    assert replica.text(DOC) != at_base, "forking touched the live document"

    # The replica compacted on its own, as far as the base allows: up to it, not past it.
    folded = replica.store.load_log(DOC, upto_seq=base.seq)
    assert (folded.rows, len(folded.parts)) == (0, 1), "the rows up to the base were not folded"
    assert replica.store.log_size(DOC)[0] == 80
    fork = replica.fork(DOC, base)
    assert str(fork.get(TEXT_KEY, type=Text)) == at_base


def test_fork_at_a_base_with_an_explicit_state_uses_that_state() -> None:
    replica = Replica(Store.memory(), device="dev")
    append_text(replica, DOC, "shared")
    side: Doc[Any] = Doc()
    side.apply_update(replica.encode_state(DOC))
    side.get(TEXT_KEY, type=Text).insert(0, "merged ")
    state = side.get_update()
    base = Base(DOC, "a.md", DOC, b"merged shared", "h", seq=0, state=state)
    fork = replica.fork(DOC, base)
    assert str(fork.get(TEXT_KEY, type=Text)) == "merged shared"
    assert fork.client_id not in (side.client_id, replica.doc(DOC).client_id)


def test_a_fork_merged_back_carries_a_disk_edit_next_to_a_concurrent_one() -> None:
    """DESIGN §3: diff against the base in a fork, merge the fork's update into the live doc."""
    replica = Replica(Store.memory(), device="dev")
    append_text(replica, DOC, "alpha\nbeta\n")
    base = Base(DOC, "a.md", DOC, b"alpha\nbeta\n", "h", replica.latest_seq(DOC))
    splice(replica, DOC, 0, 0, "peer: ")  # the document moves on
    fork = replica.fork(DOC, base)
    before = fork.get_state()
    with fork.transaction():
        apply_splices(fork.get(TEXT_KEY, type=Text), "alpha\nbeta\n", [Splice(6, 4, "BETA")])
    replica.apply_update(DOC, fork.get_update(before), Origin.FILE)
    assert replica.text(DOC) == "peer: alpha\nBETA\n"


def test_a_fresh_replica_over_the_same_store_reloads_identical_docs_with_new_client_ids() -> None:
    store = Store.memory()
    first = Replica(store, device="dev")
    append_text(first, DOC, "héllo")
    node = {"x": 20, "y": 40, "width": 400, "height": 400}
    view = CardView(DOC, "text", "a.md", "", z=1.0, node=node)
    first.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.put_card(d, view))
    append_text(first, DOC, " wörld")

    second = Replica(store, device="dev")  # the same device after a restart
    assert second.text(DOC) == first.text(DOC) == "héllo wörld"
    assert second.cards() == first.cards() == {DOC: view}
    assert second.latest_seq(DOC) == first.latest_seq(DOC)
    assert second.doc(DOC).client_id != first.doc(DOC).client_id
    assert second.space.client_id != first.space.client_id

    # Because the client ids differ, both histories merge cleanly afterwards.
    c2 = append_text(second, DOC, " 2")
    c1 = append_text(first, DOC, " 1")
    assert c1 is not None and c2 is not None
    first.apply_update(DOC, c2.update, Origin.PEER)
    second.apply_update(DOC, c1.update, Origin.PEER)
    assert first.text(DOC) == second.text(DOC)
    assert " 1" in first.text(DOC) and " 2" in first.text(DOC)


def test_documents_load_lazily_and_are_seeded_once() -> None:
    store = Store.memory()
    first = Replica(store, device="dev")
    append_text(first, DOC, "only once")
    second = Replica(store, device="dev")
    assert second.has_doc(DOC) and not second.has_doc("other")
    assert second.doc(DOC) is second.doc(DOC)
    append_text(second, DOC, "!")
    third = Replica(store, device="dev")
    assert third.text(DOC) == "only once!"


# -- the cost of a transaction, compaction, heads ----------------------------------------------


def test_a_transaction_is_one_store_transaction_of_two_rows() -> None:
    """The update and its history row, nothing else: no head, no compaction query (P6)."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    replica = Replica(Store(conn), device="dev")
    append_text(replica, DOC, "warm up")  # loads the document
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    for i in range(COMPACT_MIN_ROWS // 2):
        append_text(replica, DOC, f" {i}")
    conn.set_trace_callback(None)
    per_transaction = [s.split(" (")[0] for s in statements[:4]]
    assert per_transaction == [
        "BEGIN IMMEDIATE",
        "INSERT INTO updates",
        "INSERT INTO history",
        "COMMIT",
    ]
    assert len(statements) == 4 * (COMPACT_MIN_ROWS // 2)


def _edit_many(replica: Replica, doc_id: str, n: int) -> None:
    for i in range(n):
        text = replica.text(doc_id)
        splice(replica, doc_id, (i * 7) % (len(text) + 1), 1 if i % 4 == 3 else 0, f"{i}é😀")


def test_compaction_snapshots_the_live_document_instead_of_merging_the_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def no_merge(*updates: bytes) -> bytes:
        raise AssertionError("compaction merged the log")

    monkeypatch.setattr("engine.store.merge_updates", no_merge)
    store = Store.memory()
    replica = Replica(store, device="dev")
    _edit_many(replica, DOC, 1000)
    parts = store.load(DOC)
    assert len(parts) < 1000 // 2, "the log was never folded"
    # The log never grows far past the snapshot it would replace.
    rows, row_bytes, snapshot_bytes = store.log_size(DOC)
    assert rows < 1000 // 2 and row_bytes <= max(snapshot_bytes, 64 * 40) + 64
    monkeypatch.undo()
    reloaded = Replica(store, device="dev")
    assert reloaded.text(DOC) == replica.text(DOC)
    assert reloaded.latest_seq(DOC) == replica.latest_seq(DOC)
    assert len(store.history(limit=10_000)) == 1000


def test_compaction_keeps_the_log_a_base_still_needs() -> None:
    store = Store.memory()
    replica = Replica(store, device="dev")
    _edit_many(replica, DOC, 50)
    at_base = replica.text(DOC)
    base = Base(DOC, "a.md", DOC, at_base.encode(), "h", replica.latest_seq(DOC))
    store.put_base(base)
    _edit_many(replica, DOC, 600)
    # Rows after the base stay, so the base's state can still be rebuilt.
    assert str(replica.fork(DOC, base).get(TEXT_KEY, type=Text)) == at_base
    assert store.log_size(DOC)[0] >= 600
    # Once the base moves on, the rows before it fold (in a scratch document: the live one
    # is already past the base), and the rest stays.
    moved = replica.latest_seq(DOC)
    store.put_base(Base(DOC, "a.md", DOC, b"", "h", moved))
    _edit_many(replica, DOC, 1200)
    assert store.load_log(DOC, upto_seq=moved).rows == 0
    assert store.log_size(DOC)[0] == replica.latest_seq(DOC) - moved
    assert Replica(store, device="dev").text(DOC) == replica.text(DOC)


def test_a_document_whose_base_follows_each_save_compacts_from_the_live_document(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Saves taken in record their base with their update, so the base is never older than
    the log: the whole log folds, without building any document from the store."""
    store = Store.memory()
    replica = Replica(store, device="dev")
    append_text(replica, DOC, "start")
    replica.store.put_base(Base(DOC, "a.md", DOC, b"start", "h", replica.latest_seq(DOC)))
    monkeypatch.setattr("engine.replica.Doc", None)  # no scratch document may be made
    for i in range(600):
        before = replica.text(DOC)
        saved = f"{before} {i}"  # the file as saved: the text plus one word at the end
        splices = [Splice(len(before), 0, f" {i}")]

        def take_in(doc: Doc[Any], before: str = before, splices: list[Splice] = splices) -> None:
            apply_splices(doc.get(TEXT_KEY, type=Text), before, splices)

        replica.transact(DOC, Origin.FILE, take_in, bases=[Pending(DOC, "a.md", saved.encode())])
    monkeypatch.undo()
    rows, _, snapshot_bytes = store.log_size(DOC)
    assert snapshot_bytes > 0 and rows < 600 // 2
    base = store.get_base(DOC)
    assert base is not None
    assert str(replica.fork(DOC, base).get(TEXT_KEY, type=Text)) == replica.text(DOC)


def test_compaction_never_folds_rows_the_live_document_has_not_seen() -> None:
    """Two replicas writing one document of one store (as tests and tools may): the live
    snapshot of one lacks the other's rows, so it must not replace them."""
    store = Store.memory()
    first, second = Replica(store, device="one"), Replica(store, device="two")
    append_text(first, DOC, "start ")
    assert second.text(DOC) == "start "
    append_text(second, DOC, "SECOND-WAS-HERE")  # ``first`` never sees this row
    _edit_many(first, DOC, 400)
    assert "SECOND" not in first.text(DOC)
    assert store.log_size(DOC)[0] > 400, "compacted over a row the live document lacks"
    assert "SECOND-WAS-HERE" in Replica(store, device="three").text(DOC)


def _card(replica: Replica, card_id: str, path: str) -> None:
    view = CardView(card_id, "text", path, "", node={"x": 0, "y": 0})
    replica.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.put_card(d, view))


def test_the_sync_digest_is_right_when_a_crash_left_heads_behind() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    replica = Replica(Store(conn), device="dev")
    for i in range(3):
        _card(replica, f"card-{i}", f"{i}.md")
        append_text(replica, f"card-{i}", f"text {i}")
    assert replica.store.stale_heads() != [], "heads are written with every transaction"
    crashed = sqlite3.connect(":memory:", isolation_level=None)
    conn.backup(crashed)  # the store as a kill -9 now would leave it
    expected = replica.sync_digest()
    assert replica.store.stale_heads() == []  # the digest flushed the heads

    restarted = Replica(Store(crashed), device="dev")
    assert restarted.store.stale_heads() != []
    assert restarted.sync_digest() == expected
    assert restarted.store.stale_heads() == []
    assert Replica(restarted.store, device="dev").sync_digest() == expected


def test_closing_a_replica_writes_its_heads() -> None:
    replica = Replica(Store.memory(), device="dev")
    _card(replica, DOC, "a.md")
    append_text(replica, DOC, "text")
    assert replica.store.stale_heads() == [DOC, SPACE_DOC]
    replica.close()
    assert replica.store.stale_heads() == []
    assert set(replica.store.heads()) == {DOC, SPACE_DOC}


def test_closing_a_replica_folds_the_space_log_so_the_next_start_loads_one_snapshot(
    tmp_path: Path,
) -> None:
    store = Store.open(tmp_path / "store.sqlite")
    replica = Replica(store, device="dev")
    i = 0
    # Until the log holds enough rows to fold but fewer bytes than the snapshot (which the
    # replica waits for while it runs).
    while store.load_log(SPACE_DOC).rows < COMPACT_MIN_ROWS or i < 2 * COMPACT_MIN_ROWS:
        _card(replica, f"card{i:04}", f"card{i:04}.md")
        i += 1
        assert i < 2000
    cards = replica.cards()
    replica.close()
    assert store.load_log(SPACE_DOC).rows == 0  # one snapshot, nothing to merge
    again = Replica(store, device="dev")
    assert again.cards() == cards
    again.close()
    store.close()


def test_a_short_space_log_is_left_as_it_is_at_close() -> None:
    replica = Replica(Store.memory(), device="dev")
    _card(replica, DOC, "a.md")
    replica.close()
    assert replica.store.load_log(SPACE_DOC).rows == 1


def test_a_read_only_replica_digests_without_writing(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite"
    writer = Replica(Store.open(path), device="dev")
    _card(writer, DOC, "a.md")
    append_text(writer, DOC, "text")
    stale = writer.store.stale_heads()
    assert stale == [DOC, SPACE_DOC]
    reader = Replica(Store.open(path, readonly=True), device="status")
    digest = reader.sync_digest()  # reads the two documents, writes nothing
    assert reader.store.stale_heads() == stale
    assert digest == writer.sync_digest()
    reader.store.close()
    writer.store.close()


# -- memory: pycrdt observers keep an observed Doc alive until it is unobserved ---------------


def _loaded(replica: Replica) -> list[weakref.ref[Doc[Any]]]:
    append_text(replica, DOC, "text")
    replica.cards()
    return [weakref.ref(replica.doc(DOC)), weakref.ref(replica.space)]


def test_closing_a_replica_frees_its_documents_and_leaves_the_store_open() -> None:
    replica = Replica(Store.memory(), device="dev")
    docs = _loaded(replica)
    replica.close()
    replica.close()  # twice is harmless
    gc.collect()
    assert docs[0]() is None  # only ``replica.space`` still refers to the space document
    assert Replica(replica.store, device="dev").text(DOC) == "text"
    with pytest.raises(RuntimeError):
        replica.doc(DOC)
    del replica
    gc.collect()
    assert docs[1]() is None


def test_a_replica_dropped_without_close_frees_its_documents() -> None:
    replica = Replica(Store.memory(), device="dev")
    docs = _loaded(replica)
    del replica
    gc.collect()
    assert [d() for d in docs] == [None, None]


def test_a_space_document_forgotten_after_a_failed_transaction_is_freed() -> None:
    replica = Replica(Store.memory(), device="dev")
    seen = record(replica)
    old = weakref.ref(replica.space)
    with pytest.raises(ValueError):
        replica.apply_update(SPACE_DOC, b"\x01\x02not an update", Origin.PEER)
    gc.collect()
    assert old() is None
    # The reloaded space document still reports the cards each transaction touches.
    view = CardView(DOC, "text", "a.md", "", z=1.0, node={"x": 0, "y": 0})
    replica.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.put_card(d, view))
    assert [c.cards for c in seen] == [frozenset({DOC})]
    assert replica.card_at("a.md") == view


# -- failures must not split the live document from the store ----------------------------------


class FailingStore(Store):
    """A store whose next append fails, as on a full disk."""

    fail_next = False

    def append_one(self, *args: Any) -> int:  # the path Replica's transactions take
        if self.fail_next:
            self.fail_next = False
            raise StoreError("the store could not commit: database or disk is full")
        return super().append_one(*args)


def test_a_failed_append_does_not_lose_the_edit_from_the_store() -> None:
    """An edit that could not be stored must not live on only in memory.

    Today the live document keeps the edit, ``transact`` drops its captured update, and later
    edits (which depend on it) are stored without it: a restart — or a peer — cannot apply them.
    """
    store = FailingStore(sqlite3.connect(":memory:", isolation_level=None))
    replica = Replica(store, device="dev")
    seen = record(replica)
    append_text(replica, DOC, "one ")
    store.fail_next = True
    with pytest.raises(StoreError):
        append_text(replica, DOC, "two ")
    assert [c.summary for c in seen] == ["+4"], "a change was published that is not durable"
    append_text(replica, DOC, "three")
    restarted = Replica(store, device="dev")
    assert restarted.text(DOC) == replica.text(DOC)


def test_a_mutation_that_raises_half_way_does_not_split_live_and_stored_state() -> None:
    """Yjs cannot roll back: what ran before the exception is in the live document."""
    replica = Replica(Store.memory(), device="dev")
    append_text(replica, DOC, "start ")

    def half(doc: Doc[Any]) -> None:
        doc.get(TEXT_KEY, type=Text).insert(0, "half ")
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        replica.transact(DOC, Origin.API, half)
    append_text(replica, DOC, "end")
    restarted = Replica(replica.store, device="dev")
    assert restarted.text(DOC) == replica.text(DOC)


def test_text_read_after_a_failed_mutation_is_the_stored_text() -> None:
    """The text a replica hands out comes from the live document: after a mutation that
    raised half-way, the document is reloaded from the store, and so is its text (not the
    text of the document that was dropped, which holds the half mutation)."""
    replica = Replica(Store.memory(), device="dev")
    append_text(replica, DOC, "start ")
    assert replica.text(DOC) == "start "
    before = replica.ytext(DOC)

    def half(doc: Doc[Any]) -> None:
        doc.get(TEXT_KEY, type=Text).insert(0, "half ")
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        replica.transact(DOC, Origin.API, half)
    assert str(before) == "half start ", "the dropped document holds the half mutation"
    # The next transaction reloads the document from the store, before any text is read.
    replica.transact(DOC, Origin.API, lambda doc: doc.get(TEXT_KEY, type=Text).insert(0, "new "))
    assert replica.text(DOC) == str(replica.ytext(DOC)) == "new start "


# -- batches: many card documents, one store transaction --------------------------------------


def test_a_space_transaction_touching_many_cards_leaves_the_same_views_as_a_fresh_read() -> None:
    replica = Replica(Store.memory(), device="dev")
    n = REREAD_ALL_CARDS * 2
    views = [CardView(f"c{i}", "text", f"b/{i}.md", "b", node={"x": i}) for i in range(n)]

    def put_all(doc: Doc[Any]) -> None:
        for view in views:
            spacedoc.put_card(doc, view)

    replica.transact(SPACE_DOC, Origin.API, put_all)
    assert replica.cards() == {v.id: v for v in views}

    def churn(doc: Doc[Any]) -> None:  # many moves, a delete, a new card sharing a path
        for i in range(n):
            spacedoc.update_card(doc, f"c{i}", path=f"b/{i + 1}.md")
        spacedoc.delete_card(doc, "c0", seen="-")
        spacedoc.put_card(doc, CardView("new", "text", "b/5.md", "b"))

    replica.transact(SPACE_DOC, Origin.API, churn)
    fresh = Replica(replica.store, device="dev")
    assert replica.cards() == fresh.cards()
    assert "c0" not in replica.cards()
    assert [c.id for c in replica.cards_at("b/5.md")] == ["c4", "new"]
    assert replica.card_at("b/1.md") is None


def _peer_updates(n: int) -> list[tuple[str, bytes]]:
    """``n`` card documents as a peer would send them (its whole state of each)."""
    source = Replica(Store.memory(), device="A")
    for i in range(n):
        append_text(source, f"card-{i}", f"text of card {i}\n")
    return [(f"card-{i}", source.encode_state(f"card-{i}")) for i in range(n)]


def test_a_batch_stores_its_card_documents_in_one_store_transaction_then_publishes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "store.sqlite"
    replica = Replica(Store.open(path), device="B")
    published: list[tuple[str, bool]] = []

    def check_durable(change: Change) -> None:
        other = Store.open(path, readonly=True)
        try:
            published.append((change.doc_id, change.update in other.load(change.doc_id)))
        finally:
            other.close()

    replica.changes.subscribe(check_durable)
    updates = _peer_updates(5)
    statements: list[str] = []
    replica.store._conn.set_trace_callback(statements.append)
    with replica.batch():
        for doc_id, data in updates:
            assert replica.apply_update(doc_id, data, Origin.PEER, peer="A") is None
            assert replica.text(doc_id).startswith("text of card")  # applied at once
        assert published == []  # ... but neither stored nor published yet
        assert not any(s.startswith("INSERT") for s in statements)
    replica.store._conn.set_trace_callback(None)
    assert statements.count("BEGIN IMMEDIATE") == 1
    assert statements.count("COMMIT") == 1
    assert published == [(doc_id, True) for doc_id, _ in updates]
    history = replica.store.history()
    assert [(h.doc_id, h.origin, h.device) for h in history] == [
        (doc_id, "peer", "A") for doc_id, _ in updates
    ]
    assert [replica.latest_seq(d) for d, _ in updates] == [h.seq for h in history]
    replica.store.close()
    reopened = Replica(Store.open(path), device="B")
    assert [reopened.text(d) for d, _ in updates] == [f"text of card {i}\n" for i in range(5)]
    reopened.store.close()


def test_a_space_transaction_in_a_batch_stores_the_earlier_ones_first() -> None:
    replica = Replica(Store.memory(), device="B")
    seen = record(replica)
    ((doc_id, data),) = _peer_updates(1)
    view = CardView(doc_id, "text", "a.md", "", node={"x": 0, "y": 0})
    with replica.batch():
        replica.apply_update(doc_id, data, Origin.PEER, peer="A")
        replica.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.put_card(d, view))
        assert [c.doc_id for c in seen] == [doc_id, SPACE_DOC]
        append_text(replica, doc_id, "more\n")
        assert len(seen) == 2
    assert [c.doc_id for c in seen] == [doc_id, SPACE_DOC, doc_id]
    assert [c.seq for c in seen] == sorted(c.seq for c in seen)
    assert seen[2].path == "a.md"
    assert Replica(replica.store, device="B").text(doc_id) == replica.text(doc_id)


def test_a_bad_update_in_a_batch_loses_only_its_own_document() -> None:
    replica = Replica(Store.memory(), device="B")
    seen = record(replica)
    good = _peer_updates(2)
    with pytest.raises(ValueError), replica.batch():
        replica.apply_update(good[0][0], good[0][1], Origin.PEER, peer="A")
        replica.apply_update("card-x", b"\x05", Origin.PEER, peer="A")
    replica.apply_update("card-x", good[1][1], Origin.PEER, peer="A")
    assert [c.doc_id for c in seen] == [good[0][0], "card-x"]
    restarted = Replica(replica.store, device="B")
    assert restarted.text(good[0][0]) == replica.text(good[0][0]) == "text of card 0\n"
    assert restarted.text("card-x") == replica.text("card-x") == "text of card 1\n"


class FailingBatchStore(Store):
    """A store whose next batch append fails, as on a full disk."""

    fail_next = False

    def append(self, *args: Any, **kwargs: Any) -> list[int]:
        if self.fail_next:
            self.fail_next = False
            raise StoreError("the store could not commit: database or disk is full")
        return super().append(*args, **kwargs)


def test_a_batch_that_cannot_be_stored_publishes_nothing_and_keeps_memory_and_store_equal() -> None:
    store = FailingBatchStore(sqlite3.connect(":memory:", isolation_level=None))
    replica = Replica(store, device="B")
    seen = record(replica)
    updates = _peer_updates(3)
    store.fail_next = True
    with pytest.raises(StoreError), replica.batch():
        for doc_id, data in updates:
            replica.apply_update(doc_id, data, Origin.PEER, peer="A")
    assert seen == []
    assert [replica.text(d) for d, _ in updates] == ["", "", ""]  # reloaded from the store
    with replica.batch():  # the peer sends them again: nothing was lost
        for doc_id, data in updates:
            replica.apply_update(doc_id, data, Origin.PEER, peer="A")
    assert [c.doc_id for c in seen] == [d for d, _ in updates]
    assert Replica(store, device="B").text(updates[2][0]) == "text of card 2\n"


# -- documents of which nothing is here yet (a join) ----------------------------------------------


def test_answers_about_a_document_never_here_come_from_memory() -> None:
    """A joining device is asked about every card before it holds any (P2): answering
    neither makes the document nor looks for it in the store."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    store = Store(conn)
    replica = Replica(store, device="B")
    append_text(replica, DOC, "here")
    theirs: Doc[Any] = Doc()
    theirs.get(TEXT_KEY, type=Text).insert(0, "theirs")
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    for i in range(20):
        doc_id = f"card-new-{i}"
        assert replica.encode_state(doc_id, theirs.get_state()) == b"\x00\x00"
        assert replica.state_vector(doc_id) == b"\x00"
        assert replica.latest_seq(doc_id) == 0
    conn.set_trace_callback(None)
    assert statements == []
    # A document that is here, loaded or only stored, is answered as before.
    for asked in (replica, Replica(store, device="C")):
        copy: Doc[Any] = Doc()
        copy.apply_update(asked.encode_state(DOC, b"\x00"))
        assert str(copy.get(TEXT_KEY, type=Text)) == "here"
        assert asked.latest_seq(DOC) > 0 and asked.state_vector(DOC) != b"\x00"


def _hello_world_and_more() -> tuple[bytes, bytes, bytes, str]:
    """Three updates of one text and the text of all three: "hello" by one client, " world"
    appended by another (so it needs "hello"), and a third client's own insert."""
    first: Doc[Any] = Doc()
    first.get(TEXT_KEY, type=Text).insert(0, "hello")
    hello = first.get_update()
    second: Doc[Any] = Doc()
    second.apply_update(hello)
    second.get(TEXT_KEY, type=Text).insert(5, " world")
    world = second.get_update(first.get_state())
    third: Doc[Any] = Doc()
    third.get(TEXT_KEY, type=Text).insert(0, "more ")
    more = third.get_update()
    every: Doc[Any] = Doc()
    for update in (hello, world, more):
        every.apply_update(update)
    return hello, world, more, str(every.get(TEXT_KEY, type=Text))


def test_a_first_update_is_stored_whole_even_what_cannot_be_integrated_yet(
    tmp_path: Path,
) -> None:
    """A peer's first update of a document is stored as it came: the part that waits for a
    change not here yet survives a restart (a capture of the transaction would have left it
    out, and the document would lack it until a peer sent it again)."""
    hello, world, more, everything = _hello_world_and_more()
    path = tmp_path / "store.sqlite"
    replica = Replica(Store.open(path), device="B")
    seen = record(replica)
    replica.apply_update(DOC, merge_updates(more, world), Origin.PEER, peer="P")
    assert replica.text(DOC) == "more "  # " world" waits for "hello"
    assert [c.doc_id for c in seen] == [DOC]
    replica.close()
    replica.store.close()
    restarted = Replica(Store.open(path), device="B")
    restarted.apply_update(DOC, hello, Origin.PEER, peer="P")
    assert restarted.text(DOC) == everything
    again = Replica(restarted.store, device="C")
    assert again.text(DOC) == everything


def test_a_first_update_of_which_nothing_can_be_integrated_is_not_stored() -> None:
    """As before: nothing stored and nothing published (a peer relaying it again must not
    make it travel on), but it waits in memory for what it needs."""
    hello, world, _, _ = _hello_world_and_more()
    replica = Replica(Store.memory(), device="B")
    seen = record(replica)
    assert replica.apply_update(DOC, world, Origin.PEER, peer="P") is None
    assert seen == [] and replica.store.load(DOC) == []
    replica.apply_update(DOC, hello, Origin.PEER, peer="P")
    assert replica.text(DOC) == "hello world"
    assert Replica(replica.store, device="C").text(DOC) == "hello world"


# -- documents awaited from peers -----------------------------------------------------------------


def test_a_document_is_awaited_until_every_asker_settles_or_something_of_it_is_stored() -> None:
    replica = Replica(Store.memory(), device="B")
    settled: list[str] = []
    replica.settled.subscribe(settled.append)
    first, second = object(), object()
    replica.await_doc(DOC, first)
    replica.await_doc(DOC, second)
    assert replica.awaited(DOC)
    replica.settle_doc(DOC, first)
    replica.settle_doc(DOC, first)  # twice: harmless
    assert replica.awaited(DOC) and settled == []
    replica.settle_doc(DOC, second)
    assert not replica.awaited(DOC) and settled == [DOC]

    replica.await_doc("other", first)
    append_text(replica, "other", "arrived")
    assert not replica.awaited("other")  # content is here: nothing left to wait for


class _Panic(BaseException):
    """Stands in for pyo3's ``PanicException`` (a ``BaseException``, not an ``Exception``)."""


class _UndescribableEvent:
    path: tuple[str, ...] = ()

    @property
    def keys(self) -> dict[str, Any]:
        raise _Panic("called `Option::unwrap()` on a `None` value")


def test_an_event_yrs_cannot_describe_counts_as_touching_every_card() -> None:
    touched: set[str] = set()
    replica_module._note_touched(touched, [_UndescribableEvent()])
    assert touched == {replica_module.EVERY_CARD}


def test_a_space_transaction_whose_cards_are_unknown_rereads_and_reports_every_card(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    replica = Replica(Store.memory(), device="dev")
    for i in range(3):
        _card(replica, f"card-{i}", f"{i}.md")
    assert replica.card_at("1.md") is not None
    # From now on the observer learns nothing but "something changed".
    monkeypatch.setattr(
        replica_module, "_note_touched", lambda touched, events: touched.add("\x00every card")
    )
    fresh = Replica(replica.store, device="dev")
    changes = record(fresh)
    fresh.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.update_card(d, "card-1", path="x.md"))
    fresh.transact(SPACE_DOC, Origin.API, lambda d: spacedoc.delete_card(d, "card-2"))
    assert [set(c.cards) for c in changes] == [{"card-0", "card-1", "card-2"}] * 2
    assert fresh.card_at("x.md") is not None and fresh.card_at("1.md") is None
    assert sorted(fresh.cards()) == ["card-0", "card-1"]
