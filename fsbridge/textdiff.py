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
goes to ``fast_diff_match_patch`` (Google diff-match-patch in C++): a large middle line by
line, a small one run by run (words, whitespace, bracketed tokens: :func:`_diff_runs`), then
character by character inside what changed, with **no cleanup**: every character that stayed
keeps its CRDT identity.
Semantic cleanup turns two insertions separated by a short equal run into "delete the run,
insert it again with the insertions", and when two devices do that to the same run
concurrently the merge holds the run twice (found by tests/test_multidevice.py).  The differ
runs under a wall-clock limit so two unrelated texts cannot stall the event loop (when the limit
hits, the diff is coarser but still exact).  Adjacent deletes and inserts merge into one splice.
If the differ's counts ever disagree with the text lengths (a platform where ``wchar_t`` is not
one code point), the middle becomes one splice.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from fast_diff_match_patch import diff as _dmp_diff

from engine import Splice

__all__ = ["DIFF_TIME_LIMIT", "common_prefix_length", "common_suffix_length", "diff_splices"]

#: Above this many code points (both sides of the changed middle together) the diff is taken
#: line by line first, and only small changed hunks character by character.
CHAR_DIFF_LIMIT = 2048

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
    return _slide_right(old, _diff(old, new, 0, time_limit))


_OPENERS = "([{<⟦«"
_CLOSERS = ")]}>⟧»"
#: How far back from its rightmost place a run is tried for a better-aligned one.
_MAX_SLIDE_BACK = 64


def _slide_right(old: str, splices: list[Splice]) -> list[Splice]:
    """Give every pure deletion and pure insertion one canonical, well-aligned place.

    Deleting ``"⟦b⟧"`` from ``"a⟦b⟧⟦c⟧"`` may delete the characters ``"⟦b⟧"`` or ``"b⟧⟦"``:
    the same text results.  A CRDT deletes *characters*, so two devices that delete the same
    run concurrently but picked different alignments delete the union -- here a piece of the
    neighbouring ``"⟦c⟧"`` too; and an insertion placed inside a neighbour's characters is
    cut apart when a peer deletes that neighbour meanwhile.  Both were found by the model
    test (tokens lost and mangled).  So the place depends on the text around the run alone:
    the run slides as far right as it can, then back (up to ``_MAX_SLIDE_BACK`` places)
    to the rightmost place whose both ends fall on boundaries -- whitespace, an opening
    bracket where it starts, a closing one where it ends, or the text's ends -- when there is
    one.  A splice never slides into or against its neighbours.

    The splices are placed from the last one back: a splice's room to the right ends where
    its right neighbour finally sits (which only moves right), so a neighbour's slide never
    leaves a splice short of its rightmost place.  Its slide back stops at the left
    neighbour's first place, which that neighbour then slides right from, up to this one.
    """
    out: list[Splice] = []  # from the last splice back
    for i in range(len(splices) - 1, -1, -1):
        splice = splices[i]
        end = out[-1].pos - 1 if out else len(old)
        start = splices[i - 1].pos + splices[i - 1].delete + 1 if i else 0
        pos, delete, insert = splice.pos, splice.delete, splice.insert
        if delete and not insert:
            room = end - (pos + delete)
            if room > 0:
                pos += common_prefix_length(old[pos : pos + room], old[pos + delete : end])
            pos = _best_deletion_place(old, pos, delete, start)
        elif insert and not delete:
            room = end - pos
            if room > 0:
                cycle = insert * (room // len(insert) + 1)
                step = common_prefix_length(old[pos:end], cycle[:room])
                if step:
                    shift = step % len(insert)
                    insert = insert[shift:] + insert[:shift]
                    pos += step
            pos, insert = _best_insertion_place(old, pos, insert, start)
        out.append(splice if pos == splice.pos else Splice(pos, delete, insert))
    out.reverse()
    return out


def _aligned(before: str, run: str, after: str) -> bool:
    """Whether ``run``, between the characters ``before`` and ``after`` ("" at the text's
    ends), starts and ends on boundaries."""
    starts = not before or before.isspace() or before in _CLOSERS or run[0] in _OPENERS
    ends = not after or after.isspace() or after in _OPENERS or run[-1] in _CLOSERS
    return starts and ends


def _best_deletion_place(old: str, pos: int, delete: int, start: int) -> int:
    """From its rightmost place ``pos``, the deletion's best-aligned place (see above)."""
    p = pos
    for _ in range(_MAX_SLIDE_BACK + 1):
        after = old[p + delete] if p + delete < len(old) else ""
        if _aligned(old[p - 1] if p else "", old[p : p + delete], after):
            return p
        if p - 1 < start or old[p - 1] != old[p + delete - 1]:
            break
        p -= 1
    return pos


def _best_insertion_place(old: str, pos: int, insert: str, start: int) -> tuple[int, str]:
    """From its rightmost place ``pos``, the insertion's best-aligned place and text."""
    p, run = pos, insert
    for _ in range(_MAX_SLIDE_BACK + 1):
        if _aligned(old[p - 1] if p else "", run, old[p] if p < len(old) else ""):
            return p, run
        if p - 1 < start or old[p - 1] != run[-1]:
            break
        p, run = p - 1, old[p - 1] + run[:-1]
    return pos, insert


def _diff(old: str, new: str, offset: int, time_limit: float) -> list[Splice]:
    """:func:`diff_splices` with every position shifted by ``offset``."""
    if old == new:
        return []
    prefix = common_prefix_length(old, new)
    old_rest, new_rest = old[prefix:], new[prefix:]
    suffix = common_suffix_length(old_rest, new_rest)
    old_mid = old_rest[: len(old_rest) - suffix]
    new_mid = new_rest[: len(new_rest) - suffix]
    if not old_mid or not new_mid:
        # A pure insertion or deletion: the common case of a save, one splice, no differ.
        return [Splice(offset + prefix, len(old_mid), new_mid)]
    if len(old_mid) + len(new_mid) > CHAR_DIFF_LIMIT:
        return _diff_lines(old_mid, new_mid, offset + prefix, time_limit)
    # A mixed edit: widen it to the runs it touches, so that no run is split between the
    # trimmed prefix (or suffix) and the middle, and diff run by run.
    start = _run_start(old, prefix)
    end = _run_end(old, len(old) - suffix)
    if start is None or end is None:  # no boundary near: one long run, no token to keep whole
        return _diff_middle(old_mid, new_mid, offset + prefix, time_limit)
    new_end = end + len(new) - len(old)
    return _diff_runs(old[start:end], new[start:new_end], offset + start, time_limit)


#: How far the mixed middle of a save is widened, at most, to reach the boundary of a run.
_MAX_RUN_WIDENING = 256

_RUN_SPECIALS = re.escape(_OPENERS + _CLOSERS)
#: One run: a whitespace character, or an optional opening bracket, the characters up to the
#: next boundary, and an optional closing bracket (so ``⟦c0⟧`` and ``word`` are one run each).
_RUN = re.compile(rf"\s|[{re.escape(_OPENERS)}]?[^{_RUN_SPECIALS}\s]*[{re.escape(_CLOSERS)}]?")
_LAST_SPECIAL = re.compile(rf"[{_RUN_SPECIALS}\s][^{_RUN_SPECIALS}\s]*\Z")
_FIRST_SPECIAL = re.compile(rf"[{_RUN_SPECIALS}\s]")


def _is_boundary(text: str, pos: int) -> bool:
    """Whether ``pos`` falls between two runs of ``text`` (or at one of its ends)."""
    if pos <= 0 or pos >= len(text):
        return True
    before, after = text[pos - 1], text[pos]
    return before in _CLOSERS or before.isspace() or after in _OPENERS or after.isspace()


def _run_start(text: str, pos: int) -> int | None:
    """The last boundary at or before ``pos``, or None if none is within reach."""
    if _is_boundary(text, pos):
        return pos
    low = max(0, pos - _MAX_RUN_WIDENING)
    found = _LAST_SPECIAL.search(text, low, pos)
    if found is None:
        return 0 if low == 0 else None
    i = found.start()
    return i if text[i] in _OPENERS else i + 1


def _run_end(text: str, pos: int) -> int | None:
    """The first boundary at or after ``pos``, or None if none is within reach."""
    if _is_boundary(text, pos):
        return pos
    high = min(len(text), pos + _MAX_RUN_WIDENING)
    found = _FIRST_SPECIAL.search(text, pos, high)
    if found is None:
        return len(text) if high == len(text) else None
    i = found.start()
    return i + 1 if text[i] in _CLOSERS else i


def _runs(text: str) -> list[str]:
    """``text`` cut at every boundary: whitespace, before an opener, after a closer."""
    return [run for run in _RUN.findall(text) if run]


def _diff_runs(old_mid: str, new_mid: str, offset: int, time_limit: float) -> list[Splice]:
    """A mixed middle that starts and ends on boundaries: diff whole runs, then characters.

    A run (a word, a bracketed token such as ``⟦c0⟧``) that stayed keeps its identity whole.
    The character differ alone would prefer a longer common subsequence that crosses runs --
    ``⟦⟧⟦0⟧`` over ``⟦c0⟧`` when one token is deleted and another typed in one save -- and a
    peer deleting one of those tokens meanwhile then cuts the other apart (found by the model
    test).  A hunk of changed runs is refined character by character, unless that would keep
    part of a bracketed run and delete the rest of it: then its runs are replaced whole.
    """
    old_runs, new_runs = _runs(old_mid), _runs(new_mid)

    def refine(before_runs: list[str], after_runs: list[str]) -> list[Splice]:
        before, after = "".join(before_runs), "".join(after_runs)
        refined = _diff_middle(before, after, 0, time_limit) if before and after else []
        if refined and not _cuts_a_bracketed_run(before_runs, refined):
            return refined
        return [Splice(0, len(before), after)]

    splices = _diff_pieces(old_runs, new_runs, offset, time_limit, refine)
    return splices if splices is not None else _diff_middle(old_mid, new_mid, offset, time_limit)


def _cuts_a_bracketed_run(runs: list[str], splices: list[Splice]) -> bool:
    """Whether ``splices`` (positions in ``"".join(runs)``) delete part of a run that holds a
    bracket, but not all of it."""
    deleted = [(s.pos, s.pos + s.delete) for s in splices if s.delete]
    start = 0
    for run in runs:
        end = start + len(run)
        if any(c in _OPENERS or c in _CLOSERS for c in run):
            covered = sum(max(0, min(end, b) - max(start, a)) for a, b in deleted)
            if 0 < covered < len(run):
                return True
        start = end
    return False


def _encode(items: list[str], codes: dict[str, str]) -> str:
    """One character per distinct item (shared through ``codes``), so the differ compares
    whole lines or runs."""
    out = []
    for item in items:
        code = codes.get(item)
        if code is None:
            n = len(codes) + 1
            code = chr(n if n < 0xD800 else n + 0x800)  # never a surrogate
            codes[item] = code
        out.append(code)
    return "".join(out)


def _diff_lines(old_mid: str, new_mid: str, offset: int, time_limit: float) -> list[Splice]:
    """A large middle: diff whole lines, then characters only inside small changed hunks.

    A file rewritten from end to end (a checkout, a formatter, a paste over everything)
    shares only coincidental characters with its old version; a character diff of it costs
    tens of milliseconds and hundreds of one-letter splices that mean nothing.  Lines that
    stayed keep their identity; a hunk of changed lines is refined character by character
    when it is small (a typed word in an edited line merges with a peer's edit of the same
    line), and replaced as a whole otherwise.
    """
    old_lines = old_mid.splitlines(keepends=True)
    new_lines = new_mid.splitlines(keepends=True)

    def refine(before_lines: list[str], after_lines: list[str]) -> list[Splice]:
        before, after = "".join(before_lines), "".join(after_lines)
        if not before or not after or len(before) + len(after) > CHAR_DIFF_LIMIT:
            return [Splice(0, len(before), after)]
        return _diff(before, after, 0, time_limit)

    splices = _diff_pieces(old_lines, new_lines, offset, time_limit, refine)
    return splices if splices is not None else [Splice(offset, len(old_mid), new_mid)]


def _diff_pieces(
    old: list[str],
    new: list[str],
    offset: int,
    time_limit: float,
    refine: Callable[[list[str], list[str]], list[Splice]],
) -> list[Splice] | None:
    """Diff two sequences of pieces of text (lines, runs), each piece compared whole; each
    hunk of changed pieces becomes ``refine(old pieces, new pieces)``, shifted to where the
    hunk starts.  ``None`` if the differ's counts are not the sequences' lengths."""
    codes: dict[str, str] = {}
    ops: list[tuple[str, int]] = _dmp_diff(
        _encode(old, codes),
        _encode(new, codes),
        timelimit=time_limit,
        checklines=False,
        cleanup=_CLEANUP,
        counts_only=True,
    )
    if not _counts_match(ops, len(old), len(new)):
        return None
    splices: list[Splice] = []
    old_i = new_i = 0
    old_pos = 0  # code points into the old text
    hunk: tuple[int, int, int] | None = None  # old piece, new piece, old_pos where it began

    def flush(start: tuple[int, int, int]) -> None:
        first_old, first_new, at = start
        for s in refine(old[first_old:old_i], new[first_new:new_i]):
            splices.append(Splice(offset + at + s.pos, s.delete, s.insert))

    for op, count in ops:
        if count == 0:
            continue
        if op == "=":
            if hunk is not None:
                flush(hunk)
                hunk = None
        elif hunk is None:
            hunk = (old_i, new_i, old_pos)
        if op != "+":
            old_pos += sum(map(len, old[old_i : old_i + count]))
            old_i += count
        if op != "-":
            new_i += count
    if hunk is not None:
        flush(hunk)
    return _merge_touching(splices)


def _merge_touching(splices: list[Splice]) -> list[Splice]:
    """Join splices where one ends exactly where the next begins (kept strictly apart)."""
    out: list[Splice] = []
    for splice in splices:
        if out and out[-1].pos + out[-1].delete == splice.pos:
            last = out.pop()
            splice = Splice(last.pos, last.delete + splice.delete, last.insert + splice.insert)
        out.append(splice)
    return out


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
