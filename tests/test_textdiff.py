"""Tests for fsbridge.textdiff: splices rebuild the new text, in a str and in a pycrdt Text.

Splices from ``diff_splices`` are sorted ascending by ``pos`` and strictly separated
(``s.pos + s.delete < next.pos``); every property below asserts that shape too.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from hypothesis import example, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from engine import Splice, apply_splices, apply_splices_to_str
from fsbridge import textdiff
from fsbridge.textdiff import (
    CHAR_DIFF_LIMIT,
    common_prefix_length,
    common_suffix_length,
    diff_splices,
)

BOM = "\ufeff"

# Tokens chosen so that texts share many substrings (multi-hunk diffs) and edits land next to
# multi-byte characters: 2-byte é, 3-byte CJK and BOM, 4-byte emoji, and CRLF as one token.
TOKENS = ["a", "b", " ", "\n", "\r\n", "\r", "é", "漢", "字", "😀", "🎉", "\ufeff", "\x00", "ab"]

token_text = st.lists(st.sampled_from(TOKENS), max_size=60).map("".join)
any_text = st.text(max_size=80)
wide_text = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "P", "S", "Z", "Cc", "Mn"]),
    max_size=80,
)
# Longer, line-structured texts: past 100 code points the differ goes line-first (checklines).
line_text = st.lists(
    st.tuples(token_text, st.sampled_from(["\n", "\r\n"])), min_size=5, max_size=40
).map(lambda lines: "".join(body + end for body, end in lines))
texts = st.one_of(token_text, any_text, wide_text, line_text)


@st.composite
def edited(draw: st.DrawFn, base: st.SearchStrategy[str] = texts) -> tuple[str, str]:
    """An ``old`` text and a ``new`` one made from it by runs inserted and deleted at places."""
    old = draw(base)
    if draw(st.booleans()):
        old = BOM + old
    new = old
    for _ in range(draw(st.integers(min_value=0, max_value=6))):
        pos = draw(st.integers(min_value=0, max_value=len(new)))
        delete = draw(st.integers(min_value=0, max_value=min(8, len(new) - pos)))
        insert = draw(st.one_of(st.just(""), token_text, st.text(max_size=6)))
        new = new[:pos] + insert + new[pos + delete :]
    return old, new


pairs = st.one_of(edited(), st.tuples(texts, texts))


def assert_well_formed(old: str, splices: Sequence[Splice]) -> None:
    """Ascending, strictly separated, non-empty, and inside ``old``."""
    previous_end = -1
    for splice in splices:
        assert splice.pos > previous_end, splices
        assert splice.delete > 0 or splice.insert, splices
        assert splice.delete >= 0
        previous_end = splice.pos + splice.delete
        assert previous_end <= len(old)


def apply_to_crdt(old: str, splices: Sequence[Splice]) -> str:
    doc: Doc[Text] = Doc()
    text = doc.get("content", type=Text)
    with doc.transaction():
        text += old
    assert str(text) == old
    with doc.transaction():
        apply_splices(text, old, splices)
    return str(text)


@given(pairs)
@settings(max_examples=400)
@example(("héllo😀x", "hé😀llo😀y"))
@example((BOM + "a\r\nb\r\n", BOM + "a\r\nB\r\nc\r\n"))
@example((BOM + "x", "x"))
@example(("a\r\nb", "a\nb"))
@example(("", "漢字"))
@example(("😀", ""))
def test_splices_rebuild_new_string(pair: tuple[str, str]) -> None:
    old, new = pair
    splices = diff_splices(old, new)
    assert_well_formed(old, splices)
    assert apply_splices_to_str(old, splices) == new
    assert (splices == []) == (old == new)


@given(pairs)
@settings(max_examples=300)
@example(("héllo😀x", "hé😀llo😀y"))
@example(("😀😀😀", "😀🎉😀"))
@example(("a漢b字c", "a字b漢c"))
@example(("éé", "éxé"))
@example((BOM + "a\r\n😀\r\n", "a\r\n😀😀\r\n"))
@example(("x😀y😀z", "x🎉y🎉z"))
def test_splices_rebuild_new_in_pycrdt_text(pair: tuple[str, str]) -> None:
    old, new = pair
    assert apply_to_crdt(old, diff_splices(old, new)) == new


def test_equal_texts_give_no_splices() -> None:
    assert diff_splices("", "") == []
    assert diff_splices(BOM + "same\r\n😀", BOM + "same\r\n😀") == []


def test_single_insertion_in_large_text_is_one_splice() -> None:
    line = "Lorem ipsum é 漢字 😀 dolor sit amet\r\n"
    old = line * 3000
    middle = len(line) * 1500 + 7
    new = old[:middle] + "INSERTED 🎉" + old[middle:]
    splices = diff_splices(old, new)
    assert splices == [Splice(middle, 0, "INSERTED 🎉")]
    assert apply_to_crdt(old, splices) == new


def test_single_deletion_in_large_text_is_one_splice() -> None:
    old = "".join(f"line {i} é😀\n" for i in range(5000))
    start = old.index("line 2500 ")
    removed = len("line 2500 é😀\n")
    new = old[:start] + old[start + removed :]
    # Trimming slides the deletion past the "line 250" that the next line shares with it.
    assert diff_splices(old, new) == [Splice(start + len("line 250"), removed, "")]


def test_two_far_apart_deletions_are_two_splices() -> None:
    # Relay's diff3 misplaced edits when one save deleted text in two places (DESIGN §6).
    lines = [f"paragraph {i}: some text with é and 😀 in it\n" for i in range(2000)]
    old = "".join(lines)
    first, second = 300, 1700
    new = "".join(line for i, line in enumerate(lines) if i not in (first, second))
    first_pos = sum(len(line) for line in lines[:first])
    second_pos = sum(len(line) for line in lines[:second])
    splices = diff_splices(old, new)
    assert len(splices) == 2
    for splice, pos, removed in zip(
        splices, (first_pos, second_pos), (lines[first], lines[second]), strict=True
    ):
        # The differ may slide a deleted line along equal text, but not away from it.
        assert splice.insert == ""
        assert splice.delete == len(removed)
        assert old[splice.pos : splice.pos + splice.delete].strip() != ""
        assert abs(splice.pos - pos) < len(removed)
    assert apply_splices_to_str(old, splices) == new
    assert apply_to_crdt(old, splices) == new


def test_two_far_apart_replacements_are_two_splices_in_order() -> None:
    old = "".join(f"{i:05d} the quick brown fox\n" for i in range(4000))
    a = old.index("00100 the quick")
    b = old.index("03900 the quick")
    new = old[:a] + "00100 the QUICK" + old[a + 15 : b] + "03900 the slow" + old[b + 15 :]
    splices = diff_splices(old, new)
    assert len(splices) == 2
    assert splices[0].pos < splices[1].pos
    assert a <= splices[0].pos < a + 15
    assert b <= splices[1].pos < b + 15
    assert apply_to_crdt(old, splices) == new


def test_bom_and_crlf_are_preserved() -> None:
    old = BOM + "one\r\ntwo\r\nthree\r\n"
    new = BOM + "one\r\n2\r\nthree\r\nfour\r\n"
    splices = diff_splices(old, new)
    assert apply_splices_to_str(old, splices) == new
    assert apply_to_crdt(old, splices) == new
    assert diff_splices(old, old[1:]) == [Splice(0, 1, "")]
    assert diff_splices(old, old.replace("\r\n", "\n")) != []
    assert apply_splices_to_str(old, diff_splices(old, old.replace("\r\n", "\n"))) == old.replace(
        "\r\n", "\n"
    )


def test_unrelated_texts_are_still_exact() -> None:
    old = "".join(chr(0x4E00 + (i * 7919) % 500) for i in range(3000))
    new = "".join(chr(0x1F600 + (i * 104729) % 60) for i in range(3000))
    splices = diff_splices(old, new)
    assert_well_formed(old, splices)
    assert apply_to_crdt(old, splices) == new


@given(st.text(max_size=40), st.text(max_size=40))
def test_common_prefix_and_suffix_lengths(a: str, b: str) -> None:
    p = common_prefix_length(a, b)
    assert a[:p] == b[:p]
    assert p == min(len(a), len(b)) or a[p] != b[p]
    s = common_suffix_length(a, b)
    assert a[len(a) - s :] == b[len(b) - s :]
    assert s == min(len(a), len(b)) or a[len(a) - s - 1] != b[len(b) - s - 1]


# -- large middles: lines first --------------------------------------------------------------

long_line = st.lists(st.sampled_from(TOKENS), min_size=8, max_size=40).map("".join)
large_text = st.lists(
    st.tuples(long_line, st.sampled_from(["\n", "\r\n", ""])), min_size=20, max_size=120
).map(lambda parts: "".join(a + b for a, b in parts))


@given(st.one_of(edited(large_text), st.tuples(large_text, large_text)))
@settings(max_examples=50, deadline=None)
def test_large_changes_go_through_lines_and_still_rebuild_exactly(pair: tuple[str, str]) -> None:
    old, new = pair
    splices = diff_splices(old, new)
    assert_well_formed(old, splices)
    assert apply_splices_to_str(old, splices) == new
    assert apply_to_crdt(old, splices) == new


def test_a_card_rewritten_end_to_end_is_a_few_splices_not_hundreds() -> None:
    old = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(40))
    new = "".join(
        f"row {i}: pack my box with five dozen liquor jugs, said she\n" for i in range(40)
    )
    assert len(old) + len(new) > CHAR_DIFF_LIMIT
    splices = diff_splices(old, new)
    assert apply_splices_to_str(old, splices) == new
    assert len(splices) == 1  # every line changed: one hunk, replaced whole


def test_a_small_edit_inside_a_large_change_is_still_merged_character_by_character() -> None:
    lines = [f"paragraph {i} stays exactly as it was before\n" for i in range(80)]
    old = "".join(lines)
    edited_lines = list(lines)
    edited_lines[3] = "paragraph 3 stays exactly as it was, mostly, before\n"
    edited_lines[76] = "paragraph 76 stays as it was before\n"
    new = "".join(edited_lines)
    assert len(old) + len(new) - 2 * 3 * len(lines[0]) > CHAR_DIFF_LIMIT  # a large middle
    splices = diff_splices(old, new)
    assert apply_splices_to_str(old, splices) == new
    inserted = "".join(s.insert for s in splices)
    assert inserted == ", mostly,"  # only the typed characters, not whole lines


@given(pairs)
@settings(max_examples=300)
@example(("a⟦b⟧⟦c⟧", "a⟦c⟧"))
@example(("xabab", "xab"))
@example(("aaaa", "aaaaaa"))
@example(("⟦d0-2😀⟧⟦c1⟧\n", "⟦d0-3日本⟧⟦d0-2😀⟧⟦c1⟧\n"))
# Found by this property in a clean clone: the "\n" inserted at 3 slides right to 4, which
# leaves room for the "\r0" inserted at 2 to slide right too.
@example(("ab\r\n", "0\r0\r0\r0\r0\rb\r0\r\n\n"))
def test_pure_deletions_and_insertions_sit_aligned_or_as_far_right_as_they_can(
    pair: tuple[str, str],
) -> None:
    old, new = pair
    splices = diff_splices(old, new)
    for i, splice in enumerate(splices):
        end = splices[i + 1].pos - 1 if i + 1 < len(splices) else len(old)
        p = splice.pos
        before = old[p - 1] if p else ""
        if splice.delete and not splice.insert:
            run = old[p : p + splice.delete]
            after = old[p + splice.delete] if p + splice.delete < len(old) else ""
            rightmost = not (p + splice.delete < end and old[p] == old[p + splice.delete])
        elif splice.insert and not splice.delete:
            run, after = splice.insert, (old[p] if p < len(old) else "")
            rightmost = not (p < end and splice.insert[0] == old[p])
        else:
            continue
        assert rightmost or textdiff._aligned(before, run, after), splices


def test_a_token_typed_before_a_token_that_shares_its_start_is_inserted_whole() -> None:
    """Both tokens start with "⟦d0-": the prefix trim alone would insert "3日本⟧⟦d0-" after
    the old token's "⟦d0-", and a peer deleting the old token meanwhile would cut the new
    one apart (found by the model test)."""
    old = "⟦d0-2😀⟧⟦c1⟧\n"
    assert diff_splices(old, "⟦d0-3日本⟧" + old) == [Splice(0, 0, "⟦d0-3日本⟧")]


def test_one_run_deleted_on_two_devices_at_once_deletes_nothing_else() -> None:
    """The second device's save also inserted at the start, so its deletion came out of the
    differ of the middle rather than the prefix trim; both must delete the same characters."""
    old = "⟦c1⟧\nhello⟦d0-6é⟧⟦d0-4ß⟧ ✓\n"
    mine = "⟦c1⟧\nhello⟦d0-4ß⟧ ✓\n"
    theirs = "⟦new⟧⟦c1⟧\nhello⟦d0-4ß⟧ ✓\n"
    origin: Doc[Text] = Doc()
    with origin.transaction():
        origin.get("content", type=Text).insert(0, old)
    docs: list[Doc[Text]] = []
    for new in (mine, theirs):
        doc: Doc[Text] = Doc()
        doc.apply_update(origin.get_update())
        with doc.transaction():
            apply_splices(doc.get("content", type=Text), old, diff_splices(old, new))
        docs.append(doc)
    docs[0].apply_update(docs[1].get_update())
    assert str(docs[0].get("content", type=Text)) == "⟦new⟧⟦c1⟧\nhello⟦d0-4ß⟧ ✓\n"


def merged(old: str, *news: str) -> str:
    """Each device diffs ``old`` to its ``new`` and applies the splices; all merge."""
    origin: Doc[Text] = Doc()
    with origin.transaction():
        origin.get("content", type=Text).insert(0, old)
    docs: list[Doc[Text]] = []
    for new in news:
        doc: Doc[Text] = Doc()
        doc.apply_update(origin.get_update())
        with doc.transaction():
            apply_splices(doc.get("content", type=Text), old, diff_splices(old, new))
        docs.append(doc)
    for doc in docs[1:]:
        docs[0].apply_update(doc.get_update())
    return str(docs[0].get("content", type=Text))


def test_a_token_replaced_next_to_another_keeps_the_other_whole() -> None:
    """One save deletes ⟦d0-2😀⟧ and types ⟦d1-3日本⟧ at the start; a peer deletes ⟦d0-2😀⟧
    meanwhile.  A character diff keeps ⟦c0⟧'s ⟦ for the new token and ⟦d0-2😀⟧'s ⟧ for
    ⟦c0⟧, and the merge cut ⟦c0⟧ apart (found by the model test)."""
    old = "⟦c0⟧⟦d0-2😀⟧hello"
    mine = "⟦d1-3日本⟧⟦c0⟧hello"
    theirs = "⟦c0⟧hello"
    assert merged(old, mine, theirs) == "⟦d1-3日本⟧⟦c0⟧hello"


@given(st.text(alphabet="ab ⟦⟧(){}[]<>«»\n\t\u3000", max_size=60))
def test_runs_cut_a_text_at_its_boundaries_and_lose_nothing(text: str) -> None:
    runs = textdiff._runs(text)
    assert "".join(runs) == text
    start = 0
    for run in runs:
        assert run
        assert textdiff._is_boundary(text, start)
        assert not any(textdiff._is_boundary(text, start + i) for i in range(1, len(run)))
        start += len(run)


_SEPARATORS = ["", " ", "\n"]


@st.composite
def token_edits(draw: st.DrawFn) -> tuple[str, list[str], str, str]:
    """A text of unique tokens and two devices' saves of it, each dropping some tokens and
    typing new ones at token boundaries, several edits per save (as the model test does)."""
    count = draw(st.integers(min_value=1, max_value=8))
    pieces = [f"⟦c{i}{draw(st.sampled_from(['', '😀', '日本', 'é']))}⟧" for i in range(count)]
    pieces = [piece + draw(st.sampled_from(_SEPARATORS)) for piece in pieces]
    old = draw(st.sampled_from(["", "hello", "x "])) + "".join(pieces)
    tokens = [piece.strip() for piece in pieces]
    saves = []
    for device in (1, 2):
        text = old
        for n in range(draw(st.integers(min_value=1, max_value=4))):
            present = [t for t in tokens if t in text]
            drop: bool = draw(st.booleans())
            if present and drop:
                text = text.replace(draw(st.sampled_from(present)), "", 1)
            else:
                spots = [0, len(text)] + [text.index(t) for t in present]
                spot = draw(st.sampled_from(spots))
                new_token = f"⟦d{device}-{n}{draw(st.sampled_from(['', '😀', '日本']))}⟧"
                text = text[:spot] + new_token + text[spot:]
        saves.append(text)
    return old, tokens, saves[0], saves[1]


@given(token_edits())
@settings(max_examples=500)
@example(("⟦c0⟧⟦d0-2😀⟧hello", ["⟦c0⟧", "⟦d0-2😀⟧"], "⟦d1-3日本⟧⟦c0⟧hello", "⟦c0⟧hello"))
def test_concurrent_token_edits_merge_with_every_token_whole(
    case: tuple[str, list[str], str, str],
) -> None:
    """Every token that neither save dropped, and every token either typed, is in the merge
    exactly once and whole -- whatever mix of drops and insertions each save holds."""
    old, tokens, mine, theirs = case
    result = merged(old, mine, theirs)
    kept = [t for t in tokens if t in mine and t in theirs]
    typed: list[str] = re.findall(r"⟦d[^⟧]*⟧", mine + theirs)
    for token in kept + typed:
        assert result.count(token) == 1, (token, result)
    dropped = [t for t in tokens if t not in kept]
    for token in dropped:
        assert token not in result, (token, result)
