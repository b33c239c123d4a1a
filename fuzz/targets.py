"""The fuzz targets: Tack's parsers of untrusted input, each driven by one byte string.

A target is a function ``(data: bytes) -> None`` that feeds ``data`` to one parser and lets
only that parser's documented, clean error escape *into the target*, where it is expected and
swallowed.  Anything that escapes the target -- another exception, or an ``AssertionError``
from an invariant the target checks on the side -- is a crash.  Targets are deterministic (no
clock, no randomness not derived from ``data``), so a saved crash input replays exactly.

=================  ==============================================  ========================
target             what ``data`` is                                the one clean error
=================  ==============================================  ========================
``frame``          a byte stream, cut into chunks as ``data[:2]``  ``wire.ProtocolError``
                   says, fed to ``FrameDecoder.feed``
``codec``          one frame payload for ``wire.decode``           ``wire.ProtocolError``
``sharelink``      UTF-8 text (lone surrogates allowed) pasted     ``ShareLinkError``
                   into ``sharelink.parse_link``
``canvas``         the bytes of a ``board.canvas`` file            ``canvas.CanvasError``
``ignore``         a ``.tackignore`` file, ``NUL``, then paths     none: never raises
                   (one a line) asked of ``is_ignored``
``session``        a little program of peer actions (below) run    ``SessionClosed``
                   against a real ``PeerSession`` in any phase
=================  ==============================================  ========================

Side invariants (crashes too): frames reassemble exactly as one unchunked parse says; a
decoded message re-encodes to at most as many bytes and decodes back equal; a parsed share
link formats back to equal keys; a parsed canvas renders to bytes that parse back equal;
``.tackignore`` is never ignored and ``.tack``/``.git`` always are; a session emits only
well-formed messages, a read-only session never sends content, a session never applies an
update from a peer that did not prove write access, the blob chunks it sends are the blob's
bytes, a closed session stays closed, and whatever the peer sent, the replica stays readable
(``cards()`` and ``sync_digest()``, which the bridge, status and every new session call).

The session program
-------------------
``data[0]`` picks the setup: the phase the session is driven to first (hello, proof or sync,
through a real handshake with real keys and real proofs), its role (dialer or listener),
whether this replica holds a read or write link, and whether the peer proves read or write.
The session runs on a real :class:`~engine.replica.Replica` over ``Store.memory()`` holding a
text card and two binary cards (one blob present, one wanted) and, as in
:mod:`engine.network`, hands awareness payloads to a real :class:`~engine.presence.Presence`.
The rest of ``data`` is a sequence of ops, each an op byte and its operands (a missing operand
reads as 0), which append bytes to an outgoing buffer or deliver it:

raw bytes, a payload framed with the right length, a ``Sync`` (any document id, step and
payload: real updates, mangled updates, state vectors), an edit of the space document made on
a copy of the replica's own state (any card field set to any value: the update is valid Yjs,
its content hostile), a text edit, ``BlobGet``/``BlobData`` (right or wrong digest, offset,
total and bytes), ``Hello``, ``Offer``/``Accept`` carrying right, read-only, truncated, wrong
label or garbage proofs, ``Awareness``/``Notice``/``Bye``, flipping a byte already buffered,
and *deliver* (everything buffered goes to ``receive`` as one chunk).

:func:`strategy` gives each target a hypothesis strategy of inputs that reach past the first
check (valid frames, real links, canvases, gitignore patterns, op programs), mixed with plain
random bytes; :data:`SEEDS` are a few such inputs for a coverage-guided fuzzer's corpus.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map, Text

from engine import auth
from engine.blobs import MemoryBlobs
from engine.changes import Change, Origin
from engine.presence import Presence
from engine.replica import SPACE_DOC, Replica
from engine.session import PeerSession, Phase, Role, SessionClosed
from engine.sharelink import (
    ShareLinkError,
    format_link,
    keys_from_secret,
    parse_link,
    read_only,
)
from engine.spacedoc import TEXT_KEY, CardView, cards_map, put_card
from engine.store import Store
from engine.wire import (
    MAX_FRAME,
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
    decode,
    encode,
    encode_frame,
    parse_ysync,
    ysync,
)
from fsbridge.canvas import CanvasError, parse_canvas, render_canvas
from fsbridge.ignore import IgnoreRules

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

__all__ = ["NAMES", "SEEDS", "TARGETS", "Target", "strategy"]


def _text(data: bytes) -> str:
    """Bytes as text, any bytes: UTF-8 with lone surrogates kept, else invalid bytes escaped."""
    try:
        return data.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape")


def _clean(data: bytes) -> str:
    """Bytes as text that pycrdt and the wire codec can carry (no lone surrogates)."""
    return data.decode("utf-8", "replace")


# == frame decoder =============================================================================


def _chunks(stream: bytes, seed: int) -> list[bytes]:
    """Cut ``stream`` deterministically: seed 0 = whole, 1 = byte by byte, else random sizes."""
    if seed == 0:
        return [stream]
    if seed == 1:
        return [stream[i : i + 1] for i in range(len(stream))]
    rng = random.Random(seed)
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        size = rng.choice((0, 1, 2, 3, 4, 5, 7, 16, 64, 1000))
        out.append(stream[pos : pos + size])
        pos += size
    return out


def fuzz_frame(data: bytes) -> None:
    """``FrameDecoder.feed`` over any chunking raises only ``ProtocolError``; what it returns
    is exactly what one reading of the whole stream finds, and nothing over the limit."""
    limit = data[0] if data and data[0] < 0xC0 else MAX_FRAME
    seed = data[1] if len(data) > 1 else 0
    stream = data[2:]
    # The reference: one straight reading of the stream.
    expected: list[bytes] = []
    pos, bad = 0, False
    while len(stream) - pos >= 4:
        length = int.from_bytes(stream[pos : pos + 4], "big")
        if length > limit:
            bad = True
            break
        if len(stream) - pos - 4 < length:
            break
        expected.append(stream[pos + 4 : pos + 4 + length])
        pos += 4 + length
    decoder = FrameDecoder(max_frame=limit)
    got: list[bytes] = []
    try:
        for chunk in _chunks(stream, seed):
            got += decoder.feed(chunk)
    except ProtocolError:
        assert bad, "ProtocolError on a stream with no oversized frame"
        assert got == expected[: len(got)], "frames before the error differ"
        return
    assert not bad, "an oversized frame header was accepted"
    assert got == expected, "chunked frames differ from the whole-stream reading"
    assert decoder.pending == len(stream) - pos
    assert all(len(frame) <= limit for frame in got)


# == message codec =============================================================================


def fuzz_codec(data: bytes) -> None:
    """``wire.decode`` raises only ``ProtocolError``; a decoded message round-trips."""
    try:
        message = decode(data)
    except ProtocolError:
        return
    again = encode(message)
    assert len(again) <= len(data), "re-encoding grew the message"
    assert decode(again) == message, "a decoded message does not survive re-encoding"


# == share links ===============================================================================


def fuzz_sharelink(data: bytes) -> None:
    """``parse_link`` raises only ``ShareLinkError``; a parsed link formats back to its keys."""
    try:
        keys = parse_link(_text(data))
    except ShareLinkError:
        return
    assert parse_link(format_link(keys, read_only=not keys.can_write)) == keys
    if keys.can_write:
        assert parse_link(format_link(keys, read_only=True)) == read_only(keys)


# == canvas ====================================================================================


def fuzz_canvas(data: bytes) -> None:
    """``parse_canvas`` raises only ``CanvasError``; what it accepts renders and parses back."""
    try:
        canvas = parse_canvas(data)
    except CanvasError:
        return
    rendered = render_canvas(canvas)
    assert parse_canvas(rendered) == canvas, "render/parse does not round-trip"
    assert render_canvas(parse_canvas(rendered)) == rendered, "rendering is not stable"


# == ignore rules ==============================================================================


def fuzz_ignore(data: bytes) -> None:
    """``IgnoreRules.from_lines`` and ``is_ignored`` never raise, and the fixed rules hold."""
    rules_part, _, paths_part = data.partition(b"\x00")
    rules = IgnoreRules.from_lines(_text(rules_part).splitlines())
    assert rules.problem is None or isinstance(rules.problem, str)
    assert not rules.is_ignored("")
    assert not rules.is_ignored(".tackignore")
    for fixed in (".tack", ".tack/store.sqlite", ".git", "sub/.git/HEAD", "a.md.swp"):
        assert rules.is_ignored(fixed), f"{fixed} must always be ignored"
    for path in _text(paths_part).split("\n")[:32]:
        as_file = rules.is_ignored(path)
        as_dir = rules.is_ignored(path, is_dir=True)
        assert isinstance(as_file, bool) and isinstance(as_dir, bool)
        parts = path.split("/")
        if as_dir and all(p not in ("", ".", "..") for p in parts):
            assert rules.is_ignored(path + "/child"), f"a file under ignored {path!r} is not"


# == session ===================================================================================

SPACE_ID = "f022" * 8
KEYS = keys_from_secret(SPACE_ID, hashlib.sha256(b"tack fuzz: a fixed write secret").digest())
READ_KEYS = read_only(KEYS)
CERT = {Role.DIALER: b"fuzz dialer certificate", Role.LISTENER: b"fuzz listener certificate"}
NONCE = {Role.DIALER: b"D" * 32, Role.LISTENER: b"L" * 32}
TEXT_ID = "c0ffee00c0ffee00"
WANT_ID = "b10b000000000001"
HAVE_ID = "b10b000000000002"
BLOB_WANT = bytes(range(256)) * 3
BLOB_HAVE = b"a blob this replica has\n" * 20
WANT = hashlib.sha256(BLOB_WANT).digest()
HAVE = hashlib.sha256(BLOB_HAVE).digest()
_NODE = {"type": "file", "x": 0, "y": 0, "width": 400, "height": 400}
_PEER_CLIENT = 4242  # the Yjs client id of every edit the fuzzing peer makes


def _base_updates() -> tuple[bytes, bytes]:
    space: Doc[Any] = Doc(client_id=1)
    with space.transaction():
        put_card(space, CardView(TEXT_ID, "text", "a.md", "", node=dict(_NODE)))
        for card_id, path, blob in ((WANT_ID, "w.png", WANT), (HAVE_ID, "h.png", HAVE)):
            view = CardView(card_id, "binary", path, "", blob.hex(), 768, node=dict(_NODE))
            put_card(space, view)
    text: Doc[Any] = Doc(client_id=2)
    text.get(TEXT_KEY, type=Text).insert(0, "hello, fuzz\n")
    return space.get_update(), text.get_update()


SPACE_UPDATE, TEXT_UPDATE = _base_updates()


def _other_update() -> bytes:
    doc: Doc[Any] = Doc(client_id=3)
    doc.get(TEXT_KEY, type=Text).insert(0, "from elsewhere")
    return doc.get_update()


OTHER_UPDATE = _other_update()

_DOC_IDS = (SPACE_DOC, TEXT_ID, WANT_ID, "new-doc", "../x", "", "a b", "x" * 65, "é")
_CARD_IDS = (TEXT_ID, WANT_ID, HAVE_ID, "n0de", "")
_CARD_KEYS = (
    "kind",
    "path",
    "board",
    "blob",
    "size",
    "z",
    "deleted",
    "blob_prev",
    "n:x",
    "n:width",
    "n:type",
    "n:file",
    "n:text",
)
_KINDS = ("text", "binary", "link", "note", "board", "group", "node", "")
_ODD_STRINGS = ("{", "not json", "1e999", "[" * 40, "-1", "NaN", "2" * 400, "zz", "AB" * 32)


class _Cursor:
    """Reads operands off the input; past its end every read is 0 / empty."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    @property
    def done(self) -> bool:
        return self.pos >= len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def pick(self, options: tuple[Any, ...]) -> Any:
        return options[self.byte() % len(options)]


def _frame(message: Message) -> bytes:
    return encode_frame(encode(message))


class _SessionRun:
    """One session under test and the hostile peer's side of its connection."""

    def __init__(self, setup: int) -> None:
        phase = (Phase.HELLO, Phase.PROOF, Phase.SYNC)[setup % 3]
        self.role = (Role.DIALER, Role.LISTENER)[(setup // 3) % 2]
        self.peer_role = Role.LISTENER if self.role is Role.DIALER else Role.DIALER
        self.keys = READ_KEYS if (setup // 6) % 2 else KEYS
        self.peer_keys = READ_KEYS if (setup // 12) % 2 else KEYS
        self.replica = Replica(Store.memory(), device="fuzz-target", clock=lambda: 0.0)
        self.replica.apply_update(SPACE_DOC, SPACE_UPDATE, Origin.STORE)
        self.replica.apply_update(TEXT_ID, TEXT_UPDATE, Origin.STORE)
        self.blobs = MemoryBlobs()
        self.blobs.put(BLOB_HAVE)
        self.presence = Presence(self.replica, "fuzz-target", "target", user="fuzz")
        self.session = PeerSession(
            self.role,
            self.replica,
            self.blobs,
            self.keys,
            my_cert=CERT[self.role],
            peer_cert=CERT[self.peer_role],
            peer_id="fuzz-peer",
            nonce=NONCE[self.role],
            name="target",
            on_awareness=self._heard,
        )
        self.replica.changes.subscribe(self._changed)
        self.peer_nonce = NONCE[self.peer_role]
        self.closed = False
        self._sent = FrameDecoder()
        self.buffer = bytearray()
        self._emit(self.session.start())
        if phase is not Phase.HELLO:
            self.deliver(_frame(Hello(PROTOCOL_VERSION, self.peer_nonce, "peer")))
        if phase is Phase.SYNC:
            if self.role is Role.LISTENER:
                self.deliver(_frame(Offer((self.proof(auth.OFFER),))))
            else:
                self.deliver(_frame(Accept((self.proof(auth.ACCEPT),))))
        assert self.session.phase is phase, f"setup did not reach {phase}"

    # -- the peer's knowledge -----------------------------------------------------------------

    def transcript(self) -> bytes:
        if self.role is Role.DIALER:
            return auth.transcript(
                NONCE[Role.DIALER], self.peer_nonce, CERT[Role.DIALER], CERT[Role.LISTENER]
            )
        return auth.transcript(
            self.peer_nonce, NONCE[Role.LISTENER], CERT[Role.DIALER], CERT[Role.LISTENER]
        )

    def proof(self, label: bytes, keys: Any = None) -> bytes:
        return auth.make_proof(keys or self.peer_keys, label, self.transcript())

    # -- invariants ---------------------------------------------------------------------------

    def _heard(self, payload: bytes) -> None:
        # What engine.network does with awareness: a ValueError is logged and ignored.
        with contextlib.suppress(ValueError):
            self.presence.apply("fuzz-peer", payload)

    def _changed(self, change: Change) -> None:
        if change.origin is Origin.PEER:
            assert self.session.peer_access == "write", "applied an update from a reader"

    def _emit(self, data: bytes) -> None:
        for payload in self._sent.feed(data):
            message = decode(payload)  # a session only ever sends well-formed messages
            if isinstance(message, Sync):
                step, body = parse_ysync(message.payload)
                if not self.keys.can_write and step != SYNC_STEP1:
                    assert body == b"\x00\x00", "a read-only replica sent content"
            elif isinstance(message, BlobData) and message.data:
                blob = self.blobs.get(message.digest.hex())
                assert blob is not None, "sent a chunk of a blob it does not have"
                end = message.offset + len(message.data)
                assert blob[message.offset : end] == message.data, "sent a wrong chunk"
                assert message.total == len(blob)

    def deliver(self, data: bytes) -> None:
        if self.closed:
            try:
                self.session.receive(data)
            except SessionClosed:
                return
            raise AssertionError("a closed session accepted more bytes")
        try:
            reply = self.session.receive(data)
        except SessionClosed as exc:
            assert exc.reason, "SessionClosed without a reason"
            assert self.session.phase is Phase.CLOSED
            self.closed = True
        else:
            self._emit(reply)
        # Whatever a peer sent, the replica stays readable (the bridge and status read it).
        self.replica.cards()
        self.replica.sync_digest()

    # -- ops ----------------------------------------------------------------------------------

    def run(self, c: _Cursor) -> None:
        ops: tuple[Callable[[_Cursor], None], ...] = (
            self.op_raw,
            self.op_framed,
            self.op_deliver,
            self.op_sync,
            self.op_space_edit,
            self.op_text_edit,
            self.op_blob_get,
            self.op_blob_data,
            self.op_hello,
            self.op_proof,
            self.op_misc,
            self.op_corrupt,
        )
        for _ in range(64):
            if c.done:
                break
            ops[c.byte() % len(ops)](c)
        self.op_deliver(c)

    def op_raw(self, c: _Cursor) -> None:
        self.buffer += c.take(c.byte())

    def op_framed(self, c: _Cursor) -> None:
        self.buffer += encode_frame(c.take(c.byte()))

    def op_deliver(self, c: _Cursor) -> None:
        data, self.buffer = bytes(self.buffer), bytearray()
        self.deliver(data)

    def _payload(self, c: _Cursor) -> bytes:
        source = c.byte() % 6
        if source == 0:
            return SPACE_UPDATE
        if source == 1:
            return TEXT_UPDATE
        if source == 2:
            return OTHER_UPDATE
        if source == 3:
            return self.replica.state_vector(c.pick((SPACE_DOC, TEXT_ID)))
        if source == 4:
            return c.take(c.byte())
        mangled = bytearray(c.pick((SPACE_UPDATE, TEXT_UPDATE, OTHER_UPDATE)))
        for _ in range(c.byte() % 5):
            mangled[c.byte() % len(mangled)] = c.byte()
        return bytes(mangled[: len(mangled) - c.byte() % 8])

    def op_sync(self, c: _Cursor) -> None:
        doc_id = c.pick(_DOC_IDS)
        step = c.pick((SYNC_STEP1, SYNC_STEP2, SYNC_UPDATE, SYNC_UPDATE, 3))
        payload = self._payload(c)
        wrapped = ysync(step, payload) if step <= 2 else bytes([0, step]) + payload
        if c.byte() % 8 == 7:
            wrapped = wrapped[: c.byte() % (len(wrapped) + 1)]
        self.buffer += _frame(Sync(doc_id, wrapped))

    def _value(self, c: _Cursor) -> Any:
        kind = c.byte() % 10
        raw = c.take(c.byte() % 24)
        number = int.from_bytes(raw[:7] or b"\x00", "big", signed=True)
        if kind == 0:
            return _clean(raw)
        if kind == 1:
            return number
        if kind == 2:
            return number / 7.0
        if kind == 3:
            return bool(number & 1)
        if kind == 4:
            return None
        if kind == 5:
            return c.pick(_KINDS)
        if kind == 6:
            return json.dumps(_clean(raw))
        if kind == 7:
            return c.pick(
                ("{", "not json", "1e999", "[" * 40, "-1", "NaN", "2" * 400, "zz", "AB" * 32)
            )
        if kind == 8:
            return ["a", number]
        return {"nested": number}

    def op_space_edit(self, c: _Cursor) -> None:
        """A valid Yjs update of the space document with hostile content."""
        doc: Doc[Any] = Doc(client_id=_PEER_CLIENT)
        doc.apply_update(self.replica.encode_state(SPACE_DOC))
        before = doc.get_state()
        cards = cards_map(doc)
        card_id = c.pick(_CARD_IDS) or _clean(c.take(c.byte() % 20))
        with doc.transaction():
            how = c.byte() % 4
            if how == 0 or card_id not in cards:
                fields = {c.pick(_CARD_KEYS): self._value(c) for _ in range(1 + c.byte() % 4)}
                if c.byte() % 2:
                    fields.setdefault("kind", c.pick(_KINDS))
                if "blob" in fields:  # a blob matters on binary cards
                    fields.setdefault("kind", "binary")
                cards[card_id] = Map(fields)
            elif how == 1:
                cards[card_id] = self._value(c)
            elif how == 2:
                del cards[card_id]
            else:
                entry = cards[card_id]
                if isinstance(entry, Map):
                    entry[c.pick(_CARD_KEYS)] = self._value(c)
        update = doc.get_update(before)
        self.buffer += _frame(Sync(SPACE_DOC, ysync(c.pick((SYNC_UPDATE, SYNC_STEP2)), update)))

    def op_text_edit(self, c: _Cursor) -> None:
        doc: Doc[Any] = Doc(client_id=_PEER_CLIENT + 1)
        doc_id = c.pick((TEXT_ID, TEXT_ID, WANT_ID, "fresh-doc"))
        doc.apply_update(self.replica.encode_state(doc_id))
        before = doc.get_state()
        text = doc.get(TEXT_KEY, type=Text)
        where = c.byte() % (len(str(text)) + 1)
        insert = _clean(c.take(c.byte() % 32))
        with doc.transaction():
            if c.byte() % 3 == 0 and len(str(text)) > where:
                del text[where : where + 1]
            else:
                text.insert(where, insert or "x")
        update = doc.get_update(before)
        self.buffer += _frame(Sync(doc_id, ysync(SYNC_UPDATE, update)))

    def _digest(self, c: _Cursor) -> bytes:
        choice = c.byte() % 3
        if choice == 0:
            return WANT
        if choice == 1:
            return HAVE
        return c.take(32).ljust(32, b"\x00")

    def op_blob_get(self, c: _Cursor) -> None:
        offset = c.pick((0, 1, 100, len(BLOB_HAVE), len(BLOB_HAVE) + 1, 2**40, c.byte()))
        self.buffer += _frame(BlobGet(self._digest(c), offset))

    def op_blob_data(self, c: _Cursor) -> None:
        digest = self._digest(c)
        have = self.blobs.partial_size(digest.hex())
        offset = c.pick((have, have, 0, have + 1, c.byte()))
        total = c.pick((len(BLOB_WANT), len(BLOB_WANT), 0, c.byte(), 2**40))
        size = c.pick((len(BLOB_WANT), 256, 1, 0, c.byte()))
        data = c.take(size) if c.byte() % 4 == 3 else BLOB_WANT[offset : offset + size]
        self.buffer += _frame(BlobData(digest, offset, total, data))

    def op_hello(self, c: _Cursor) -> None:
        version = c.pick((PROTOCOL_VERSION, PROTOCOL_VERSION, 0, 2, 2**40))
        nonce = c.take(32).ljust(32, b"\x00") if c.byte() % 2 else NONCE[self.peer_role]
        if self.session.phase is Phase.HELLO and not self.buffer:
            self.peer_nonce = nonce
        name = _clean(c.take(c.byte() % 40))
        self.buffer += _frame(Hello(version, nonce, name))

    def op_proof(self, c: _Cursor) -> None:
        kind = c.pick((Offer, Accept))
        label = auth.OFFER if kind is Offer else auth.ACCEPT
        proofs: list[bytes] = []
        for _ in range(c.byte() % 4):
            choice = c.byte() % 7
            if choice == 0:
                proofs.append(self.proof(label))
            elif choice == 1:
                proofs.append(self.proof(label, KEYS))
            elif choice == 2:
                proofs.append(self.proof(label, READ_KEYS))
            elif choice == 3:
                other = auth.ACCEPT if label == auth.OFFER else auth.OFFER
                proofs.append(self.proof(other, KEYS))
            elif choice == 4:
                proofs.append(self.proof(label, KEYS)[: c.byte() % 97])
            elif choice == 5:
                proof = bytearray(self.proof(label, KEYS))
                proof[c.byte() % len(proof)] ^= 1 + c.byte() % 255
                proofs.append(bytes(proof))
            else:
                proofs.append(c.take(c.byte()))
        self.buffer += _frame(kind(tuple(proofs)))

    def op_misc(self, c: _Cursor) -> None:
        which = c.byte() % 4
        body = c.take(c.byte())
        if which == 0:
            self.buffer += _frame(Awareness(body))
        elif which == 1:
            self.buffer += _frame(Awareness(self._awareness(c)))
        elif which == 2:
            self.buffer += _frame(Notice(c.byte(), _clean(body)))
        else:
            self.buffer += _frame(Bye(_clean(body)))

    def _awareness(self, c: _Cursor) -> bytes:
        """A y-protocols awareness update: count, then (client, clock, JSON state) each."""
        states = [
            {"device": "fuzz-peer", "name": "peer", "recent": ["a.md"], "digest": "0"},
            {"device": "fuzz-peer", "recent": "not a list", "name": {"a": [1]}},
            {"device": "someone-else"},
            None,
            [1, 2],
            "x",
        ]
        out = bytearray([1 + c.byte() % 2])
        for _ in range(out[0]):
            out += bytes([c.byte() % 100, 1 + c.byte() % 3])
            body = json.dumps(c.pick(tuple(states))).encode()
            out += bytes([len(body)]) + body
        return bytes(out)

    def op_corrupt(self, c: _Cursor) -> None:
        if self.buffer:
            where = (c.byte() << 8 | c.byte()) % len(self.buffer)
            self.buffer[where] = c.byte()


def fuzz_session(data: bytes) -> None:
    """``PeerSession.receive`` in any phase raises only ``SessionClosed`` (see module doc)."""
    cursor = _Cursor(data)
    run = _SessionRun(cursor.byte() % 24)
    try:
        run.run(cursor)
    finally:
        _release(run.replica)


def _release(replica: Replica) -> None:
    """Free the replica's documents (pycrdt observers keep them alive until unobserved) and
    its in-memory store: a million runs would otherwise need ~140 GB."""
    replica.close()
    replica.store.close()


# == registry ==================================================================================


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    doc: str


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("frame", fuzz_frame, "FrameDecoder.feed, any chunking -> ProtocolError"),
        Target("codec", fuzz_codec, "wire.decode -> ProtocolError"),
        Target("sharelink", fuzz_sharelink, "sharelink.parse_link -> ShareLinkError"),
        Target("canvas", fuzz_canvas, "canvas.parse_canvas -> CanvasError"),
        Target("ignore", fuzz_ignore, "IgnoreRules.from_lines / is_ignored -> never raise"),
        Target("session", fuzz_session, "PeerSession.receive, every phase -> SessionClosed"),
    )
}
NAMES: tuple[str, ...] = tuple(TARGETS)


# == seeds and strategies ======================================================================


def _sample_messages() -> list[Message]:
    return [
        Hello(PROTOCOL_VERSION, bytes(32), "Zoë 💻"),
        Offer((bytes(32), bytes(96))),
        Accept(()),
        Sync(SPACE_DOC, ysync(SYNC_STEP1, b"\x00")),
        Sync(TEXT_ID, ysync(SYNC_UPDATE, TEXT_UPDATE)),
        BlobGet(WANT, 5),
        BlobData(WANT, 0, 3, b"abc"),
        Awareness(b"\x01\x05\x01\x02{}"),
        Notice(403, "read-only"),
        Bye("bye"),
    ]


_LINK = format_link(KEYS)
_READ_LINK = format_link(KEYS, read_only=True)
_CANVAS = json.dumps(
    {
        "nodes": [
            {
                "id": "a",
                "type": "file",
                "file": "a.md",
                "x": 0,
                "y": -20,
                "width": 400,
                "height": 400,
                "color": "1",
                "extra": {"k": [1, 2.5, None]},
            },
            {
                "id": "t",
                "type": "text",
                "text": "hi\ud800",
                "x": 1.5,
                "y": 0,
                "width": 1,
                "height": 2,
            },
            {
                "id": "l",
                "type": "link",
                "url": "https://x",
                "x": 0,
                "y": 0,
                "width": 1,
                "height": 1,
            },
        ],
        "edges": [{"id": "e", "fromNode": "a", "toNode": "t", "label": "→"}],
        "x-tool": True,
    },
    indent="\t",
).encode()
_IGNORE = (
    b"# comment\nbuild/\n*.log\n!keep.log\n/docs/**/*.pdf\n\\#x\n[a-\n\x00a.md\nbuild/x\nkeep.log"
)


def _session_program(setup: int, *ops: bytes) -> bytes:
    return bytes([setup]) + b"".join(ops)


SEEDS: dict[str, tuple[bytes, ...]] = {
    "frame": (
        b"\xff\x00" + b"".join(encode_frame(encode(m)) for m in _sample_messages()),
        b"\x10\x01" + encode_frame(b"0123456789") + b"\x00\x00\x01\x00",
        b"\xff\x07\x00\x00\x00\x03abc\x00\x00",
    ),
    "codec": tuple(encode(m) for m in _sample_messages()),
    "sharelink": (
        _LINK.encode(),
        _READ_LINK.encode(),
        f"  <{_LINK.upper()[:20]}{_LINK[20:40]}\n  {_LINK[40:]}>  ".encode(),
        ("“" + _READ_LINK.replace("&", "&v=x&") + "”").encode(),
    ),
    "canvas": (_CANVAS, b"\xef\xbb\xbf{}", b'{"nodes": [{"id": 1}]}'),
    "ignore": (_IGNORE, b"**/a/**\n!/.tack\n\x00.tack/x\nx/.git\n.tackignore"),
    "session": (
        _session_program(2, b"\x03\x00\x01\x00", b"\x02"),
        _session_program(5, b"\x04\x00\x00\x00\x07\x05", b"\x04\x01\x01\x00\x08\x00", b"\x02"),
        _session_program(0, b"\x08\x00\x00\x04peer", b"\x09\x00\x01\x00", b"\x02"),
        _session_program(3, b"\x08\x00\x00\x00", b"\x09\x01\x01\x00", b"\x02"),
        _session_program(14, b"\x07\x00\x00\x00\x00\x00", b"\x06\x01\x00", b"\x02"),
        _session_program(20, b"\x05\x00\x00\x05hello", b"\x0a\x01\x00\x02", b"\x02"),
    ),
}


def strategy(name: str) -> SearchStrategy[bytes]:
    """Hypothesis inputs for target ``name``: structured ones mixed with random bytes."""
    from hypothesis import strategies as st

    def mutated(base: SearchStrategy[bytes]) -> SearchStrategy[bytes]:
        @st.composite
        def mutate(draw: st.DrawFn) -> bytes:
            data = bytearray(draw(base))
            for _ in range(draw(st.integers(0, 3))):
                if not data:
                    break
                how = draw(st.integers(0, 2))
                at = draw(st.integers(0, len(data) - 1))
                if how == 0:
                    data[at] = draw(st.integers(0, 255))
                elif how == 1:
                    del data[at]
                else:
                    data[at:at] = draw(st.binary(min_size=1, max_size=4))
            return bytes(data)

        return mutate()

    seeds = st.sampled_from(SEEDS[name])
    random_bytes = st.binary(max_size=512)
    structured: SearchStrategy[bytes]
    if name == "frame":
        payloads = st.lists(st.binary(max_size=40), max_size=6)
        structured = st.builds(
            lambda limit, seed, ps, tail: (
                bytes([limit, seed]) + b"".join(encode_frame(p) for p in ps) + tail
            ),
            st.integers(0, 255),
            st.integers(0, 255),
            payloads,
            st.binary(max_size=6),
        )
    elif name == "codec":
        structured = st.builds(
            lambda kind, body: bytes([kind]) + body,
            st.sampled_from([1, 2, 3, 10, 11, 12, 13, 14, 15]),
            st.binary(max_size=200),
        )
    elif name == "sharelink":
        links = st.builds(
            lambda secret, ro: format_link(keys_from_secret(SPACE_ID, secret), read_only=ro),
            st.binary(min_size=32, max_size=32),
            st.booleans(),
        )
        wrapped = st.builds(
            lambda link, left, right, case: left + (link.upper() if case else link) + right,
            links,
            st.sampled_from(["", " ", "<", '"', "“", "(", "[", "\n", "`"]),
            st.sampled_from(["", " ", ">", '"', "”", ")", "]", "\n", "`", "#x", "&w=a"]),
            st.booleans(),
        )
        structured = st.one_of(wrapped, st.text(max_size=120)).map(
            lambda s: s.encode("utf-8", "surrogatepass")
        )
    elif name == "canvas":
        scalars = st.one_of(
            st.none(),
            st.booleans(),
            st.integers(-(2**60), 2**60),
            st.floats(allow_nan=False, allow_infinity=False),
            st.text(max_size=10),
        )
        values = st.recursive(
            scalars,
            lambda inner: st.one_of(
                st.lists(inner, max_size=3),
                st.dictionaries(st.text(max_size=5), inner, max_size=3),
            ),
            max_leaves=8,
        )
        node = st.fixed_dictionaries(
            {
                "id": st.text(min_size=1, max_size=4),
                "type": st.sampled_from(["text", "file", "link", "group", "odd"]),
                "x": st.integers(-(2**54), 2**54),
                "y": st.floats(-1e6, 1e6),
                "width": st.integers(0, 500),
                "height": st.integers(0, 500),
            },
            optional={
                "text": st.text(max_size=8),
                "file": st.text(max_size=8),
                "url": st.text(max_size=8),
                "color": values,
                "z": values,
            },
        )
        edge = st.fixed_dictionaries(
            {
                "id": st.text(min_size=1, max_size=4),
                "fromNode": st.text(max_size=3),
                "toNode": st.text(max_size=3),
            },
            optional={"label": values},
        )
        doc = st.fixed_dictionaries(
            {},
            optional={
                "nodes": st.lists(node, max_size=4),
                "edges": st.lists(edge, max_size=3),
                "extra": values,
            },
        )
        structured = st.builds(
            lambda d, indent, bom: (
                (b"\xef\xbb\xbf" if bom else b"")
                + json.dumps(d, indent=indent, ensure_ascii=indent is None).encode(
                    "utf-8", "surrogatepass"
                )
            ),
            doc,
            st.sampled_from([None, "\t", 1]),
            st.booleans(),
        )
    elif name == "ignore":
        pieces = st.sampled_from(
            [
                "*",
                "**",
                "?",
                "/",
                "!",
                "#",
                "\\",
                "[",
                "]",
                "a-z",
                "z-a",
                "-",
                "^",
                " ",
                ".",
                "..",
                "a",
                "b",
                ".tack",
                ".git",
                ".tackignore",
                "build",
                "é",
                "\t",
                "\r",
            ]
        )
        line = st.lists(pieces, max_size=8).map("".join)
        lines = st.lists(line, max_size=8).map("\n".join)
        paths = st.lists(st.lists(pieces, max_size=6).map("".join), max_size=6).map("\n".join)
        structured = st.builds(
            lambda rules, ps: rules.encode("utf-8") + b"\x00" + ps.encode("utf-8"),
            lines,
            paths,
        )
    elif name == "session":
        op = st.one_of(
            st.builds(lambda b: bytes([0, len(b)]) + b, st.binary(max_size=60)),
            st.builds(lambda b: bytes([1, len(b)]) + b, st.binary(max_size=60)),
            st.just(b"\x02"),
            st.builds(lambda b: b"\x03" + b, st.binary(min_size=3, max_size=12)),
            st.builds(lambda b: b"\x04" + b, st.binary(min_size=4, max_size=30)),
            st.builds(lambda b: b"\x05" + b, st.binary(min_size=3, max_size=20)),
            st.builds(lambda b: b"\x06" + b, st.binary(min_size=2, max_size=4)),
            st.builds(lambda b: b"\x07" + b, st.binary(min_size=5, max_size=8)),
            st.builds(lambda b: b"\x08" + b, st.binary(min_size=3, max_size=8)),
            st.builds(lambda b: b"\x09" + b, st.binary(min_size=2, max_size=8)),
            st.builds(lambda b: b"\x0a" + b, st.binary(min_size=2, max_size=20)),
            st.builds(lambda b: b"\x0b" + b, st.binary(min_size=3, max_size=3)),
        )
        structured = st.builds(
            lambda setup, ops: bytes([setup]) + b"".join(ops),
            st.integers(0, 23),
            st.lists(op, max_size=12),
        )
    else:
        raise KeyError(name)
    return st.one_of(structured, structured, mutated(seeds), mutated(structured), random_bytes)
