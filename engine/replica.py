"""One device's replica of one space: its documents, their durable log, and the change stream.

The replica owns the space document (:mod:`engine.spacedoc`) and one ``Y.Text`` document per
text or note card, loaded lazily from the :class:`~engine.store.Store`.  Every mutation goes
through :meth:`Replica.transact` or :meth:`Replica.apply_update`, which

1. run the mutation as one pycrdt transaction,
2. append the resulting Yjs update to the store (durably, before anyone is told), and
3. publish a :class:`~engine.changes.Change` with its origin on :attr:`Replica.changes`.

Invariants: all pycrdt objects of a replica are touched from one thread (the owner's event
loop); every published change is already durable; a document is never seeded twice — a card's
history is created once and reused (DESIGN §6, jupyter-collaboration's duplicated text).
Documents get a fresh random Yjs client id each time they are loaded, and forks get their own,
so a client id is never reused with a different history.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

from pycrdt import Doc, Text, merge_updates
from reactivex.subject import Subject

from engine import spacedoc
from engine.changes import Change, Origin
from engine.spacedoc import TEXT_KEY, CardView
from engine.store import Appended, Base, Store

SPACE_DOC = "space"
COMPACT_EVERY = 512  # commits between looks at whether a log has outgrown its snapshot
EMPTY_UPDATE = b"\x00\x00"


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


@dataclass(frozen=True, slots=True)
class Pending:
    """A base to record together with a transaction, as a function of the seq it gets."""

    key: str
    path: str
    content: bytes
    state: bytes | None = None
    sha256: str | None = None  # for binary bases, whose content is not kept here


def _note_touched(touched: set[str], events: list[Any]) -> None:
    """Observer of the space's cards map: collect the ids of the cards a transaction touched."""
    for event in events:
        path = list(getattr(event, "path", []) or [])
        if path:
            touched.add(str(path[0]))
        else:
            touched.update(str(k) for k in (getattr(event, "keys", {}) or {}))


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
        self._uncompacted: set[str] = set()  # documents appended to since the last compaction
        self.space = self.doc(SPACE_DOC)

    # -- documents ----------------------------------------------------------------------------

    def doc(self, doc_id: str) -> Doc[Any]:
        """The live document ``doc_id``, loaded from the store on first use."""
        doc = self._docs.get(doc_id)
        if doc is None:
            if self._closed:
                raise RuntimeError("this replica is closed")
            doc = Doc()
            parts = self.store.load(doc_id)
            if parts:
                doc.apply_update(parts[0] if len(parts) == 1 else merge_updates(*parts))
            self._latest[doc_id] = self.store.latest_seq(doc_id)
            # The observers must not reference the replica (or it could never be collected):
            # they close over the lists and sets they fill, not over ``self``.
            sink: list[bytes] = []
            self._captured[doc_id] = sink
            sub = doc.observe(lambda event: sink.append(event.update))
            unobserve: list[Callable[[], None]] = [partial(doc.unobserve, sub)]
            if doc_id == SPACE_DOC:
                cards = spacedoc.cards_map(doc)
                self._cards_sub = cards.observe_deep(partial(_note_touched, self._touched))
                unobserve.append(partial(cards.unobserve, self._cards_sub))
            self._unobserve[doc_id] = unobserve
            self._docs[doc_id] = doc
        return doc

    def close(self) -> None:
        """Release every loaded document (their pycrdt observers keep them alive otherwise).

        The store stays open: it belongs to whoever opened it.  A closed replica must not be
        used again; closing twice is harmless.
        """
        self._closed = True
        self._finalizer()
        self._docs.clear()
        self._captured.clear()
        self._latest.clear()
        self._cards = None
        self._cards_sub = None

    def has_doc(self, doc_id: str) -> bool:
        return doc_id in self._docs or self.store.latest_seq(doc_id) > 0

    def text(self, doc_id: str) -> str:
        return str(self.doc(doc_id).get(TEXT_KEY, type=Text))

    def ytext(self, doc_id: str) -> Text:
        text: Text = self.doc(doc_id).get(TEXT_KEY, type=Text)
        return text

    def latest_seq(self, doc_id: str) -> int:
        self.doc(doc_id)
        return self._latest[doc_id]

    def state_vector(self, doc_id: str) -> bytes:
        return self.doc(doc_id).get_state()

    def encode_state(self, doc_id: str, since: bytes | None = None) -> bytes:
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
        doc = self.doc(doc_id)
        sink = self._captured[doc_id]
        sink.clear()
        try:
            with doc.transaction(origin=origin.value):
                mutate(doc)
            updates = [u for u in sink if u != EMPTY_UPDATE]
            sink.clear()
            return self._commit(
                doc_id, origin, updates, summary, path, card or doc_id, peer, list(bases)
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
        self._captured.pop(doc_id, None)
        self._latest.pop(doc_id, None)
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

    def _commit(
        self,
        doc_id: str,
        origin: Origin,
        updates: list[bytes],
        summary: str,
        path: str,
        card: str,
        peer: str | None,
        bases: list[Pending],
    ) -> Change | None:
        if not updates:
            if bases:
                seq = self._latest[doc_id]
                for b in bases:
                    self.store.put_base(self._base(doc_id, b, seq))
            return None
        update = updates[0] if len(updates) == 1 else merge_updates(*updates)
        if not path and doc_id != SPACE_DOC:
            known = self.cards().get(doc_id)
            path = known.path if known is not None else ""
        item = Appended(
            doc_id,
            update,
            card,
            origin.value,
            peer or self.device,
            self._clock(),
            path,
            summary,
            self._docs[doc_id].get_state(),
        )
        # SQLite assigns the seq; bases recorded with it mean "the log up to this update".
        seq = self.store.append([item], lambda seq: [self._base(doc_id, b, seq) for b in bases])[0]
        self._latest[doc_id] = seq
        self._commits += 1
        self._uncompacted.add(doc_id)
        if self._commits % COMPACT_EVERY == 0:
            for compact_id in sorted(self._uncompacted):
                self.store.compact_if_large(compact_id, keep_base_states=compact_id != SPACE_DOC)
            self._uncompacted.clear()
        touched: frozenset[str] = frozenset()
        if doc_id == SPACE_DOC:
            touched = frozenset(self._touched)
            self._touched.clear()
            self._refresh_cards(touched)
        change = Change(doc_id, origin, update, seq, summary, peer, path, touched)
        self.changes.on_next(change)
        return change

    def _base(self, doc_id: str, pending: Pending, seq: int) -> Base:
        digest = pending.sha256 or sha256_hex(pending.content)
        return Base(pending.key, pending.path, doc_id, pending.content, digest, seq, pending.state)

    # -- space schema shortcuts ----------------------------------------------------------------

    def _refresh_cards(self, touched: frozenset[str]) -> None:
        """Update the card views of the cards a transaction touched (not all of them)."""
        if self._cards is None:
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

    def sync_digest(self) -> str:
        """A fingerprint of everything this replica holds (the space and every live card's
        content): two replicas with equal digests are in sync.  Reads state vectors from the
        store's heads, so no document is loaded."""
        heads = self.store.heads()
        wanted = [
            SPACE_DOC,
            *sorted(c.id for c in self.cards().values() if c.kind in spacedoc.CONTENT_KINDS),
        ]
        h = hashlib.sha256()
        for doc_id in wanted:
            sv = heads.get(doc_id, b"")
            h.update(doc_id.encode() + b"\0" + canonical_state_vector(sv) + b"\n")
        return h.hexdigest()[:16]

    def space_id(self) -> str:
        return spacedoc.space_id(self.space)
