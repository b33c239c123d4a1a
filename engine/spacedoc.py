"""The schema of a space document: which cards exist, where they sit and how they are laid out.

A space is one Yjs document with these root maps::

    cards:  card id -> Map[Any]  {kind, path, board, blob, size, z, "n:<field>": JSON}
    edges:  edge id -> Map[Any]  {board, "e:<field>": JSON}
    boards: board path -> Map[Any] {"c:<key>": JSON}   (unknown top-level canvas keys)
    meta:   {space_id}

``kind`` is one of :data:`CARD_KINDS` (plus ``group`` and ``node`` for canvas nodes that are
layout only).  ``path`` is the card's space-relative POSIX path for file and board cards and
``""`` for canvas-only cards; ``board`` is the board (folder) whose canvas shows the node.
For a card with a path the board is *read* from the path (its parent folder), never from the
stored ``board`` key: the two keys are separate last-writer-wins registers, so a rename
inside a folder on one device and a move to another folder on another could otherwise leave
a card's file in one folder and its node on another folder's canvas.  The key is still
written (older readers, and canvas-only cards, which have no path, use it).
Every JSON Canvas node field except ``id``, ``file`` (derived from ``path``) and ``text``
(the note's own text document) is kept as its own ``n:`` key, so concurrent edits of
different fields of one node both survive (last writer wins per field), and fields Tack does
not know survive untouched.  Values are JSON-encoded so ints stay ints.

Everything here is pure schema: functions read or write a ``pycrdt.Doc`` inside the caller's
transaction and never do I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

from pycrdt import Doc, Map

CardKind = Literal["text", "binary", "link", "note", "board", "group", "node"]
CARD_KINDS: tuple[str, ...] = ("text", "binary", "link", "note", "board")
FILE_KINDS: tuple[str, ...] = ("text", "binary")
CONTENT_KINDS: tuple[str, ...] = ("text", "note")  # kinds whose content is a Y.Text document
TEXT_KEY = "content"

MAX_FIELD = 64 * 1024 * 1024  # JSON bytes per field (the canvas size limit); larger: hostile
NODE_PREFIX = "n:"
EDGE_PREFIX = "e:"
CANVAS_PREFIX = "c:"

# How many replaced versions a binary card remembers (``CardView.blob_prev``): a device
# holding one of them knows that whoever replaced it, or deleted the card later, had seen it.
BLOB_HISTORY = 8


@dataclass(frozen=True)
class CardView:
    """A read-only snapshot of one card (or layout-only node) of the space document."""

    id: str
    kind: str
    path: str
    board: str
    blob: str = ""
    size: int = 0
    z: float = 0.0
    node: dict[str, Any] = field(default_factory=dict)
    # The blobs this card's blob replaced, newest first and space-separated (at most
    # BLOB_HISTORY): a version among them was seen by whoever replaced it.
    blob_prev: str = ""
    deleted: str = ""  # tombstone: what the deleter had seen (see delete_card)

    def replaced_blobs(self) -> list[str]:
        return self.blob_prev.split()

    def history_after_replacing(self, seen: str) -> str:
        """``blob_prev`` for a version made by someone whose file showed the blob ``seen``:
        ``seen`` and the versions it replaced (as far as this card's history knows them),
        never a newer version that had not reached that file."""
        chain = [self.blob, *self.replaced_blobs()]
        older = chain[chain.index(seen) :] if seen in chain else [seen]
        return " ".join([b for b in older if b][:BLOB_HISTORY])

    def geometry(self) -> tuple[int, int, int, int]:
        def num(name: str) -> int:
            value = self.node.get(name, 0)
            return int(value) if isinstance(value, int | float) else 0

        return num("x"), num("y"), num("width"), num("height")


@dataclass(frozen=True)
class EdgeView:
    id: str
    board: str
    fields: dict[str, Any]


def _root(doc: Doc[Any], name: str) -> Map[Any]:
    root: Map[Any] = doc.get(name, type=Map)
    return root


def cards_map(doc: Doc[Any]) -> Map[Any]:
    return _root(doc, "cards")


def edges_map(doc: Doc[Any]) -> Map[Any]:
    return _root(doc, "edges")


def boards_map(doc: Doc[Any]) -> Map[Any]:
    return _root(doc, "boards")


def meta_map(doc: Doc[Any]) -> Map[Any]:
    return _root(doc, "meta")


def _json_fields(raw: dict[str, Any], prefix: str) -> dict[str, Any]:
    """Decode the ``prefix``-ed JSON fields of an entry; a malformed one (from a buggy or
    hostile writer) is dropped, never raised: one bad card must not break every read."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(key, str) and key.startswith(prefix) and isinstance(value, str):
            if len(value) > MAX_FIELD:
                continue
            try:
                out[key[len(prefix) :]] = _decode_field(value)
            except (ValueError, RecursionError):
                continue
    return out


_SCALARS: dict[str, Any] = {}
"""Short field values already decoded to a number, string, boolean or null, by their JSON.
Layout fields repeat (a width of 400, a colour, a row of cards at one y), and a dictionary
lookup costs a tenth of a ``json.loads``: reading 10,000 cards decodes 40,000 fields.  Lists
and objects are never kept (a caller may change what it was given)."""
_SCALAR_JSON_MAX = 32
_SCALARS_MAX = 4096
_MISSING = object()


def _decode_field(value: str) -> Any:
    """``json.loads(value)``, remembered for short values that decode to a scalar."""
    if len(value) > _SCALAR_JSON_MAX:
        return json.loads(value)
    known = _SCALARS.get(value, _MISSING)
    if known is not _MISSING:
        return known
    decoded = json.loads(value)
    if decoded is None or isinstance(decoded, str | int | float):
        if len(_SCALARS) >= _SCALARS_MAX:
            _SCALARS.clear()
        _SCALARS[value] = decoded
    return decoded


def _text(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def folder_of(path: str) -> str:
    """The folder (board) that holds ``path``: ``""`` for the space's root."""
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _view(card_id: str, entry: Map[Any]) -> CardView:
    raw = entry.to_py() or {}
    return _view_of(card_id, raw if isinstance(raw, dict) else {})


def _view_of(card_id: str, raw: dict[str, Any]) -> CardView:
    node = _json_fields(raw, NODE_PREFIX)
    path = _text(raw.get("path"))
    return CardView(
        id=card_id,
        kind=_text(raw.get("kind"), "node"),
        path=path,
        board=folder_of(path) if path else _text(raw.get("board")),
        blob=_text(raw.get("blob")),
        size=int(_number(raw.get("size"))),
        z=_number(raw.get("z")),
        node=node,
        blob_prev=_text(raw.get("blob_prev")),
        deleted=_text(raw.get("deleted")),
    )


def read_cards(doc: Doc[Any], *, deleted: bool = False) -> dict[str, CardView]:
    """Live cards (or, with ``deleted``, only the tombstones).

    The entries' fields are read in one call (pycrdt's JSON of the map, built in Rust),
    about half the cost of reading them key by key from Python; only entries that are maps
    are cards (a peer may have put anything under the map)."""
    out: dict[str, CardView] = {}
    cards = cards_map(doc)
    try:
        everything = json.loads(str(cards))
    except (ValueError, RecursionError):
        everything = None
    if not isinstance(everything, dict):
        for card_id, entry in cards.items():
            if isinstance(entry, Map):
                view = _view(str(card_id), entry)
                if bool(view.deleted) == deleted:
                    out[str(card_id)] = view
        return out
    maps = {str(card_id) for card_id, entry in cards.items() if isinstance(entry, Map)}
    for card_id, raw in everything.items():
        if card_id in maps and isinstance(raw, dict) and bool(_text(raw.get("deleted"))) == deleted:
            out[card_id] = _view_of(card_id, raw)
    return out


def read_card(doc: Doc[Any], card_id: str) -> CardView | None:
    cards = cards_map(doc)
    if card_id not in cards:
        return None
    entry = cards[card_id]
    return _view(card_id, entry) if isinstance(entry, Map) else None


def read_edges(doc: Doc[Any]) -> dict[str, EdgeView]:
    out: dict[str, EdgeView] = {}
    for edge_id, entry in edges_map(doc).items():
        if isinstance(entry, Map):
            raw = entry.to_py() or {}
            fields = _json_fields(raw, EDGE_PREFIX)
            out[str(edge_id)] = EdgeView(str(edge_id), _text(raw.get("board")), fields)
    return out


def read_canvas_extra(doc: Doc[Any], board: str) -> dict[str, Any]:
    boards = boards_map(doc)
    if board not in boards:
        return {}
    raw = boards[board].to_py() or {}
    return _json_fields(raw, CANVAS_PREFIX) if isinstance(raw, dict) else {}


def _encode(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def put_card(doc: Doc[Any], card: CardView) -> None:
    """Create a card (or replace every field of it)."""
    entry: dict[str, Any] = {
        "kind": card.kind,
        "path": card.path,
        "board": card.board,
        "z": card.z,
    }
    if card.blob:
        entry["blob"] = card.blob
        entry["size"] = card.size
    for name, value in card.node.items():
        entry[NODE_PREFIX + name] = _encode(value)
    cards_map(doc)[card.id] = Map(entry)


def update_card(doc: Doc[Any], card_id: str, **fields: Any) -> None:
    """Set top-level fields (kind, path, board, blob, size, z) of an existing card."""
    entry = cards_map(doc)[card_id]
    for name, value in fields.items():
        if entry.get(name) != value:
            entry[name] = value


def set_node_fields(
    doc: Doc[Any], card_id: str, changes: dict[str, Any], removed: tuple[str, ...] = ()
) -> None:
    """Set (and remove) JSON Canvas node fields of a card, field by field."""
    entry = cards_map(doc)[card_id]
    for name, value in changes.items():
        encoded = _encode(value)
        if entry.get(NODE_PREFIX + name) != encoded:
            entry[NODE_PREFIX + name] = encoded
    for name in removed:
        if NODE_PREFIX + name in entry:
            del entry[NODE_PREFIX + name]


def delete_card(doc: Doc[Any], card_id: str, seen: str = "-") -> None:
    """Delete a card by leaving a tombstone that records what the deleter had ``seen``.

    ``seen`` is the base64 state vector of the card's content document (or ``-``).  A device
    that holds edits the deleter had not seen brings the card back (:func:`undelete`), so an
    edit made concurrently with a delete is never lost.
    """
    cards = cards_map(doc)
    if card_id in cards:
        cards[card_id]["deleted"] = seen or "-"


def undelete(doc: Doc[Any], card_id: str) -> None:
    cards = cards_map(doc)
    if card_id in cards and "deleted" in cards[card_id]:
        del cards[card_id]["deleted"]


def put_edge(doc: Doc[Any], edge: EdgeView) -> None:
    edges = edges_map(doc)
    if edge.id in edges and isinstance(edges[edge.id], Map):
        entry = edges[edge.id]
        if entry.get("board") != edge.board:
            entry["board"] = edge.board
        wanted = {EDGE_PREFIX + k: _encode(v) for k, v in edge.fields.items()}
        for key in [k for k in list(entry) if k.startswith(EDGE_PREFIX) and k not in wanted]:
            del entry[key]
        for key, value in wanted.items():
            if entry.get(key) != value:
                entry[key] = value
        return
    data: dict[str, Any] = {"board": edge.board}
    data.update({EDGE_PREFIX + k: _encode(v) for k, v in edge.fields.items()})
    edges[edge.id] = Map(data)


def delete_edge(doc: Doc[Any], edge_id: str) -> None:
    edges = edges_map(doc)
    if edge_id in edges:
        del edges[edge_id]


def set_canvas_extra(doc: Doc[Any], board: str, extra: dict[str, Any]) -> None:
    boards = boards_map(doc)
    wanted = {CANVAS_PREFIX + k: _encode(v) for k, v in extra.items()}
    if board not in boards:
        if wanted:
            boards[board] = Map(wanted)
        return
    entry = boards[board]
    for key in [k for k in list(entry) if k not in wanted]:
        del entry[key]
    for key, value in wanted.items():
        if entry.get(key) != value:
            entry[key] = value


def space_id(doc: Doc[Any]) -> str:
    value = meta_map(doc).get("space_id")
    return str(value) if value else ""
