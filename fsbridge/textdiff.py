"""Diff two versions of a text into :class:`~engine.text_edits.Splice` edits for ingest.

This module owns turning "the file's base" and "what is on disk now" into the edits that one
save applies to a CRDT ``Text`` (DESIGN §3).  It computes; it never touches a document — the
caller applies the result with :func:`engine.text_edits.apply_splices` inside one transaction.

Invariants of :func:`diff_splices(old, new) <diff_splices>`:

- ``apply_splices_to_str(old, diff_splices(old, new)) == new``, for every pair of ``str``.
- Positions and lengths are code points of ``old`` (never bytes, never UTF-16 units); the
  conversion to pycrdt's UTF-8 byte offsets belongs to ``engine.text_edits`` alone.
- Splices come sorted ascending by ``pos`` and are strictly separated: each one ends before the
  next begins (``s.pos + s.delete < next.pos``), and none is empty.  Equal texts give ``[]``.
- Every character is just a character: a BOM, ``\\r\\n``, NUL, accents, CJK and emoji are kept
  and diffed like any other code point.

Strategy (DESIGN §3, §7): trim the common prefix and suffix first, which costs a few
memcmp-speed slice comparisons, so the usual save (one typed or deleted run) is O(n) with tiny
constants and yields exactly one splice without calling the differ.  What remains in the middle
goes to ``fast_diff_match_patch`` (Google diff-match-patch in C++), line-first
(``checklines``), with **no cleanup**: every character that stayed keeps its CRDT identity.
Semantic cleanup turns two insertions separated by a short equal run into "delete the run,
insert it again with the insertions", and when two devices do that to the same run
concurrently the merge holds the run twice (found by tests/test_multidevice.py).  The differ
runs under a wall-clock limit so two unrelated texts cannot stall the event loop (when the limit
hits, the diff is coarser but still exact).  Adjacent deletes and inserts merge into one splice.
If the differ's counts ever disagree with the text lengths (a platform where ``wchar_t`` is not
one code point), the middle becomes one splice.
"""

from __future__ import annotations

from fast_diff_match_patch import diff as _dmp_diff

from engine import Splice

__all__ = ["DIFF_TIME_LIMIT", "common_prefix_length", "common_suffix_length", "diff_splices"]

#: Seconds diff-match-patch may spend on the middle before it settles for a coarser (still exact)
#: diff.  Zero would mean "no limit": two unrelated 100 KB texts then take tens of seconds.
DIFF_TIME_LIMIT = 0.1

# fast_diff_match_patch matches ``cleanup`` case-sensitively; "No" keeps the minimal diff.
_CLEANUP = "No"


def common_prefix_length(a: str, b: str) -> int:
    """Length of the longest common prefix of ``a`` and ``b``, in code points.

    Binary search over slice comparisons (as diff-match-patch does): each probe compares half of
    the remaining range in C, so the total work is linear and never a Python loop per character.
    """
    if not a or not b or a[0] != b[0]:
        return 0
    low, high = 0, min(len(a), len(b))
    mid = high
    start = 0
    while low < mid:
        if a[start:mid] == b[start:mid]:
            low = mid
            start = low
        else:
            high = mid
        mid = (high - low) // 2 + low
    return mid


def common_suffix_length(a: str, b: str) -> int:
    """Length of the longest common suffix of ``a`` and ``b``, in code points."""
    if not a or not b or a[-1] != b[-1]:
        return 0
    len_a, len_b = len(a), len(b)
    low, high = 0, min(len_a, len_b)
    mid = high
    end = 0
    while low < mid:
        if a[len_a - mid : len_a - end] == b[len_b - mid : len_b - end]:
            low = mid
            end = low
        else:
            high = mid
        mid = (high - low) // 2 + low
    return mid


def diff_splices(old: str, new: str, *, time_limit: float = DIFF_TIME_LIMIT) -> list[Splice]:
    """Return splices, in code points of ``old``, that turn ``old`` into ``new``.

    The result is sorted ascending by position, strictly non-overlapping and non-adjacent, and
    ``[]`` when the texts are equal.  ``time_limit`` bounds the character diff of the middle (in
    seconds, must be positive); it only trades minimality for speed, never correctness.
    """
    if old == new:
        return []
    prefix = common_prefix_length(old, new)
    old_rest, new_rest = old[prefix:], new[prefix:]
    suffix = common_suffix_length(old_rest, new_rest)
    old_mid = old_rest[: len(old_rest) - suffix]
    new_mid = new_rest[: len(new_rest) - suffix]
    if not old_mid or not new_mid:
        # A pure insertion or deletion: the common case of a save, one splice, no differ.
        return [Splice(prefix, len(old_mid), new_mid)]
    return _diff_middle(old_mid, new_mid, prefix, time_limit)


def _diff_middle(old_mid: str, new_mid: str, offset: int, time_limit: float) -> list[Splice]:
    """Diff two texts that differ at both ends; positions are shifted by ``offset``."""
    if time_limit <= 0:
        raise ValueError("time_limit must be positive (zero means unbounded to the differ)")
    ops: list[tuple[str, int]] = _dmp_diff(
        old_mid,
        new_mid,
        timelimit=time_limit,
        checklines=True,
        cleanup=_CLEANUP,
        counts_only=True,
    )
    if not _counts_match(ops, len(old_mid), len(new_mid)):
        return [Splice(offset, len(old_mid), new_mid)]

    splices: list[Splice] = []
    old_pos = 0  # in old_mid
    new_pos = 0  # in new_mid
    hunk_start = -1  # old_pos where the pending hunk began, -1 when none is pending
    hunk_delete = 0
    hunk_insert_start = 0  # new_pos where the pending hunk's inserted text begins
    for op, count in ops:
        if count == 0:
            continue
        if op == "=":
            if hunk_start >= 0:
                splices.append(
                    Splice(offset + hunk_start, hunk_delete, new_mid[hunk_insert_start:new_pos])
                )
                hunk_start = -1
            old_pos += count
            new_pos += count
            continue
        if hunk_start < 0:
            hunk_start, hunk_delete, hunk_insert_start = old_pos, 0, new_pos
        if op == "-":
            hunk_delete += count
            old_pos += count
        else:  # "+"
            new_pos += count
    if hunk_start >= 0:
        splices.append(Splice(offset + hunk_start, hunk_delete, new_mid[hunk_insert_start:new_pos]))
    return splices


def _counts_match(ops: list[tuple[str, int]], old_len: int, new_len: int) -> bool:
    """Whether the differ's op counts are code points of the two texts (they are on Linux)."""
    old_total = 0
    new_total = 0
    for op, count in ops:
        if op != "+":
            old_total += count
        if op != "-":
            new_total += count
    return old_total == old_len and new_total == new_len
