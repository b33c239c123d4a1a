"""Whether a file's bytes make a text card or a binary card, and text's exact byte mapping.

Invariants:

* A text card is at most :data:`TEXT_LIMIT` bytes, has no NUL byte and is strict UTF-8
  (surrogate code points and overlong forms are not UTF-8).  Everything else is binary.
* For text bytes ``b``, ``encode_text(decode_text(b)) == b`` exactly: a BOM stays as a leading
  U+FEFF character and line endings (LF, CRLF, CR) are never translated.
* The decision depends on the bytes alone, so every peer classifies a file the same way.
"""

from __future__ import annotations

from typing import Literal

TEXT_LIMIT = 8 * 1024 * 1024
"""Largest text card, in bytes; a larger file is a binary card."""

Kind = Literal["text", "binary"]


def classify(data: bytes) -> Kind:
    """``"text"`` if ``data`` can be a text card, else ``"binary"``."""
    if len(data) > TEXT_LIMIT or b"\x00" in data:
        return "binary"
    try:
        data.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        return "binary"
    return "text"


def decode_text(data: bytes) -> str:
    """Text card bytes to a string; strict UTF-8, a BOM kept as ``"\\ufeff"``."""
    return data.decode("utf-8", errors="strict")


def encode_text(text: str) -> bytes:
    """The exact inverse of :func:`decode_text`; strict UTF-8 (lone surrogates raise)."""
    return text.encode("utf-8", errors="strict")
