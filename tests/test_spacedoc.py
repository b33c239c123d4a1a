"""Reading cards out of a space document (engine/spacedoc.py)."""

from __future__ import annotations

from typing import Any

from pycrdt import Doc, Map

from engine import spacedoc


def test_only_map_entries_are_cards_and_every_field_reads_as_written() -> None:
    doc: Doc[Any] = Doc()
    cards = spacedoc.cards_map(doc)
    with doc.transaction():
        cards["c1"] = Map(
            {"kind": "text", "path": "Sub/a.md", "board": "stale", "size": 12, "z": 2.5,
             "n:x": "40", "n:color": '"4"'}
        )  # fmt: skip
        cards["c2"] = Map({"kind": "note", "board": "Sub", "deleted": "seen"})
        cards["plain"] = {"kind": "text", "path": "x.md"}  # a peer's non-map value
        cards["junk"] = "not a card"
    live = spacedoc.read_cards(doc)
    assert set(live) == {"c1"}
    c1 = live["c1"]
    assert (c1.kind, c1.path, c1.board, c1.size, c1.z) == ("text", "Sub/a.md", "Sub", 12, 2.5)
    assert c1.node == {"x": 40, "color": "4"}
    assert set(spacedoc.read_cards(doc, deleted=True)) == {"c2"}
    assert spacedoc.read_card(doc, "c1") == c1  # the one-entry reader agrees


def test_node_fields_read_twice_are_equal_and_never_shared_when_mutable() -> None:
    """Short scalar fields are decoded once and remembered; a list or object field is a new
    value at every read, so a caller changing one card's view cannot change another's."""
    doc: Doc[Any] = Doc()
    cards = spacedoc.cards_map(doc)
    fields = {"n:x": "-40", "n:w": "400", "n:c": '"4"', "n:t": "true", "n:n": "null",
              "n:f": "1.5", "n:l": "[1, 2]", "n:o": '{"a": 1}', "n:bad": "012"}  # fmt: skip
    with doc.transaction():
        cards["c1"] = Map({"kind": "text", "path": "a.md", **fields})
        cards["c2"] = Map({"kind": "text", "path": "b.md", **fields})
    first = spacedoc.read_cards(doc)
    # "012" is no JSON number: that field is dropped.
    expected = {"x": -40, "w": 400, "c": "4", "t": True, "n": None, "f": 1.5, "l": [1, 2],
                "o": {"a": 1}}  # fmt: skip
    assert first["c1"].node == first["c2"].node == expected
    first["c1"].node["l"].append(3)
    first["c1"].node["o"]["b"] = 2
    assert first["c2"].node == expected
    assert spacedoc.read_cards(doc)["c1"].node == expected
