"""Tack's wire format, sans-I/O: frames on a byte stream, and the messages inside them.

Framing: every frame is a 4-byte big-endian length followed by that many payload bytes, at
most :data:`MAX_FRAME`.  :class:`FrameDecoder` takes bytes as they arrive and returns whole
payloads; a frame over the limit raises :class:`ProtocolError` *before* its body is
buffered, so a hostile peer cannot make us allocate more than one frame's worth.

Messages: a payload is one type byte followed by fields.  Unsigned integers are lib0
variable-length integers (the encoding y-protocols uses), byte strings are a varint length
then the bytes, text is UTF-8 bytes.  Yjs sync and awareness payloads travel unchanged
inside :class:`Sync` and :class:`Awareness` messages, in y-protocols encoding.

pycrdt's ``Decoder`` does not check bounds (a truncated message is silently sliced short), so
this module reads with its own bounds-checked reader; every malformed input raises
:class:`ProtocolError` and nothing else.

The limits are symmetric: :func:`encode` refuses (with :class:`ProtocolError`) every message
that :func:`decode` would refuse -- a name, document id or text over its field's limit, a
nonce or digest of the wrong length, too many or too long proofs, an integer over 70 bits --
so a message this side builds is one every peer can read.  Text chosen by a person (a device
name) is fitted to its field with :func:`clip_text` before it is put in a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

MAX_FRAME = 16 * 1024 * 1024
MAX_VARINT_BYTES = 10
MAX_UINT = 2 ** (7 * MAX_VARINT_BYTES) - 1  # the largest integer a 10-byte varint carries
PROTOCOL_VERSION = 1

NONCE_SIZE = 32
DIGEST_SIZE = 32
MAX_NAME = 256  # UTF-8 bytes of a device name in Hello
MAX_TEXT = 4096  # UTF-8 bytes of a Notice's or Bye's text
MAX_AWARENESS = 1024 * 1024
MAX_PROOFS = 64
MAX_PROOF = 256
MAX_DOC_ID = 128


class ProtocolError(ValueError):
    """Malformed or oversized input from a peer; the connection must be closed."""


# -- framing -----------------------------------------------------------------------------------


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME}")
    return len(payload).to_bytes(4, "big") + payload


class FrameDecoder:
    """Accumulates stream bytes; yields complete frame payloads."""

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._max = max_frame

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        frames: list[bytes] = []
        while len(self._buffer) >= 4:
            length = int.from_bytes(self._buffer[:4], "big")
            if length > self._max:
                raise ProtocolError(f"frame of {length} bytes exceeds the {self._max} limit")
            if len(self._buffer) < 4 + length:
                break
            frames.append(bytes(self._buffer[4 : 4 + length]))
            del self._buffer[: 4 + length]
        return frames

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buffer)


# -- field encoding ----------------------------------------------------------------------------


def clip_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, at a character boundary.

    Characters UTF-8 cannot carry (lone surrogates) become ``?``, so the result always
    encodes."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return data.decode("utf-8")
    return data[:limit].decode("utf-8", "ignore")  # drops only a character cut in half


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varints are unsigned")
    if value > MAX_UINT:
        raise ProtocolError(f"integer {value} needs more than {MAX_VARINT_BYTES} varint bytes")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class _Writer:
    def __init__(self, kind: int) -> None:
        self.parts: list[bytes] = [bytes([kind])]

    def uint(self, value: int) -> _Writer:
        self.parts.append(_varint(value))
        return self

    def blob(self, value: bytes, limit: int = MAX_FRAME, what: str = "field") -> _Writer:
        if len(value) > limit:
            raise ProtocolError(f"{what} of {len(value)} bytes exceeds its limit of {limit}")
        self.parts.append(_varint(len(value)))
        self.parts.append(value)
        return self

    def fixed(self, value: bytes, length: int, what: str) -> _Writer:
        if len(value) != length:
            raise ProtocolError(f"{what} must be {length} bytes, not {len(value)}")
        return self.blob(value)

    def text(self, value: str, limit: int, what: str) -> _Writer:
        try:
            data = value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ProtocolError(f"{what} cannot be encoded as UTF-8") from exc
        return self.blob(data, limit, what)

    def done(self) -> bytes:
        return b"".join(self.parts)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1

    def uint(self) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            if self.pos >= len(self.data):
                raise ProtocolError("truncated integer")
            byte = self.data[self.pos]
            self.pos += 1
            value |= (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                return value
        raise ProtocolError("integer too long")

    def blob(self, limit: int = MAX_FRAME) -> bytes:
        length = self.uint()
        if length > limit or self.pos + length > len(self.data):
            raise ProtocolError("truncated or oversized field")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return value

    def fixed(self, length: int) -> bytes:
        value = self.blob(length)
        if len(value) != length:
            raise ProtocolError(f"expected {length} bytes, got {len(value)}")
        return value

    def text(self, limit: int = MAX_TEXT) -> str:
        try:
            return self.blob(limit).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("text field is not UTF-8") from exc

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ProtocolError("trailing bytes after message")


# -- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    """First message on each side: protocol version, a fresh 32-byte nonce, who we are."""

    KIND: ClassVar[int] = 1
    version: int
    nonce: bytes
    name: str


@dataclass(frozen=True)
class Offer:
    """Dialer → listener: proofs for the spaces it wants (see :mod:`engine.auth`)."""

    KIND: ClassVar[int] = 2
    proofs: tuple[bytes, ...]


@dataclass(frozen=True)
class Accept:
    """Listener → dialer: one answer proof per recognised offer, in the offer's order."""

    KIND: ClassVar[int] = 3
    proofs: tuple[bytes, ...]


@dataclass(frozen=True)
class Sync:
    """A y-protocols sync message (step 1, step 2 or update) for one document."""

    KIND: ClassVar[int] = 10
    doc_id: str
    payload: bytes


@dataclass(frozen=True)
class BlobGet:
    """Ask for a blob by SHA-256, from ``offset`` (resumable)."""

    KIND: ClassVar[int] = 11
    digest: bytes
    offset: int


@dataclass(frozen=True)
class BlobData:
    """A chunk of a blob; ``total`` is the blob's whole size (0 bytes of data = not here)."""

    KIND: ClassVar[int] = 12
    digest: bytes
    offset: int
    total: int
    data: bytes


@dataclass(frozen=True)
class Awareness:
    """A y-protocols awareness update (presence: who is here, what they touched)."""

    KIND: ClassVar[int] = 13
    payload: bytes


@dataclass(frozen=True)
class Notice:
    """A human-readable refusal or warning (e.g. "read-only: update refused")."""

    KIND: ClassVar[int] = 14
    code: int
    text: str


@dataclass(frozen=True)
class Bye:
    KIND: ClassVar[int] = 15
    reason: str


Message = Hello | Offer | Accept | Sync | BlobGet | BlobData | Awareness | Notice | Bye


def encode(message: Message) -> bytes:
    """One message as a frame payload.

    Raises :class:`ProtocolError` (a ``ValueError``) for a message :func:`decode` would
    refuse, so nothing leaves this side that a peer must reject."""
    w = _Writer(message.KIND)
    match message:
        case Hello(version, nonce, name):
            w.uint(version).fixed(nonce, NONCE_SIZE, "nonce").text(name, MAX_NAME, "name")
        case Offer(proofs) | Accept(proofs):
            if len(proofs) > MAX_PROOFS:
                raise ProtocolError(f"{len(proofs)} proofs exceed the limit of {MAX_PROOFS}")
            w.uint(len(proofs))
            for proof in proofs:
                w.blob(proof, MAX_PROOF, "proof")
        case Sync(doc_id, payload):
            w.text(doc_id, MAX_DOC_ID, "document id").blob(payload)
        case BlobGet(digest, offset):
            w.fixed(digest, DIGEST_SIZE, "digest").uint(offset)
        case BlobData(digest, offset, total, data):
            w.fixed(digest, DIGEST_SIZE, "digest").uint(offset).uint(total).blob(data)
        case Awareness(payload):
            w.blob(payload, MAX_AWARENESS, "awareness update")
        case Notice(code, text):
            w.uint(code).text(text, MAX_TEXT, "notice")
        case Bye(reason):
            w.text(reason, MAX_TEXT, "reason")
    return w.done()


def decode(payload: bytes) -> Message:
    """Parse one frame payload; raises :class:`ProtocolError` on anything malformed."""
    if not payload:
        raise ProtocolError("empty message")
    r = _Reader(payload)
    kind = payload[0]
    message: Message
    if kind == Hello.KIND:
        message = Hello(r.uint(), r.fixed(NONCE_SIZE), r.text(MAX_NAME))
    elif kind in (Offer.KIND, Accept.KIND):
        count = r.uint()
        if count > MAX_PROOFS:
            raise ProtocolError("too many proofs")
        proofs = tuple(r.blob(MAX_PROOF) for _ in range(count))
        message = Offer(proofs) if kind == Offer.KIND else Accept(proofs)
    elif kind == Sync.KIND:
        message = Sync(r.text(MAX_DOC_ID), r.blob())
    elif kind == BlobGet.KIND:
        message = BlobGet(r.fixed(DIGEST_SIZE), r.uint())
    elif kind == BlobData.KIND:
        message = BlobData(r.fixed(DIGEST_SIZE), r.uint(), r.uint(), r.blob())
    elif kind == Awareness.KIND:
        message = Awareness(r.blob(MAX_AWARENESS))
    elif kind == Notice.KIND:
        message = Notice(r.uint(), r.text(MAX_TEXT))
    elif kind == Bye.KIND:
        message = Bye(r.text(MAX_TEXT))
    else:
        raise ProtocolError(f"unknown message type {kind}")
    r.end()
    return message


# -- y-protocols sync payloads (carried unchanged inside Sync messages) ------------------------

Y_SYNC = 0  # y-protocols outer message type "sync"
SYNC_STEP1 = 0
SYNC_STEP2 = 1
SYNC_UPDATE = 2


def ysync(kind: int, data: bytes) -> bytes:
    """A y-protocols sync message: ``[0, kind, varint(len), data]``."""
    return bytes([Y_SYNC, kind]) + _varint(len(data)) + data


def parse_ysync(payload: bytes) -> tuple[int, bytes]:
    """Split a y-protocols sync message into (step kind, state vector or update)."""
    if len(payload) < 3 or payload[0] != Y_SYNC or payload[1] not in (0, 1, 2):
        raise ProtocolError("not a y-protocols sync message")
    r = _Reader(payload[1:])
    data = r.blob()
    r.end()
    return payload[1], data
