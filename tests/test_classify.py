"""Tests for fsbridge.classify: text/binary decision and exact text round trips."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fsbridge.classify import TEXT_LIMIT, classify, decode_text, encode_text


def test_examples() -> None:
    assert classify(b"") == "text"
    assert classify(b"hello\n") == "text"
    assert classify(b"line\r\nline\r\n") == "text"
    assert classify(b"\xef\xbb\xbfbom first\n") == "text"
    assert classify("héllo😀".encode()) == "text"
    assert classify(b"a\x00b") == "binary"
    assert classify(b"\x89PNG\r\n\x1a\n") == "binary"
    assert classify(b"\xff\xfe") == "binary"
    assert classify(b"\xed\xa0\x80") == "binary"  # an encoded surrogate is not UTF-8
    assert classify(b"\xc0\xaf") == "binary"  # overlong
    assert classify("truncated é".encode()[:-1]) == "binary"


def test_size_limit() -> None:
    assert classify(b"a" * TEXT_LIMIT) == "text"
    assert classify(b"a" * (TEXT_LIMIT + 1)) == "binary"


def test_bom_and_line_endings_are_kept() -> None:
    data = b"\xef\xbb\xbfa\r\nb\rc\n"
    text = decode_text(data)
    assert text == "\ufeffa\r\nb\rc\n"
    assert encode_text(text) == data


@given(st.binary())
def test_round_trip_of_any_text_bytes(data: bytes) -> None:
    if classify(data) == "text":
        assert encode_text(decode_text(data)) == data


@given(st.text())
def test_round_trip_of_encoded_strings(text: str) -> None:
    data = text.encode("utf-8", errors="surrogatepass")
    if "\x00" in text or any(0xD800 <= ord(c) <= 0xDFFF for c in text):
        assert classify(data) == "binary"
    else:
        assert classify(data) == "text"
        assert encode_text(decode_text(data)) == data
        assert decode_text(encode_text(text)) == text


@given(st.binary(), st.binary())
def test_text_with_nul_is_binary(before: bytes, after: bytes) -> None:
    assert classify(before + b"\x00" + after) == "binary"
