"""PeerSession, in process: blob answers are queued and sent a chunk at a time, and what a
session puts on the wire always fits the wire's limits (engine/session.py).

The hostile-peer tests (tests/test_hostile_peers.py, ``-m slow``) show the same against a
real daemon; these are the fast, exact versions that run by default."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from pycrdt import Text

from engine import SPACE_DOC, CardView, Change, MemoryBlobs, Origin, Replica, Store, spacedoc
from engine.memnet import MemoryDevice, MemoryNetwork
from engine.session import BLOB_CHUNK, PeerSession, Role, SessionClosed
from engine.sharelink import new_space_keys
from engine.spacedoc import TEXT_KEY
from engine.wire import (
    MAX_NAME,
    SYNC_UPDATE,
    BlobData,
    BlobGet,
    Bye,
    FrameDecoder,
    Hello,
    Message,
    Sync,
    decode,
    encode,
    encode_frame,
    ysync,
)

BLOB = os.urandom(3 * BLOB_CHUNK + 1000)
DIGEST = hashlib.sha256(BLOB).digest()


def messages(data: bytes) -> list[Message]:
    return [decode(f) for f in FrameDecoder().feed(data)]


def frames(*items: Message) -> bytes:
    return b"".join(encode_frame(encode(m)) for m in items)


def synced_pair(
    *,
    paced: bool,
    dialer_name: str = "asker",
    listener_name: str = "holder",
    card_blob: bytes | None = None,
) -> tuple[PeerSession, PeerSession]:
    """A dialer and a listener (the one holding blobs, ``paced`` or not), talked into sync;
    with ``card_blob`` the listener has a binary card of that content, which the dialer asks
    for and receives (pulled from a paced listener as an adapter would) on the way."""
    keys = new_space_keys()

    def session(role: Role, me: str, them: str, name: str, paced_blobs: bool) -> PeerSession:
        return PeerSession(
            role,
            Replica(Store.memory(), device=me),
            MemoryBlobs(),
            keys,
            my_cert=me.encode(),
            peer_cert=them.encode(),
            peer_id=them,
            nonce=hashlib.sha256(me.encode()).digest(),
            name=name,
            paced_blobs=paced_blobs,
        )

    asker = session(Role.DIALER, "a", "h", dialer_name, False)
    holder = session(Role.LISTENER, "h", "a", listener_name, paced)
    if card_blob is not None:
        digest = holder.blobs.put(card_blob)
        card = CardView("b10b000000000001", "binary", "x.bin", "", blob=digest, size=len(card_blob))
        holder.replica.transact(SPACE_DOC, Origin.API, lambda doc: spacedoc.put_card(doc, card))
    to_holder, to_asker = asker.start(), holder.start()
    while to_holder or to_asker:
        to_holder, to_asker = (
            asker.receive(to_asker) if to_asker else b"",
            (holder.receive(to_holder) if to_holder else b"") + holder.next_blob_data(),
        )
    assert asker.synced and holder.synced
    return asker, holder


def pull_all(session: PeerSession) -> list[BlobData]:
    out: list[BlobData] = []
    while data := session.next_blob_data():
        (message,) = messages(data)
        assert isinstance(message, BlobData)
        out.append(message)
    return out


def pull_all_one(session: PeerSession) -> BlobData:
    (message,) = messages(session.next_blob_data())
    assert isinstance(message, BlobData)
    return message


def test_a_paced_session_queues_blob_requests_and_sends_one_chunk_at_a_time() -> None:
    """(A regression test: every BlobGet was answered at once with the whole blob, so 64
    requests for a 1 MB blob built 64 MB of answers.)"""
    _, holder = synced_pair(paced=True)
    holder.blobs.put(BLOB)
    assert holder.receive(frames(*[BlobGet(DIGEST, 0)] * 64)) == b""  # queued, not answered
    assert holder.blob_data_pending
    chunks = pull_all(holder)
    assert [c.offset for c in chunks] == [0, BLOB_CHUNK, 2 * BLOB_CHUNK, 3 * BLOB_CHUNK]
    assert all(len(c.data) <= BLOB_CHUNK and c.total == len(BLOB) for c in chunks)
    assert b"".join(c.data for c in chunks) == BLOB  # 64 requests: sent once
    assert not holder.blob_data_pending and holder.next_blob_data() == b""


def test_a_later_request_for_the_same_blob_moves_where_it_is_sent_from() -> None:
    _, holder = synced_pair(paced=True)
    holder.blobs.put(BLOB)
    holder.receive(frames(BlobGet(DIGEST, 0)))
    first = pull_all_one(holder)
    assert first.offset == 0
    holder.receive(frames(BlobGet(DIGEST, 2 * BLOB_CHUNK)))  # "I have this much": resume
    assert [c.offset for c in pull_all(holder)] == [2 * BLOB_CHUNK, 3 * BLOB_CHUNK]


def test_blobs_are_sent_one_after_another_in_the_order_asked() -> None:
    _, holder = synced_pair(paced=True)
    other = os.urandom(BLOB_CHUNK + 1)
    holder.blobs.put(BLOB)
    holder.blobs.put(other)
    holder.receive(frames(BlobGet(DIGEST, 0), BlobGet(hashlib.sha256(other).digest(), 0)))
    digests = [c.digest for c in pull_all(holder)]
    assert digests == [DIGEST] * 4 + [hashlib.sha256(other).digest()] * 2


def test_requests_past_the_end_or_for_missing_blobs_get_the_not_here_answer() -> None:
    _, holder = synced_pair(paced=True)
    holder.blobs.put(BLOB)
    missing = bytes(32)
    (answer,) = messages(holder.receive(frames(BlobGet(missing, 0))))
    assert answer == BlobData(missing, 0, 0, b"")  # at once: it is small
    holder.receive(frames(BlobGet(DIGEST, len(BLOB) + 1)))
    assert pull_all(holder) == [BlobData(DIGEST, len(BLOB) + 1, 0, b"")]
    holder.receive(frames(BlobGet(DIGEST, len(BLOB))))  # exactly at the end: an empty chunk
    assert pull_all(holder) == [BlobData(DIGEST, len(BLOB), len(BLOB), b"")]


def test_a_blob_asked_for_before_it_arrived_is_queued_from_the_offset_asked() -> None:
    _, holder = synced_pair(paced=True)
    holder.receive(frames(BlobGet(DIGEST, BLOB_CHUNK)))
    holder.blobs.put(BLOB)
    assert holder.blob_arrived(DIGEST.hex()) == b""  # paced: left for next_blob_data
    assert [c.offset for c in pull_all(holder)] == [BLOB_CHUNK, 2 * BLOB_CHUNK, 3 * BLOB_CHUNK]
    assert holder.blob_arrived(DIGEST.hex()) == b""  # owed once, sent once


def test_closing_drops_what_was_queued() -> None:
    _, holder = synced_pair(paced=True)
    holder.blobs.put(BLOB)
    holder.receive(frames(BlobGet(DIGEST, 0)))
    holder.close("bye")
    assert not holder.blob_data_pending and holder.next_blob_data() == b""


@pytest.mark.parametrize("paced", [True, False], ids=["paced", "unpaced"])
def test_a_binary_card_s_blob_arrives_intact(paced: bool) -> None:
    """The honest path, both ways of sending: asked for at sync, sent in chunks (paced: one
    per pull; unpaced, as the in-memory network does: with receive()'s other answers),
    assembled and hash-checked by the asking session."""
    asker, _ = synced_pair(paced=paced, card_blob=BLOB)
    assert asker.blobs.get(DIGEST.hex()) == BLOB


def test_an_unpaced_session_answers_each_blob_once_in_receive() -> None:
    _, holder = synced_pair(paced=False)
    holder.blobs.put(BLOB)
    answer = messages(holder.receive(frames(BlobGet(DIGEST, 0), BlobGet(DIGEST, 0))))
    assert [m.offset for m in answer if isinstance(m, BlobData)] == [
        0,
        BLOB_CHUNK,
        2 * BLOB_CHUNK,
        3 * BLOB_CHUNK,
    ]


@pytest.mark.parametrize(
    "name",
    ["📌" * 100, "x" * 1000, "é" * 129, "a\ud800" * 200],
    ids=["pins", "ascii", "accents", "lone-surrogates"],
)
def test_a_device_with_a_long_name_still_connects(name: str) -> None:
    """Names are not capped where they are chosen (``device.json``, ``--name``): the session
    cuts its Hello's name to the wire's 256 bytes at a character boundary."""
    asker, holder = synced_pair(paced=True, dialer_name=name, listener_name=name)
    for session in (asker, holder):
        assert len(session.peer_name.encode()) <= MAX_NAME
        assert name.encode("utf-8", "replace").startswith(session.peer_name.encode())
        assert len(session.peer_name.encode()) > MAX_NAME - 4  # cut, not emptied
    (hello,) = messages(asker.start())
    assert isinstance(hello, Hello) and hello.name == holder.peer_name


def test_a_long_goodbye_reason_is_cut_to_fit() -> None:
    asker, _ = synced_pair(paced=True)
    (bye,) = messages(asker.close("why " * 5000))
    assert isinstance(bye, Bye) and bye.reason.startswith("why why")


# -- a join: many card documents per read ------------------------------------------------------


def test_the_card_documents_of_one_read_are_stored_in_one_store_transaction(
    tmp_path: Path,
) -> None:
    """A join brings thousands of documents: the ones a read carries share one commit, and
    each is stored (and published) before the read is answered."""
    keys = new_space_keys()
    holder = Replica(Store.memory(), device="holder")
    n = 40
    for i in range(n):
        view = CardView(f"card{i}", "text", f"c{i}.md", "", node={"x": 0, "y": 0})
        holder.transact(SPACE_DOC, Origin.API, lambda d, v=view: spacedoc.put_card(d, v))
        text = f"card {i}\n"
        holder.transact(
            f"card{i}", Origin.API, lambda d, t=text: d.get(TEXT_KEY, type=Text).insert(0, t)
        )
    store = Store.open(tmp_path / "store.sqlite")
    joiner = Replica(store, device="joiner")
    stored_when_published: list[bool] = []

    def check_stored(change: Change) -> None:
        other = Store.open(tmp_path / "store.sqlite", readonly=True)
        try:
            stored_when_published.append(change.update in other.load(change.doc_id))
        finally:
            other.close()

    joiner.changes.subscribe(check_stored)
    commits: list[str] = []
    store._conn.set_trace_callback(lambda s: commits.append(s) if s == "COMMIT" else None)
    net = MemoryNetwork()
    net.connect(
        MemoryDevice("holder", holder, MemoryBlobs(), keys),
        MemoryDevice("joiner", joiner, MemoryBlobs(), keys),
    )
    net.flush()
    assert [joiner.text(f"card{i}") for i in range(n)] == [f"card {i}\n" for i in range(n)]
    assert len(stored_when_published) == n + 1 and all(stored_when_published)
    assert len(commits) <= 3, len(commits)  # the space, then the cards (one read here)


class PanicException(BaseException):
    """What a panic inside pycrdt's Rust code raises in Python (not an ``Exception``)."""


def test_an_update_that_makes_pycrdt_panic_closes_the_session_not_the_daemon(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, holder = synced_pair(paced=False)

    def panic(*_: object, **__: object) -> None:
        raise PanicException("called `Option::unwrap()` on a `None` value")

    monkeypatch.setattr(holder.replica, "apply_update", panic)
    update = b"\x01\x01\x07\x00\x04\x01\x07content\x01x\x00"  # any update: the apply panics
    with pytest.raises(SessionClosed, match="panicked"):
        holder.receive(frames(Sync("card-1", ysync(SYNC_UPDATE, update))))


def test_other_base_exceptions_still_propagate(monkeypatch: pytest.MonkeyPatch) -> None:
    _, holder = synced_pair(paced=False)

    def interrupt(*_: object, **__: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(holder.replica, "apply_update", interrupt)
    with pytest.raises(KeyboardInterrupt):
        holder.receive(frames(Sync("card-1", ysync(SYNC_UPDATE, b"\x00\x00\x01"))))
