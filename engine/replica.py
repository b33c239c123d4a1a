"""One device's replica of one space: its documents, their durable log, and the change stream.

The replica owns the space document (:mod:`engine.spacedoc`) and one ``Y.Text`` document per
text or note card, loaded lazily from the :class:`~engine.store.Store`.  Every mutation goes
through :meth:`Replica.transact` or :meth:`Replica.apply_update`, which

1. run the mutation as one pycrdt transaction,
2. append the resulting Yjs update to the store (durably, before anyone is told), and
3. publish a :class:`~engine.changes.Change` with its origin on :attr:`Replica.changes`.

Cost per transaction (the P6 benchmark): one store transaction of two rows (the update and
its history row) and the Change.  Inside :meth:`Replica.batch` (a sync session applying
what one read from a peer held: hundreds of card documents during a join) the transactions
on card documents share one store transaction, and their changes are published when it has
committed.  Everything else is kept in memory and written in batches or
rarely: the heads (state vectors) are flushed every :data:`HEADS_EVERY` commits, by
:meth:`Replica.sync_digest` and by :meth:`Replica.close` — the store names heads a crash left
behind their logs, and the digest reads those documents instead; and a document's log is
folded into a snapshot, taken from the live document in one pass, once the log outweighs the
snapshot (a size kept in memory, so deciding costs no SQL).

Invariants: all pycrdt objects of a replica are touched from one thread (the owner's event
loop); every published change is already durable (kill -9 safe; power-loss safe after
:meth:`Store.barrier`); a document is never seeded twice — a card's
history is created once and reused (DESIGN §6, jupyter-collaboration's duplicated text).
Documents get a fresh random Yjs client id each time they are loaded, and forks get their own,
so a client id is never reused with a different history.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from pycrdt import Doc, Text, merge_updates
from reactivex.subject import Subject

from engine import spacedoc
from engine.changes import Change, Origin
from engine.spacedoc import TEXT_KEY, CardView
from engine.store import Appended, Base, DocLog, Store, StoreError

SPACE_DOC = "space"
COMPACT_MIN_ROWS = 64  # a log is folded into its snapshot once it has this many rows and
# outweighs the snapshot in bytes
HEADS_EVERY = 1024  # commits between flushes of the heads (bounds the work after a crash)
EMPTY_UPDATE = b"\x00\x00"
EMPTY_STATE = b"\x00"  # the state vector of a document that holds nothing
NO_LOG = DocLog([], 0, 0, 0, 0)
NO_CARDS: frozenset[str] = frozenset()
REREAD_ALL_CARDS = 256  # a space transaction touching more cards re-reads all card views
EVERY_CARD = "\x00every card"  # in the touched set: an event could not say which cards it touched
_ORIGIN_VALUES = {o: o.value for o in Origin}  # an Enum's .value is a slow descriptor

log = logging.getLogger("tack.replica")


def canonical_state_vector(sv: bytes) -> bytes:
    """A state vector's (client, clock) pairs in sorted order: Yjs writes them in hash-map
    order, so equal states can encode differently.  Malformed input gives its raw bytes."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = sv[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80 or shift > 70:
                return value, pos

    try:
        count, pos = varint(0) if sv else (0, 0)
        pairs = []
        for _ in range(count):
            client, pos = varint(pos)
            clock, pos = varint(pos)
            pairs.append((client, clock))
    except IndexError:
        return sv
    return b"".join(f"{c}:{k};".encode() for c, k in sorted(pairs))


def new_id() -> str:
    """A fresh card/edge id: 16 hex digits, like the ids Obsidian writes into canvases."""
    return secrets.token_hex(8)


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(slots=True)
class _LogSize:
    """How much log a loaded document has beyond its snapshot, kept up to date per commit."""

    rows: int
    row_bytes: int
    snapshot_bytes: int
    next_look: int = COMPACT_MIN_ROWS  # compaction is considered from this many rows on


@dataclass(frozen=True, slots=True)
class Pending:
    """A base to record together with a transaction, as a function of the seq it gets."""

    key: str
    path: str
    content: bytes
    state: bytes | None = None
    sha256: str | None = None  # for binary bases, whose content is not kept here


@dataclass(frozen=True, slots=True)
class _Deferred:
    """A card document's transaction applied inside :meth:`Replica.batch`, not stored yet."""

    doc_id: str
    origin: Origin
    origin_value: str
    update: bytes
    summary: str
    path: str
    card: str
    peer: str | None


def _note_touched(touched: set[str], events: list[Any]) -> None:
    """Observer of the space's cards map: collect the ids of the cards a transaction touched.

    It gets pycrdt's raw events and reads only what it needs: a nested event's path, and a
    top-level event's keys.  pycrdt's own wrapper computes every field of every event, and
    yrs 0.28 panics computing the keys of some nested map events (``event_keys``:
    ``Option::unwrap()`` on ``None``; found by the long model run, a peer's update that
    could then never be applied).  Should an event still fail to describe itself, the
    transaction counts as touching every card (:data:`EVERY_CARD`).
    """
    for event in events:
        try:
            path = list(event.path or [])
            if path:
                touched.add(str(path[0]))
            else:
                touched.update(str(k) for k in (event.keys or {}))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # pyo3's PanicException is not an Exception
            touched.add(EVERY_CARD)


def _drop(subscription: Any) -> None:
    """Unsubscribe a subscription made on a raw (``integrated``) pycrdt type."""
    subscription.drop()


def _unobserve(unobserve: Callable[[Any], None], subscription: Any) -> None:
    with contextlib.suppress(ValueError):  # someone unobserved it already
        unobserve(subscription)


def _unobserve_all(unobserve: dict[str, list[Callable[[], None]]]) -> None:
    for calls in unobserve.values():
        for call in calls:
            call()
    unobserve.clear()


class Replica:
    """The documents of one space on this device, persisted in a store."""

    def __init__(self, store: Store, device: str, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.device = device
        self._clock = clock
        self.changes: Subject[Change] = Subject()
        self._docs: dict[str, Doc[Any]] = {}
        # Each loaded document's text root, once asked for: pycrdt's ``Doc.get`` makes and
        # integrates a new root object on every call (about 4 µs; a join asks 10,000 times).
        self._texts: dict[str, Text] = {}
        self._captured: dict[str, list[bytes]] = {}
        self._latest: dict[str, int] = {}
        self._cards: dict[str, CardView] | None = None
        self._by_path: dict[str, set[str]] = {}
        self._touched: set[str] = set()  # card ids changed by the space transaction in flight
        self._cards_sub: Any = None  # the space's cards-map subscription (fuzz/ reads it)
        # How to unobserve each loaded document.  pycrdt's observers hold their Doc from the
        # Rust side, a cycle the garbage collector cannot see: a Doc lives until unobserved.
        self._unobserve: dict[str, list[Callable[[], None]]] = {}
        # A replica dropped without close() still releases its documents.
        self._finalizer = weakref.finalize(self, _unobserve_all, self._unobserve)
        self._closed = False
        self._commits = 0
        self._log: dict[str, _LogSize] = {}
        self._dirty_heads: set[str] = set()  # documents whose stored head lags their log
        self._deferred: list[_Deferred] | None = None  # inside batch(): applied, not stored
        self._awaited: dict[str, set[object]] = {}  # doc id -> who asked a peer for it
        # Documents no one awaits any more (see await_doc); a render that waited renders now.
        self.settled: Subject[str] = Subject()
        self.space = self.doc(SPACE_DOC)

    # -- documents ----------------------------------------------------------------------------

    def doc(self, doc_id: str) -> Doc[Any]:
        """The live document ``doc_id``, loaded from the store on first use."""
        doc = self._docs.get(doc_id)
        if doc is None:
            if self._closed:
                raise RuntimeError("this replica is closed")
            doc = Doc()
            stored = self.store.load_log(doc_id) if self.store.has_log(doc_id) else NO_LOG
            parts = stored.parts
            if parts:
                doc.apply_update(parts[0] if len(parts) == 1 else merge_updates(*parts))
            self._register(doc_id, doc, stored)
        return doc

    def _register(self, doc_id: str, doc: Doc[Any], stored: DocLog) -> None:
        """Make ``doc`` the live document ``doc_id``, holding ``stored``: its log sizes, and
        the observer that captures what each later transaction changes."""
        self._latest[doc_id] = stored.latest_seq
        self._log[doc_id] = _LogSize(stored.rows, stored.row_bytes, stored.snapshot_bytes)
        # The observers must not reference the replica (or it could never be collected):
        # they close over the lists and sets they fill, not over ``self``.
        sink: list[bytes] = []
        self._captured[doc_id] = sink
        sub = doc.observe(lambda event: sink.append(event.update))
        unobserve: list[Callable[[], None]] = [partial(_unobserve, doc.unobserve, sub)]
        if doc_id == SPACE_DOC:
            cards = spacedoc.cards_map(doc)
            self._cards_sub = cards.integrated.observe_deep(partial(_note_touched, self._touched))
            unobserve.append(partial(_unobserve, _drop, self._cards_sub))
        self._unobserve[doc_id] = unobserve
        self._docs[doc_id] = doc

    def close(self) -> None:
        """Release every loaded document (their pycrdt observers keep them alive otherwise).

        The space document's log is folded into its snapshot and the heads of the documents
        it changed are written first (the store stays open: it belongs to whoever opened
        it).  A closed replica must not be used again; closing twice is harmless.
        """
        if not self._closed:
            size = self._log.get(SPACE_DOC)
            if size is not None and size.rows >= COMPACT_MIN_ROWS and not self.store.readonly:
                # The next start loads one snapshot of the space instead of merging up to a
                # snapshot's worth of log rows (0.15 s for 10,000 cards).
                self._compact(SPACE_DOC, size)
            self._flush_heads_quietly()
        self._closed = True
        self._finalizer()
        self._docs.clear()
        self._texts.clear()
        self._captured.clear()
        self._latest.clear()
        self._log.clear()
        self._dirty_heads.clear()
        self._cards = None
        self._cards_sub = None

    def has_doc(self, doc_id: str) -> bool:
        return doc_id in self._docs or self.store.latest_seq(doc_id) > 0

    def text(self, doc_id: str) -> str:
        return str(self.ytext(doc_id))

    def ytext(self, doc_id: str) -> Text:
        text = self._texts.get(doc_id)
        if text is None:
            text = self._texts[doc_id] = self.doc(doc_id).get(TEXT_KEY, type=Text)
        return text

    def _unknown(self, doc_id: str) -> bool:
        """Whether nothing of ``doc_id`` is here, loaded or stored.  A joining device is asked
        about every card before it holds any (the founder's SyncStep1s), and asks back: the
        answers for such a document need not make it, or look for it in the store."""
        return doc_id not in self._docs and not self.store.has_log(doc_id)

    def latest_seq(self, doc_id: str) -> int:
        if self._unknown(doc_id):
            return 0
        self.doc(doc_id)
        return self._latest[doc_id]

    def state_vector(self, doc_id: str) -> bytes:
        if self._unknown(doc_id):
            return EMPTY_STATE
        return self.doc(doc_id).get_state()

    def encode_state(self, doc_id: str, since: bytes | None = None) -> bytes:
        if self._unknown(doc_id):
            return EMPTY_UPDATE
        doc = self.doc(doc_id)
        return doc.get_update(since) if since is not None else doc.get_update()

    def fork(self, doc_id: str, base: Base) -> Doc[Any]:
        """A detached copy of ``doc_id`` as it was at ``base``, with a fresh client id."""
        fork: Doc[Any] = Doc()
        if base.state is not None:
            fork.apply_update(base.state)
        else:
            parts = self.store.load(doc_id, upto_seq=base.seq)
            if parts:
                fork.apply_update(parts[0] if len(parts) == 1 else merge_updates(*parts))
        return fork

    # -- mutation -----------------------------------------------------------------------------

    def transact(
        self,
        doc_id: str,
        origin: Origin,
        mutate: Callable[[Doc[Any]], None],
        *,
        summary: str = "",
        path: str = "",
        card: str = "",
        peer: str | None = None,
        bases: Iterable[Pending] = (),
    ) -> Change | None:
        """Run ``mutate`` as one transaction on ``doc_id``; persist and publish what it did.

        ``bases`` are recorded in the same store transaction, at the seq the update gets (or,
        when the transaction changed nothing, at the document's current seq).
        """
        doc = self._docs.get(doc_id)
        if doc is None:
            doc = self.doc(doc_id)
        sink = self._captured[doc_id]
        sink.clear()
        value = _ORIGIN_VALUES[origin]
        try:
            with doc.transaction(origin=value):
                mutate(doc)
            updates = [u for u in sink if u != EMPTY_UPDATE]
            sink.clear()
            return self._commit(
                doc_id, origin, value, updates, summary, path, card or doc_id, peer, list(bases)
            )
        except BaseException:
            # Yjs cannot roll back: whatever part of the mutation ran is in the live document
            # but not in the store.  Forget the document so the next use reloads it from the
            # store (with a fresh client id): live and durable state never disagree.
            self._forget(doc_id)
            raise

    def _forget(self, doc_id: str) -> None:
        for unobserve in self._unobserve.pop(doc_id, ()):
            unobserve()
        self._docs.pop(doc_id, None)
        self._texts.pop(doc_id, None)
        self._captured.pop(doc_id, None)
        self._latest.pop(doc_id, None)
        self._log.pop(doc_id, None)
        self._dirty_heads.discard(doc_id)  # the store will name it stale if it is
        if self._deferred:  # applied inside a batch but not stored: gone with the document
            self._deferred = [d for d in self._deferred if d.doc_id != doc_id]
        self._cards = None
        self._touched.clear()
        if doc_id == SPACE_DOC:
            self.space = self.doc(SPACE_DOC)

    def apply_update(
        self,
        doc_id: str,
        update: bytes,
        origin: Origin,
        *,
        summary: str = "",
        path: str = "",
        card: str = "",
        peer: str | None = None,
        bases: Iterable[Pending] = (),
    ) -> Change | None:
        """Apply a Yjs update (from a peer or a fork) as one transaction."""
        if origin is Origin.PEER and not bases and doc_id != SPACE_DOC and self._unknown(doc_id):
            return self._apply_first(doc_id, update, summary, path, card, peer)
        return self.transact(
            doc_id,
            origin,
            lambda d: d.apply_update(update),
            summary=summary,
            path=path,
            card=card,
            peer=peer,
            bases=bases,
        )

    def _apply_first(
        self, doc_id: str, update: bytes, summary: str, path: str, card: str, peer: str | None
    ) -> Change | None:
        """:meth:`apply_update` of a peer's update to a document of which nothing is here (a
        card arriving during a join): the update is stored as received, instead of being
        captured again from the transaction, which costs more than applying it (pycrdt
        encodes an update for every observed transaction: about 12 µs on top of 7 µs for a
        2 KB card, measured in BENCHMARKS.md's twelfth round).  The document is observed
        from then on.  What the update held that could not be integrated yet (it depends on
        changes not here) is stored too, where a capture would leave it out: loading the
        log gives the same document.  An update of which nothing could be integrated is not
        stored, as a capture would store nothing."""
        if self._closed:
            raise RuntimeError("this replica is closed")
        doc: Doc[Any] = Doc()
        value = _ORIGIN_VALUES[Origin.PEER]
        with doc.transaction(origin=value):
            doc.apply_update(update)
        integrated = doc.get_state() != EMPTY_STATE
        self._register(doc_id, doc, NO_LOG)
        try:
            return self._commit(
                doc_id, Origin.PEER, value, [update] if integrated else [], summary, path,
                card or doc_id, peer, [],
            )  # fmt: skip
        except BaseException:
            self._forget(doc_id)
            raise

    def _commit(
        self,
        doc_id: str,
        origin: Origin,
        origin_value: str,
        updates: list[bytes],
        summary: str,
        path: str,
        card: str,
        peer: str | None,
        bases: list[Pending],
    ) -> Change | None:
        if self._deferred is not None:
            if doc_id != SPACE_DOC and not bases:
                if updates:
                    self._defer(doc_id, origin, origin_value, updates, summary, path, card, peer)
                return None
            # Stored now, so after the batch's earlier transactions (a document's log keeps
            # the order its updates were applied in; the space's observers read card state).
            self._store_deferred()
        if not updates:
            if bases:
                seq = self._latest[doc_id]
                self.store.replace_bases([self._base(doc_id, b, seq) for b in bases], [])
            return None
        update = updates[0] if len(updates) == 1 else merge_updates(*updates)
        if not path and doc_id != SPACE_DOC:
            known = (self._cards if self._cards is not None else self.cards()).get(doc_id)
            path = known.path if known is not None else ""
        # SQLite assigns the seq; bases recorded with it mean "the log up to this update".
        bases_at = None
        if bases:
            bases_at = lambda seq: [self._base(doc_id, b, seq) for b in bases]  # noqa: E731
        seq = self.store.append_one(
            doc_id,
            update,
            card,
            origin_value,
            peer or self.device,
            self._clock(),
            path,
            summary,
            bases_at,
        )
        self._latest[doc_id] = seq
        self._dirty_heads.add(doc_id)
        size = self._log[doc_id]
        size.rows += 1
        size.row_bytes += len(update)
        touched = NO_CARDS
        if doc_id == SPACE_DOC:
            touched = frozenset(self._touched)
            self._touched.clear()
            if EVERY_CARD in touched:
                before = set(self._cards or ())
                self._cards = None
                ids = {str(k) for k, _ in spacedoc.cards_map(self.space).items()}
                touched = frozenset(before | ids)
            self._refresh_cards(touched)
        change = Change(doc_id, origin, update, seq, summary, peer, path, touched)
        if self.changes.observers:  # an Rx publish costs microseconds even to nobody
            self.changes.on_next(change)
        # Housekeeping, after the change is out: both are rare, and their failures are only
        # logged (the transaction itself is committed and published).
        if size.rows >= size.next_look and size.row_bytes >= size.snapshot_bytes:
            self._compact(doc_id, size)
        self._commits += 1
        if self._commits % HEADS_EVERY == 0:
            self._flush_heads_quietly()
        return change

    # -- batches ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Store the card-document transactions of the block together, in one store
        transaction when the block ends (also when it raises), then publish their changes.

        Each transaction is applied to its live document at once, as always; only its row
        and its :class:`Change` wait (so :meth:`transact` and :meth:`apply_update` return
        ``None`` for them).  Transactions on the space document, or with bases, are stored at
        once, after the batch's earlier ones.  Nothing the batch applied is published before
        it is stored; if storing fails, the documents it touched are dropped from memory
        (reloaded from the store on next use) and the error propagates.  Nested batches join
        the outer one.
        """
        if self._deferred is not None:
            yield
            return
        self._deferred = []
        try:
            yield
        finally:
            try:
                self._store_deferred()
            finally:
                self._deferred = None

    def _defer(
        self,
        doc_id: str,
        origin: Origin,
        origin_value: str,
        updates: list[bytes],
        summary: str,
        path: str,
        card: str,
        peer: str | None,
    ) -> None:
        assert self._deferred is not None
        update = updates[0] if len(updates) == 1 else merge_updates(*updates)
        if not path:
            known = (self._cards if self._cards is not None else self.cards()).get(doc_id)
            path = known.path if known is not None else ""
        self._deferred.append(
            _Deferred(doc_id, origin, origin_value, update, summary, path, card, peer)
        )

    def _store_deferred(self) -> None:
        """Store the batch's transactions so far in one store transaction, then publish."""
        pending = self._deferred
        if not pending:
            return
        self._deferred = []
        now = self._clock()
        items = [
            Appended(
                d.doc_id, d.update, d.card, d.origin_value, d.peer or self.device, now, d.path,
                d.summary,
            )
            for d in pending
        ]  # fmt: skip
        try:
            seqs = self.store.append(items)
        except BaseException:
            for doc_id in {d.doc_id for d in pending}:
                self._forget(doc_id)  # live state never runs ahead of the store
            raise
        touched: dict[str, _LogSize] = {}
        for d, seq in zip(pending, seqs, strict=True):
            self._latest[d.doc_id] = seq
            size = self._log[d.doc_id]
            size.rows += 1
            size.row_bytes += len(d.update)
            touched[d.doc_id] = size
        self._dirty_heads.update(touched)
        if self.changes.observers:
            for d, seq in zip(pending, seqs, strict=True):
                self.changes.on_next(
                    Change(d.doc_id, d.origin, d.update, seq, d.summary, d.peer, d.path)
                )
        for doc_id, size in touched.items():
            if size.rows >= size.next_look and size.row_bytes >= size.snapshot_bytes:
                self._compact(doc_id, size)
        before = self._commits
        self._commits += len(pending)
        if self._commits // HEADS_EVERY != before // HEADS_EVERY:
            self._flush_heads_quietly()

    def _compact(self, doc_id: str, size: _LogSize) -> None:
        """Fold the log of ``doc_id``, which has outgrown its snapshot, into a new snapshot.

        The snapshot is the live document's state (one pass over the document, no merge of
        the log): the live document holds exactly the log up to the latest seq, and the store
        checks that it holds no row the document has not seen.  When a base still needs the
        log as it was at an older seq (a peer's update not yet written to the file), only the
        rows up to that seq are folded, rebuilt in a scratch document.  When nothing could be
        folded, the next look waits until the log has doubled.
        """
        doc = self._docs[doc_id]
        keep = doc_id != SPACE_DOC  # the space's bases are content hashes, not states
        try:
            seq = self._latest[doc_id]
            floor = self.store.log_floor(doc_id) if keep else None
            if floor is None or floor >= seq:
                state = doc.get_update()
                head = doc.get_state()
                if self.store.compact_to(
                    doc_id, state, seq, size.rows, keep_base_states=keep, head=head
                ):
                    size.rows = size.row_bytes = 0
                    size.snapshot_bytes = len(state)
                    size.next_look = COMPACT_MIN_ROWS
                    self._dirty_heads.discard(doc_id)
                    return
            else:
                older = self.store.load_log(doc_id, upto_seq=floor)
                if older.rows:
                    scratch: Doc[Any] = Doc()
                    with scratch.transaction():
                        for part in older.parts:
                            scratch.apply_update(part)
                    state = scratch.get_update()
                    if self.store.compact_to(doc_id, state, floor, older.rows):
                        size.rows -= older.rows
                        size.row_bytes -= older.row_bytes
                        size.snapshot_bytes = len(state)
                        size.next_look = size.rows + COMPACT_MIN_ROWS
                        return
        except StoreError as exc:
            log.warning("could not compact %s: %s", doc_id, exc)
        size.next_look = max(2 * size.rows, size.rows + COMPACT_MIN_ROWS)

    # -- heads: state vectors for sync_digest ---------------------------------------------------

    def flush_heads(self) -> None:
        """Write the state vectors of the documents changed since they were last written."""
        if not self._dirty_heads or self.store.readonly:
            return
        heads = [
            (doc_id, self._docs[doc_id].get_state(), self._latest[doc_id])
            for doc_id in sorted(self._dirty_heads)
            if doc_id in self._docs
        ]
        self.store.put_heads(heads)
        self._dirty_heads.clear()

    def _flush_heads_quietly(self) -> None:
        try:
            self.flush_heads()
        except StoreError as exc:  # heads are a cache: the store names them stale later
            log.warning("could not record document heads: %s", exc)

    def _base(self, doc_id: str, pending: Pending, seq: int) -> Base:
        digest = pending.sha256 or sha256_hex(pending.content)
        return Base(pending.key, pending.path, doc_id, pending.content, digest, seq, pending.state)

    # -- space schema shortcuts ----------------------------------------------------------------

    def _refresh_cards(self, touched: frozenset[str]) -> None:
        """Update the card views of the cards a transaction touched (not all of them; but
        when it touched many -- a join's first space update names every card -- all of them
        are read again in one call, which costs less than reading each)."""
        if self._cards is None:
            return
        if len(touched) > REREAD_ALL_CARDS and len(touched) * 4 > len(self._cards):
            self._cards = None
            self.cards()
            return
        for card_id in touched:
            old = self._cards.pop(card_id, None)
            if old is not None and old.path:
                self._by_path.get(old.path, set()).discard(card_id)
            view = spacedoc.read_card(self.space, card_id)
            if view is not None and not view.deleted:
                self._cards[card_id] = view
                if view.path:
                    self._by_path.setdefault(view.path, set()).add(card_id)

    def cards(self) -> dict[str, CardView]:
        """Live cards by id (a cache kept current transaction by transaction)."""
        if self._cards is None:
            self._cards = spacedoc.read_cards(self.space)
            self._by_path = {}
            for card in self._cards.values():
                if card.path:
                    self._by_path.setdefault(card.path, set()).add(card.id)
        return self._cards

    def cards_at(self, path: str) -> list[CardView]:
        """Every live card claiming ``path`` (more than one only after a conflict)."""
        cards = self.cards()
        return [cards[i] for i in sorted(self._by_path.get(path, ())) if i in cards]

    def card_at(self, path: str) -> CardView | None:
        """The live card at ``path`` (the smallest id if a conflict left two there)."""
        cards = self.cards()
        ids = self._by_path.get(path)
        if not ids:
            return None
        return cards.get(min(ids))

    # -- documents awaited from peers ---------------------------------------------------------

    def await_doc(self, doc_id: str, asker: object) -> None:
        """``asker`` (a sync session) asked a peer for ``doc_id``, of which nothing is here
        yet, and expects an answer: until it comes (:meth:`settle_doc`), :meth:`awaited`
        says so, and the folder bridge leaves the card's file unwritten rather than write it
        empty and then again with its content."""
        self._awaited.setdefault(doc_id, set()).add(asker)

    def settle_doc(self, doc_id: str, asker: object) -> None:
        """``asker`` no longer awaits ``doc_id`` (the peer answered, or the connection
        ended); once no one does, ``doc_id`` is published on :attr:`settled`."""
        askers = self._awaited.get(doc_id)
        if askers is None or asker not in askers:
            return
        askers.discard(asker)
        if not askers:
            del self._awaited[doc_id]
            if self.settled.observers:
                self.settled.on_next(doc_id)

    def awaited(self, doc_id: str) -> bool:
        """Whether a peer was asked for ``doc_id`` and nothing of it has been stored yet."""
        return doc_id in self._awaited and self.latest_seq(doc_id) == 0

    def sync_digest(self) -> str:
        """A fingerprint of everything this replica holds (the space and every live card's
        content): two replicas with equal digests are in sync.  Reads state vectors from the
        store's heads, so no document is loaded — except those whose head a crash left behind
        their log, which are loaded once (and their heads rewritten)."""
        wanted = [
            SPACE_DOC,
            *sorted(c.id for c in self.cards().values() if c.kind in spacedoc.CONTENT_KINDS),
        ]
        stale = self.store.stale_heads()
        if stale:
            wanted_ids = set(wanted)
            for doc_id in stale:
                if doc_id in wanted_ids:
                    self.doc(doc_id)
                    self._dirty_heads.add(doc_id)
        self._flush_heads_quietly()
        heads = self.store.heads()
        h = hashlib.sha256()
        for doc_id in wanted:
            if doc_id in self._dirty_heads:  # not written (a read-only store, a failed write)
                sv = self.doc(doc_id).get_state()
            else:
                sv = heads.get(doc_id, b"")
            h.update(doc_id.encode() + b"\0" + canonical_state_vector(sv) + b"\n")
        return h.hexdigest()[:16]

    def space_id(self) -> str:
        return spacedoc.space_id(self.space)
