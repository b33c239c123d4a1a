"""One sync session with one peer over one connection, sans-I/O.

Bytes in, bytes out: :meth:`PeerSession.receive` takes whatever arrived on the connection
and returns the bytes to send back; :meth:`PeerSession.local_change` turns a committed local
change into bytes for this peer.  No sockets, no asyncio, no clock — the transport adapter
(:mod:`engine.transport`) and the in-memory pair used by tests drive it the same way.

Phases:

1. **Hello** — both sides send a version, a fresh 32-byte nonce and a display name.
2. **Proof** (:mod:`engine.auth`) — the dialer offers a proof of the space capability bound
   to both nonces and both TLS certificates; the listener answers with its own proof only if
   it recognised the offer.  A wrong, replayed or relayed proof gets the same answer as no
   proof at all (an empty accept), so a peer without the secret learns nothing.
3. **Sync** — per document, y-protocols sync: each side sends SyncStep1 (its state vector),
   the other answers SyncStep2 (only what is missing), then live Updates.  The space document
   goes first; when it names a card document we have not seen, we ask for it.  Binary cards'
   blobs are fetched in chunks, resumable from the size already received, verified by hash.
   The card updates one :meth:`PeerSession.receive` carries (hundreds during a join) are
   stored in one store transaction (:meth:`Replica.batch`) before the read is answered.
   A card document asked for of which nothing is here is *awaited*
   (:meth:`Replica.await_doc`) until the peer answers or the connection ends, so the folder
   bridge writes a joining device's files once, with their content.

Blob answers are queued, not built at once: a :class:`BlobGet` records (digest, offset) --
a repeated request for the same blob replaces the earlier one -- and the queue is served one
chunk at a time, one blob after another.  With ``paced_blobs`` the adapter pulls chunks with
:meth:`PeerSession.next_blob_data` only while its transport has room, so a peer that asks
for a big blob many times and never reads costs one blob in memory and one chunk in the
send buffer (:mod:`engine.network` does this); without it (the in-memory network, tests)
:meth:`PeerSession.receive` returns the chunks with its other answers, as before.

Invariants: updates from a peer that proved only read access are refused (never applied)
and reported; a read-only replica never sends its own edits; an update that came from this
peer is never sent back to it; every malformed frame raises :class:`SessionClosed` with a
reason, after which the session sends and accepts nothing more.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import Enum

from engine import auth
from engine.blobs import Blobs
from engine.changes import Change, Origin
from engine.replica import SPACE_DOC, Replica
from engine.sharelink import SpaceKeys
from engine.spacedoc import CONTENT_KINDS
from engine.store import StoreError
from engine.wire import (
    MAX_NAME,
    MAX_TEXT,
    PROTOCOL_VERSION,
    SYNC_STEP1,
    SYNC_STEP2,
    SYNC_UPDATE,
    Accept,
    Awareness,
    BlobData,
    BlobGet,
    Bye,
    FrameDecoder,
    Hello,
    Message,
    Notice,
    Offer,
    ProtocolError,
    Sync,
    clip_text,
    decode,
    encode,
    encode_frame,
    parse_ysync,
    ysync,
)

log = logging.getLogger("tack.session")

BLOB_CHUNK = 512 * 1024
MAX_OWED_BLOBS = 65_536  # blobs a peer asked for that we do not have (yet) and remember
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
DOC_ID = re.compile(r"^(space|[0-9a-zA-Z_-]{1,64})$")
EMPTY_UPDATE = b"\x00\x00"
NOTICE_READ_ONLY = 403


class Role(Enum):
    DIALER = "dialer"
    LISTENER = "listener"


class Phase(Enum):
    HELLO = "hello"
    PROOF = "proof"
    SYNC = "sync"
    CLOSED = "closed"


class SessionClosed(Exception):
    """The session ended; ``reason`` says why (logged by the adapter)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class SessionStats:
    updates_in: int = 0
    updates_out: int = 0
    refused: int = 0
    blobs_in: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    refusals: list[str] = field(default_factory=list)



def _reraise_unless_panic(exc: BaseException) -> None:
    """A panic inside pycrdt's Rust code reaches Python as pyo3's ``PanicException``, a
    ``BaseException``: what a peer sent must close its session, never the daemon.  Any other
    ``BaseException`` (KeyboardInterrupt, cancellation) goes on."""
    if type(exc).__name__ != "PanicException":
        raise exc

class PeerSession:
    """The state of one connection to one peer, for one space."""

    def __init__(
        self,
        role: Role,
        replica: Replica,
        blobs: Blobs,
        keys: SpaceKeys,
        *,
        my_cert: bytes,
        peer_cert: bytes,
        peer_id: str,
        nonce: bytes,
        name: str,
        on_blob: Callable[[str], None] | None = None,
        on_awareness: Callable[[bytes], None] | None = None,
        paced_blobs: bool = False,
    ) -> None:
        """``name`` is our display name, cut to the wire's 256 UTF-8 bytes if longer
        (:func:`~engine.wire.clip_text`).  With ``paced_blobs`` the blob chunks a peer asked
        for are left for :meth:`next_blob_data` instead of being returned by
        :meth:`receive` and :meth:`blob_arrived`."""
        self.role = role
        self.replica = replica
        self.blobs = blobs
        self.keys = keys
        self.my_cert = my_cert
        self.peer_cert = peer_cert
        self.peer_id = peer_id
        self.nonce = nonce
        self.name = clip_text(name, MAX_NAME)
        self.peer_name = ""
        self.peer_access: auth.Access | None = None
        self.phase = Phase.HELLO
        self.stats = SessionStats()
        self._on_blob = on_blob
        self._on_awareness = on_awareness
        self._decoder = FrameDecoder()
        self._peer_nonce = b""
        self._transcript = b""
        self._asked_docs: set[str] = set()
        self._asked_blobs: set[str] = set()  # we asked this peer; it may still send
        self._owed_blobs: dict[str, int] = {}  # the peer asked us before we had them: offset
        self._sending: dict[str, int] = {}  # blobs the peer asked for: next offset, in order
        self._serving: tuple[str, bytes] | None = None  # the blob at the head of _sending
        self._paced_blobs = paced_blobs
        self._said_bye = False
        self._awaiting: set[str] = set()  # docs asked for, held nothing of, not yet answered
        self._answered: list[str] = []  # ... answered during the current receive()

    # -- driving ------------------------------------------------------------------------------

    def start(self) -> bytes:
        return self._out([Hello(PROTOCOL_VERSION, self.nonce, self.name)])

    def receive(self, data: bytes) -> bytes:
        """Feed bytes from the peer; returns bytes to send.  Raises :class:`SessionClosed`."""
        if self.phase is Phase.CLOSED:
            raise SessionClosed("session already closed")
        self.stats.bytes_in += len(data)
        out: list[Message] = []
        try:
            # One store transaction for all the card documents this read carried (hundreds
            # during a join), stored before anything is answered or published.
            with self.replica.batch():
                for frame in self._decoder.feed(data):
                    if self.closed:
                        break  # refused: nothing packed behind the refusal is ever answered
                    out.extend(self._handle(decode(frame)))
        except StoreError as exc:  # storing the batch: our disk, not the peer's fault
            self.ended()
            raise SessionClosed(f"could not store updates here: {exc}") from exc
        except ProtocolError as exc:
            self.ended()
            raise SessionClosed(f"malformed data from peer: {exc}") from exc
        except SessionClosed:
            self.ended()
            raise
        finally:
            self._settle_answered()  # after the batch is stored: the answers are in
        return self._out(out) + self._unpaced_blob_data()

    def ended(self) -> None:
        """The connection is over (closed, refused, lost): nothing more is exchanged, and
        the documents this session awaited from the peer are no longer awaited."""
        self.phase = Phase.CLOSED
        self._sending.clear()
        self._serving = None
        self._answered.extend(self._awaiting)
        self._settle_answered()

    def _settle_answered(self) -> None:
        answered, self._answered = self._answered, []
        for doc_id in answered:
            self._awaiting.discard(doc_id)
            self.replica.settle_doc(doc_id, self)

    def local_change(self, change: Change) -> bytes:
        """Bytes that carry a committed local change to this peer (empty if not for it)."""
        if self.phase is not Phase.SYNC or not self.keys.can_write:
            return b""
        if change.origin is Origin.PEER and change.peer == self.peer_id:
            return b""  # it came from this peer: never echo
        out: list[Message] = [Sync(change.doc_id, ysync(SYNC_UPDATE, change.update))]
        self.stats.updates_out += 1
        if change.doc_id == SPACE_DOC:
            out.extend(self._wanted_blobs())
        return self._out(out)

    def awareness(self, payload: bytes) -> bytes:
        if self.phase is not Phase.SYNC:
            return b""
        return self._out([Awareness(payload)])

    def close(self, reason: str) -> bytes:
        """A goodbye telling the peer why (once), after which nothing more is exchanged."""
        self.ended()
        if self._said_bye:
            return b""
        self._said_bye = True
        return self._out([Bye(clip_text(reason, MAX_TEXT))])

    @property
    def closed(self) -> bool:
        return self.phase is Phase.CLOSED

    @property
    def synced(self) -> bool:
        return self.phase is Phase.SYNC

    # -- internals ----------------------------------------------------------------------------

    def _out(self, messages: Iterable[Message]) -> bytes:
        data = b"".join(encode_frame(encode(m)) for m in messages)
        self.stats.bytes_out += len(data)
        return data

    def _handle(self, message: Message) -> list[Message]:
        if self.phase is Phase.CLOSED:
            raise SessionClosed("session already closed")
        if isinstance(message, Bye):
            raise SessionClosed(f"peer said goodbye: {message.reason}")
        if self.phase is Phase.HELLO:
            if not isinstance(message, Hello):
                raise SessionClosed("expected hello")
            return self._hello(message)
        if self.phase is Phase.PROOF:
            if self.role is Role.LISTENER and isinstance(message, Offer):
                return self._offer(message)
            if self.role is Role.DIALER and isinstance(message, Accept):
                return self._accept(message)
            raise SessionClosed(f"unexpected {type(message).__name__} before the proof")
        if isinstance(message, Sync):
            return self._sync(message)
        if isinstance(message, BlobGet):
            return self._blob_get(message)
        if isinstance(message, BlobData):
            return self._blob_data(message)
        if isinstance(message, Awareness):
            if self._on_awareness is not None:
                self._on_awareness(message.payload)
            return []
        if isinstance(message, Notice):
            log.warning("peer %s: %s", self.peer_id[:7], message.text)
            return []
        raise SessionClosed(f"unexpected {type(message).__name__}")

    def _hello(self, hello: Hello) -> list[Message]:
        if hello.version != PROTOCOL_VERSION:
            raise SessionClosed(
                f"peer speaks protocol {hello.version}, we speak {PROTOCOL_VERSION}"
            )
        self._peer_nonce = hello.nonce
        self.peer_name = hello.name
        if self.role is Role.DIALER:
            self._transcript = auth.transcript(
                self.nonce, hello.nonce, self.my_cert, self.peer_cert
            )
        else:
            self._transcript = auth.transcript(
                hello.nonce, self.nonce, self.peer_cert, self.my_cert
            )
        self.phase = Phase.PROOF
        if self.role is Role.DIALER:
            return [Offer((auth.make_proof(self.keys, auth.OFFER, self._transcript),))]
        return []

    def _offer(self, offer: Offer) -> list[Message]:
        for proof in offer.proofs:
            matched = auth.match_offer(proof, [self.keys], self._transcript)
            if matched is not None:
                self.peer_access = matched[1]
                answer = auth.make_proof(self.keys, auth.ACCEPT, self._transcript)
                self.phase = Phase.SYNC
                return [Accept((answer,)), *self._initial_sync()]
        # Exactly what a device without this space would say: nothing.
        self.phase = Phase.CLOSED
        return [Accept(())]

    def _accept(self, accept: Accept) -> list[Message]:
        for proof in accept.proofs:
            access = auth.check_proof(proof, self.keys, auth.ACCEPT, self._transcript)
            if access is not None:
                self.peer_access = access
                self.phase = Phase.SYNC
                return self._initial_sync()
        raise SessionClosed("peer does not share this space (or its proof is wrong)")

    def _initial_sync(self) -> list[Message]:
        out: list[Message] = [
            Sync(SPACE_DOC, ysync(SYNC_STEP1, self.replica.state_vector(SPACE_DOC)))
        ]
        self._asked_docs.add(SPACE_DOC)
        out.extend(self._wanted_docs())
        out.extend(self._wanted_blobs())
        return out

    def _wanted_docs(self) -> list[Message]:
        out: list[Message] = []
        for card in self.replica.cards().values():
            if card.kind in CONTENT_KINDS and card.id not in self._asked_docs:
                out.append(self._ask(card.id))
        return out

    def _ask(self, doc_id: str) -> Message:
        """SyncStep1 for ``doc_id``; if nothing of it is here, it is awaited until answered."""
        self._asked_docs.add(doc_id)
        ask = Sync(doc_id, ysync(SYNC_STEP1, self.replica.state_vector(doc_id)))
        if doc_id != SPACE_DOC and self.replica.latest_seq(doc_id) == 0:
            self._awaiting.add(doc_id)
            self.replica.await_doc(doc_id, self)
        return ask

    def _wanted_blobs(self) -> list[Message]:
        out: list[Message] = []
        for card in self.replica.cards().values():
            digest = card.blob
            if not SHA256_HEX.match(digest):
                continue  # a writer's malformed blob field: no blob, never an error
            if (
                card.kind == "binary"
                and digest
                and digest not in self._asked_blobs
                and not self.blobs.has(digest)
            ):
                self._asked_blobs.add(digest)
                out.append(BlobGet(bytes.fromhex(digest), self.blobs.partial_size(digest)))
        return out

    def _sync(self, message: Sync) -> list[Message]:
        doc_id = message.doc_id
        if not DOC_ID.match(doc_id):
            raise SessionClosed(f"bad document id {doc_id!r}")
        kind, data = parse_ysync(message.payload)
        if kind == SYNC_STEP1:
            if not self.keys.can_write:
                # A read-only replica's own edits stay local: answer with nothing.
                return [Sync(doc_id, ysync(SYNC_STEP2, EMPTY_UPDATE))]
            try:
                missing = self.replica.encode_state(doc_id, data)
            except Exception as exc:  # pycrdt rejects a malformed state vector
                raise SessionClosed(f"bad state vector for {doc_id}: {exc}") from exc
            except BaseException as exc:
                _reraise_unless_panic(exc)
                raise SessionClosed(f"pycrdt panicked on a state vector for {doc_id}") from exc
            out: list[Message] = [Sync(doc_id, ysync(SYNC_STEP2, missing))]
            if doc_id not in self._asked_docs:
                out.append(self._ask(doc_id))
            return out
        if kind in (SYNC_STEP2, SYNC_UPDATE):
            if kind == SYNC_STEP2 and doc_id in self._awaiting:
                self._answered.append(doc_id)  # settled once this read's batch is stored
            if data == EMPTY_UPDATE:
                return []
            if self.peer_access != "write":
                self.stats.refused += 1
                reason = f"refused an update to {doc_id} from read-only peer {self.peer_id[:7]}"
                self.stats.refusals.append(reason)
                log.warning("%s", reason)
                return [Notice(NOTICE_READ_ONLY, "read-only: your updates are not accepted")]
            try:
                self.replica.apply_update(
                    doc_id,
                    data,
                    Origin.PEER,
                    peer=self.peer_id,
                    summary="from " + (self.peer_name or "peer"),
                )
            except SessionClosed:
                raise
            except StoreError as exc:  # our disk, not the peer's fault
                raise SessionClosed(f"could not store an update here: {exc}") from exc
            except Exception as exc:  # pycrdt rejects a malformed update
                raise SessionClosed(f"bad update for {doc_id}: {exc}") from exc
            except BaseException as exc:
                _reraise_unless_panic(exc)
                raise SessionClosed(f"pycrdt panicked on an update for {doc_id}") from exc
            self.stats.updates_in += 1
            if doc_id == SPACE_DOC:
                return [*self._wanted_docs(), *self._wanted_blobs()]
            return []
        raise SessionClosed(f"unknown sync step {kind}")

    def _blob_get(self, message: BlobGet) -> list[Message]:
        digest = message.digest.hex()
        if not self.blobs.has(digest):
            # Not here yet (we may be fetching it ourselves): remember, and send it the
            # moment it arrives (:meth:`blob_arrived`) — a chain A→B→C relays blobs.
            if digest in self._owed_blobs or len(self._owed_blobs) < MAX_OWED_BLOBS:
                self._owed_blobs[digest] = message.offset
            return [BlobData(message.digest, message.offset, 0, b"")]
        # Queued, not answered here: however many times it is asked for, a blob is sent
        # once, from the offset of the latest request, a chunk at a time.
        self._sending[digest] = message.offset
        return []

    @property
    def blob_data_pending(self) -> bool:
        """Whether chunks the peer asked for are waiting for :meth:`next_blob_data`."""
        return bool(self._sending) and self.phase is Phase.SYNC

    def next_blob_data(self) -> bytes:
        """The next chunk (one :class:`BlobData` frame, at most :data:`BLOB_CHUNK` bytes of
        data) of the blobs the peer asked for, oldest request first; empty when none is owed.

        Only the blob being sent is held in memory, read once for all of its chunks."""
        while self._sending and self.phase is Phase.SYNC:
            digest, offset = next(iter(self._sending.items()))
            if self._serving is None or self._serving[0] != digest:
                data = self.blobs.get(digest)
                if data is None:  # gone meanwhile (blobs are never deleted, but be safe)
                    del self._sending[digest]
                    continue
                self._serving = (digest, data)
            data = self._serving[1]
            if offset > len(data):  # past the end: the same answer as "not here"
                del self._sending[digest]
                self._serving = None
                return self._out([BlobData(bytes.fromhex(digest), offset, 0, b"")])
            chunk = data[offset : offset + BLOB_CHUNK]
            if offset + len(chunk) >= len(data):
                del self._sending[digest]
                self._serving = None
            else:
                self._sending[digest] = offset + len(chunk)
            return self._out([BlobData(bytes.fromhex(digest), offset, len(data), chunk)])
        return b""

    def _unpaced_blob_data(self) -> bytes:
        """Without ``paced_blobs``: every queued chunk, to go out with the other answers."""
        if self._paced_blobs:
            return b""
        return b"".join(iter(self.next_blob_data, b""))

    def blob_arrived(self, digest: str) -> bytes:
        """A blob became available here: queue it if this peer asked for it earlier (and,
        without ``paced_blobs``, return its chunks)."""
        if self.phase is not Phase.SYNC or digest not in self._owed_blobs:
            return b""
        self._sending[digest] = self._owed_blobs.pop(digest)
        return self._unpaced_blob_data()

    def _blob_data(self, message: BlobData) -> list[Message]:
        digest = message.digest.hex()
        if digest not in self._asked_blobs:
            raise SessionClosed("unrequested blob data")
        if self.blobs.has(digest):
            return []  # completed meanwhile (another peer sent it)
        if message.total == 0 and not message.data:
            return []  # the peer does not have it yet; it sends it when it does
        have = self.blobs.partial_size(digest)
        if message.offset != have:
            if message.offset + len(message.data) >= message.total and have < message.total:
                return [BlobGet(message.digest, have)]  # out of step: resume where we are
            return []
        size = self.blobs.write_partial(digest, message.offset, message.data)
        if size > message.total:
            raise SessionClosed("blob larger than announced")
        if size == message.total:
            if not self.blobs.complete_partial(digest):
                self._asked_blobs.discard(digest)
                raise SessionClosed(f"blob {digest[:12]} failed its hash check")
            self._asked_blobs.discard(digest)
            self.stats.blobs_in += 1
            if self._on_blob is not None:
                self._on_blob(digest)
        return []
