"""The wire codec (engine/wire.py): frames and messages round-trip, reassemble across any
chunking, and hostile bytes raise only ProtocolError."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.wire import (
    MAX_FRAME,
    MAX_NAME,
    MAX_PROOF,
    MAX_PROOFS,
    PROTOCOL_VERSION,
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
)

# --- strategies -------------------------------------------------------------------------------

# Unsigned integers as the codec carries them (lib0 varints of at most 10 bytes = 70 bits),
# biased towards the 7-bit boundaries where varints change length.
uints = st.one_of(
    st.integers(0, 2**64),
    st.sampled_from([0, 1, 127, 128, 255, 16383, 16384, 2**32 - 1, 2**63, 2**70 - 1]),
)


# Text including non-ASCII and astral characters; sized so that its UTF-8 fits the field.
def texts(max_bytes: int) -> st.SearchStrategy[str]:
    return st.text(max_size=max_bytes // 4)


digests = st.binary(min_size=32, max_size=32)
proofs = st.lists(st.binary(max_size=MAX_PROOF), max_size=MAX_PROOFS).map(tuple)

messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Hello, uints, st.binary(min_size=32, max_size=32), texts(256)),
    st.builds(Offer, proofs),
    st.builds(Accept, proofs),
    st.builds(Sync, texts(128), st.binary(max_size=2000)),
    st.builds(BlobGet, digests, uints),
    st.builds(BlobData, digests, uints, uints, st.binary(max_size=2000)),
    st.builds(Awareness, st.binary(max_size=2000)),
    st.builds(Notice, uints, texts(4096)),
    st.builds(Bye, texts(4096)),
)


# --- messages ---------------------------------------------------------------------------------


@settings(max_examples=1000)
@given(messages)
def test_every_message_round_trips(message: Message) -> None:
    payload = encode(message)
    assert payload[0] == message.KIND
    decoded = decode(payload)
    assert decoded == message
    assert type(decoded) is type(message)


def test_each_message_type_is_covered_and_kinds_are_distinct() -> None:
    samples: list[Message] = [
        Hello(PROTOCOL_VERSION, bytes(32), "Zoë's 💻"),
        Offer((b"a" * 32, b"b" * 96)),
        Accept(()),
        Sync("späce/dőc", b"\x00\x01"),
        BlobGet(b"\x01" * 32, 5),
        BlobData(b"\x02" * 32, 0, 3, b"abc"),
        Awareness(b"{}"),
        Notice(7, "read-only: update refused — 読み取り専用"),
        Bye("bye 👋"),
    ]
    assert len({m.KIND for m in samples}) == len(samples)
    for message in samples:
        assert decode(encode(message)) == message
    # Offer and Accept share a layout but never decode as each other
    assert decode(encode(Offer((b"x",)))) != Accept((b"x",))


def test_known_encoding() -> None:
    """Pin the byte layout (type byte, lib0 varints, length-prefixed fields)."""
    assert encode(BlobGet(bytes(32), 300)) == b"\x0b\x20" + bytes(32) + b"\xac\x02"
    assert encode(Bye("é")) == b"\x0f\x02\xc3\xa9"
    assert encode(Offer((b"ab", b""))) == b"\x02\x02\x02ab\x00"


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty"),
        (b"\x00", "unknown message type"),
        (b"\xff", "unknown message type"),
        (encode(Bye("x")) + b"\x00", "trailing"),
        (b"\x01\x01\x1f" + bytes(31) + b"\x00", "expected 32"),  # 31-byte nonce
        (b"\x01\x01\x21" + bytes(33) + b"\x00", "oversized"),  # 33-byte nonce
        (b"\x02\x41", "too many proofs"),
        (b"\x02\x01\x81\x02" + bytes(256 + 1), "oversized"),  # a 257-byte proof
        (b"\x0f\x01\xff", "not UTF-8"),
        (b"\x0f\x03\xed\xa0", "truncated"),
        (b"\x0f\x03\xed\xa0\x80", "not UTF-8"),  # an encoded surrogate
        (b"\x0b\x20" + bytes(32) + b"\xff" * 11, "too long"),
        (b"\x0a\x81\x01" + b"a" * 129 + b"\x00", "oversized"),  # a 129-byte doc id
    ],
)
def test_malformed_messages_name_the_problem(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode(payload)


def _decode_or_protocol_error(payload: bytes) -> None:
    """Decoding either raises ProtocolError or yields a message that survives re-encoding."""
    try:
        message = decode(payload)
    except ProtocolError:
        return
    assert decode(encode(message)) == message


@settings(max_examples=1000)
@given(st.binary(max_size=600))
def test_decode_of_arbitrary_bytes_raises_only_protocol_error(payload: bytes) -> None:
    _decode_or_protocol_error(payload)


@settings(max_examples=1000)
@given(
    st.sampled_from([1, 2, 3, 10, 11, 12, 13, 14, 15]),
    st.binary(max_size=400),
)
def test_decode_of_arbitrary_bodies_raises_only_protocol_error(kind: int, body: bytes) -> None:
    _decode_or_protocol_error(bytes([kind]) + body)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_every_truncation_of_a_valid_message_raises_protocol_error(message: Message) -> None:
    payload = encode(message)
    for n in range(len(payload)):
        with pytest.raises(ProtocolError):
            decode(payload[:n])


@settings(max_examples=500)
@given(messages, st.data())
def test_corrupted_valid_messages_raise_only_protocol_error(
    message: Message, data: st.DataObject
) -> None:
    payload = bytearray(encode(message))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    _decode_or_protocol_error(bytes(payload))


# --- frames -----------------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.lists(st.binary(max_size=300), max_size=8), st.data())
def test_frames_reassemble_from_any_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(p) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    decoder = FrameDecoder()
    got: list[bytes] = []
    for chunk in chunks:
        got += decoder.feed(chunk)
    assert got == payloads
    assert decoder.pending == 0


@settings(max_examples=200)
@given(st.lists(messages, min_size=1, max_size=5), st.integers(1, 7))
def test_messages_over_frames_byte_by_byte(messages_: list[Message], step: int) -> None:
    stream = b"".join(encode_frame(encode(m)) for m in messages_)
    decoder = FrameDecoder()
    got: list[Message] = []
    for i in range(0, len(stream), step):
        got += [decode(f) for f in decoder.feed(stream[i : i + step])]
    assert got == messages_


def test_oversized_length_prefix_raises_before_buffering() -> None:
    decoder = FrameDecoder()
    header = (MAX_FRAME + 1).to_bytes(4, "big")
    assert decoder.feed(header[:3]) == []  # not yet a whole header: nothing to judge
    with pytest.raises(ProtocolError, match="exceeds"):
        decoder.feed(header[3:])  # only the header has arrived: no body was waited for
    assert decoder.pending == 4


def test_largest_length_prefix_raises_at_once() -> None:
    with pytest.raises(ProtocolError):
        FrameDecoder().feed(b"\xff\xff\xff\xff")


def test_frame_at_the_limit_is_accepted_and_custom_limits_apply() -> None:
    decoder = FrameDecoder(max_frame=10)
    assert decoder.feed(encode_frame(b"0123456789")) == [b"0123456789"]
    with pytest.raises(ProtocolError):
        decoder.feed((11).to_bytes(4, "big"))
    # a header at exactly the default limit is waited on, not refused
    big = FrameDecoder()
    assert big.feed(MAX_FRAME.to_bytes(4, "big")) == []
    assert big.pending == 4


def test_encode_frame_refuses_oversized_payloads() -> None:
    with pytest.raises(ProtocolError):
        encode_frame(bytes(MAX_FRAME + 1))


def test_frames_after_a_good_frame_in_one_feed() -> None:
    decoder = FrameDecoder(max_frame=10)
    with pytest.raises(ProtocolError):
        decoder.feed(encode_frame(b"ok") + (1000).to_bytes(4, "big"))


def test_empty_frame_is_a_frame_but_not_a_message() -> None:
    assert FrameDecoder().feed(encode_frame(b"")) == [b""]
    with pytest.raises(ProtocolError, match="empty"):
        decode(b"")


# --- encode refuses what decode refuses -------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(Hello(PROTOCOL_VERSION, bytes(32), "📌" * 65), id="long-device-name"),
        pytest.param(Hello(PROTOCOL_VERSION, bytes(31), "x"), id="short-nonce"),
        pytest.param(Hello(PROTOCOL_VERSION, bytes(32), "\ud800"), id="name-not-utf8"),
        pytest.param(Offer((b"p",) * (MAX_PROOFS + 1)), id="too-many-proofs"),
        pytest.param(Accept((bytes(MAX_PROOF + 1),)), id="long-proof"),
        pytest.param(Sync("d" * 129, b""), id="long-doc-id"),
        pytest.param(BlobGet(bytes(31), 0), id="short-digest"),
        pytest.param(BlobData(bytes(33), 0, 0, b""), id="long-digest"),
        pytest.param(Awareness(bytes(1024 * 1024 + 1)), id="big-awareness"),
        pytest.param(Notice(1, "n" * 4097), id="long-notice"),
        pytest.param(Bye("é" * 2049), id="long-bye"),
        pytest.param(BlobGet(bytes(32), 2**70), id="integer-over-70-bits"),
    ],
)
def test_encode_never_builds_what_decode_refuses(message: Message) -> None:
    """A message over one of decode's limits is refused where it is built, with
    ProtocolError: a Hello for a device whose name is over 256 UTF-8 bytes (names are not
    capped where they are chosen) must never go out, or that device could never connect."""
    with pytest.raises(ProtocolError):
        encode(message)


@pytest.mark.parametrize(
    "message",
    [
        Hello(PROTOCOL_VERSION, bytes(32), "📌" * 64),
        Offer((bytes(MAX_PROOF),) * MAX_PROOFS),
        Sync("d" * 128, b""),
        Awareness(bytes(1024 * 1024)),
        Bye("é" * 2048),
        BlobGet(bytes(32), 2**70 - 1),
    ],
    ids=["name", "proofs", "doc-id", "awareness", "bye", "integer"],
)
def test_messages_exactly_at_the_limits_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 256, "short"),
        ("a" * 300, 256, "a" * 256),
        ("📌" * 65, 256, "📌" * 64),  # 260 bytes: the whole 65th pin goes
        ("x" + "📌" * 64, 256, "x" + "📌" * 63),  # never half a character
        ("é" * 3, 5, "éé"),
        ("a\ud800b", 256, "a?b"),  # a lone surrogate (it cannot be UTF-8) becomes "?"
        ("anything", 0, ""),
    ],
)
def test_clip_text_cuts_at_a_character_boundary(text: str, limit: int, expected: str) -> None:
    clipped = clip_text(text, limit)
    assert clipped == expected
    assert len(clipped.encode("utf-8")) <= limit


@given(st.text(), st.integers(0, 300))
def test_clipped_names_always_make_a_hello_a_peer_accepts(name: str, limit: int) -> None:
    clipped = clip_text(name, min(limit, MAX_NAME))
    assert name.encode("utf-8", "replace").startswith(clipped.encode("utf-8"))
    hello = Hello(PROTOCOL_VERSION, bytes(32), clipped)
    assert decode(encode(hello)) == hello
