"""Text edits expressed in code points, applied to a pycrdt ``Text`` in UTF-8 bytes.

pycrdt indexes ``Text`` by UTF-8 byte offset, Python strings by code point, and JavaScript Yjs
by UTF-16 unit (DESIGN §6).  An offset that lands inside a multi-byte character is silently
misplaced by pycrdt, so every conversion from code points to bytes happens here and nowhere
else.  A :class:`Splice` is ``(pos, delete, insert)`` in code points of the text it applies to,
like ``Array.prototype.splice``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pycrdt import Text


class Splice(NamedTuple):
    """Delete ``delete`` code points at ``pos``, then insert ``insert`` there."""

    pos: int
    delete: int
    insert: str


def apply_splices_to_str(text: str, splices: Sequence[Splice]) -> str:
    """Apply non-overlapping splices (any order) to a Python string; the reference semantics."""
    out: list[str] = []
    cursor = 0
    for pos, delete, insert in sorted(splices, key=lambda s: s.pos):
        out.append(text[cursor:pos])
        out.append(insert)
        cursor = pos + delete
    out.append(text[cursor:])
    return "".join(out)


def apply_splices(ytext: Text, current: str, splices: Sequence[Splice]) -> None:
    """Apply splices, in code points of ``current``, to ``ytext`` (whose value is ``current``).

    Splices must not overlap.  They are converted to byte offsets in one left-to-right pass and
    applied right to left, so each byte offset stays valid while the others are applied.  The
    caller owns the transaction: call this inside ``doc.transaction()`` for one save to be one
    transaction.
    """
    ordered = sorted(splices, key=lambda s: s.pos)
    byte_ops: list[tuple[int, int, str]] = []
    cp_cursor = 0
    byte_cursor = 0
    for pos, delete, insert in ordered:
        if pos < cp_cursor:
            raise ValueError("splices overlap")
        byte_cursor += len(current[cp_cursor:pos].encode("utf-8"))
        deleted_bytes = len(current[pos : pos + delete].encode("utf-8"))
        byte_ops.append((byte_cursor, deleted_bytes, insert))
        cp_cursor = pos + delete
        byte_cursor += deleted_bytes
    for offset, deleted_bytes, insert in reversed(byte_ops):
        if deleted_bytes:
            del ytext[offset : offset + deleted_bytes]
        if insert:
            ytext.insert(offset, insert)
