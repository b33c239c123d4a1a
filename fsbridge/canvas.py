"""JSON Canvas 1.0 (``board.canvas``): parse bytes into a :class:`Canvas`, render it back.

This module owns the on-disk form of a board's layout (https://jsoncanvas.org/spec/1.0/). It is
pure: bytes in, values out, no file I/O, no clock.

What a valid canvas is (checked by :func:`parse_canvas`, and again by :func:`render_canvas` so
that Tack never writes a file it could not read back):

- UTF-8 (a leading BOM is tolerated and dropped), at most :data:`MAX_CANVAS_BYTES`, one JSON
  object. ``NaN``/``Infinity`` and numbers that overflow a double are not JSON and are refused;
  values nest at most :data:`MAX_NESTING` levels deep.
- ``nodes`` and ``edges`` are optional (missing means empty) and, when present, arrays of
  objects.
- Every node has a non-empty string ``id`` unique among nodes, a string ``type``, and numbers
  ``x``, ``y``, ``width``, ``height`` (int or float, never bool, at most 2**53 in magnitude so
  that JavaScript readers and float arithmetic see them exactly). A ``text`` node has a string
  ``text``, a ``file`` node a string ``file``, a ``link`` node a string ``url``. ``group`` and
  unknown node types need nothing more.
- Every edge has a non-empty string ``id`` unique among edges and string ``fromNode`` and
  ``toNode``. An edge that names a missing node is kept: that is the diff layer's business.
- Optional fields (``color``, ``label``, ``fromSide``, ...) and unknown fields are not checked;
  they are kept exactly as given, as are unknown top-level keys (:attr:`Canvas.extra`). A file
  that another tool wrote with an odd optional field is still readable.

Invariants:

- ``parse_canvas`` returns a :class:`Canvas` or raises :class:`CanvasError` (a ``ValueError``)
  with a message that says what is wrong and where (JSON line and column, or which node/edge and
  field); it raises nothing else, whatever the bytes.
- Node order is file order, which is z order. Ints stay ints, floats stay floats.
- ``parse_canvas(render_canvas(c)) == c`` for every valid canvas ``c``, and rendering is
  deterministic, so ``render_canvas(parse_canvas(render_canvas(c))) == render_canvas(c)``.
- Rendering is tab-indented JSON with non-ASCII kept as UTF-8, keys in the canonical order of
  :data:`NODE_KEY_ORDER` / :data:`EDGE_KEY_ORDER` followed by the other keys in their existing
  order (close to what Obsidian writes), and a final newline. A lone UTF-16 surrogate (possible
  only through a ``\\udXXX`` escape in the input) is written back as that escape.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

__all__ = [
    "EDGE_KEY_ORDER",
    "MAX_CANVAS_BYTES",
    "MAX_COORDINATE",
    "MAX_NESTING",
    "NODE_KEY_ORDER",
    "Canvas",
    "CanvasError",
    "empty_canvas",
    "parse_canvas",
    "render_canvas",
]

MAX_CANVAS_BYTES: Final = 64 * 1024 * 1024
"""Size guard: a larger ``board.canvas`` is refused rather than loaded."""

MAX_NESTING: Final = 128
"""Deepest nesting of arrays/objects accepted (the top-level object is level 1)."""

MAX_COORDINATE: Final = 2**53
"""Largest magnitude accepted for ``x``, ``y``, ``width`` and ``height``."""

NODE_KEY_ORDER: Final = (
    "id",
    "type",
    "text",
    "file",
    "subpath",
    "url",
    "label",
    "x",
    "y",
    "width",
    "height",
    "color",
)
EDGE_KEY_ORDER: Final = (
    "id",
    "fromNode",
    "fromSide",
    "fromEnd",
    "toNode",
    "toSide",
    "toEnd",
    "color",
    "label",
)

_NODE_KEYS: Final = frozenset(NODE_KEY_ORDER)
_EDGE_KEYS: Final = frozenset(EDGE_KEY_ORDER)
_COORDINATES: Final = ("x", "y", "width", "height")
_CONTENT_FIELD: Final = {"text": "text", "file": "file", "link": "url"}
_TOP_LEVEL: Final = frozenset({"nodes", "edges"})
_BOM: Final = b"\xef\xbb\xbf"
_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")
_LONG_DIGITS: Final = re.compile(r"\d{4000,}")
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MISSING: Final = object()


class CanvasError(ValueError):
    """A ``board.canvas`` that is not valid JSON Canvas; the message says what and where."""


@dataclass
class Canvas:
    """One board's layout.

    ``nodes`` are in file order (= z order, first is bottom-most) and keep every field, unknown
    ones included; likewise ``edges``. ``extra`` holds unknown top-level keys.
    """

    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def empty_canvas() -> Canvas:
    """A canvas with no nodes, no edges and no extra keys."""
    return Canvas(nodes=[], edges=[], extra={})


def parse_canvas(data: bytes) -> Canvas:
    """Parse and validate ``board.canvas`` bytes; raise :class:`CanvasError` if invalid."""
    if len(data) > MAX_CANVAS_BYTES:
        raise CanvasError(
            f"canvas is {len(data)} bytes, more than the {MAX_CANVAS_BYTES} byte (64 MiB) limit"
        )
    raw = bytes(data)
    start = len(_BOM) if raw.startswith(_BOM) else 0
    try:
        text = raw[start:].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanvasError(_utf8_problem(raw, start, exc)) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CanvasError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise CanvasError("invalid JSON: arrays/objects nested too deeply") from None
    except ValueError as exc:  # an integer literal longer than Python converts
        raise CanvasError(_long_number_problem(text, exc)) from None
    if not isinstance(doc, dict):
        raise CanvasError(f"top level must be a JSON object, got {_describe(doc)}")
    _check_json_value(doc)
    nodes = doc.get("nodes", [])
    edges = doc.get("edges", [])
    extra = {key: value for key, value in doc.items() if key not in _TOP_LEVEL}
    _check_nodes(nodes)
    _check_edges(edges)
    return Canvas(nodes=nodes, edges=edges, extra=extra)


def render_canvas(canvas: Canvas) -> bytes:
    """Deterministic ``board.canvas`` bytes; raise :class:`CanvasError` if ``canvas`` is invalid."""
    for key in canvas.extra:
        if key in _TOP_LEVEL:
            raise CanvasError(f'Canvas.extra must not hold the key "{key}"')
    _check_nodes(canvas.nodes)
    _check_edges(canvas.edges)
    doc: dict[str, Any] = {
        "nodes": [_ordered(node, NODE_KEY_ORDER, _NODE_KEYS) for node in canvas.nodes],
        "edges": [_ordered(edge, EDGE_KEY_ORDER, _EDGE_KEYS) for edge in canvas.edges],
        **canvas.extra,
    }
    _check_json_value(doc)
    text = tab_indented_json(doc) + "\n"
    try:
        out = text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates can only sit inside JSON strings: write them as \\uXXXX escapes, as
        # JavaScript's JSON.stringify does, so the output is valid UTF-8 and parses back.
        out = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text).encode("utf-8")
    if len(out) > MAX_CANVAS_BYTES:
        raise CanvasError(
            f"rendered canvas is {len(out)} bytes, more than the {MAX_CANVAS_BYTES} byte limit"
        )
    return out


def tab_indented_json(value: Any) -> str:
    """Exactly ``json.dumps(value, indent="\t", ensure_ascii=False)``, about ten times faster.

    With ``indent`` set, the standard library falls back to its pure-Python generator
    encoder (one generator step per token): a 10,000-node canvas took a second.  Here
    containers are walked once and strings are escaped by the C escaper; ``value`` must hold
    JSON values only (see :func:`_check_json_value`), with string keys.
    """
    out: list[str] = []
    _indent_into(value, 0, out)
    return "".join(out)


_escape = json.encoder.encode_basestring  # the C escaper when available; as ensure_ascii=False
_SCALARS = (str, int, float, type(None))  # bool is an int


@functools.cache
def _flat_encoder(depth: int) -> Callable[[Any], str]:
    inner = "\n" + "\t" * (depth + 1)
    return json.JSONEncoder(ensure_ascii=False, separators=("," + inner, ": ")).encode


def _indent_into(value: Any, depth: int, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_escape(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(float.__repr__(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = "\n" + "\t" * (depth + 1)
        if all(isinstance(item, _SCALARS) for item in value.values()) and all(
            isinstance(key, str) for key in value
        ):
            # A flat object (every node and edge): the C encoder writes it in one call, the
            # newline and indent riding on its item separator.
            flat = _flat_encoder(depth)(value)
            out.append("{" + inner + flat[1:-1] + "\n" + "\t" * depth + "}")
            return
        out.append("{")
        for i, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"keys must be str, not {type(key).__name__}")
            out.append(("," if i else "") + inner + _escape(key) + ": ")
            _indent_into(item, depth + 1, out)
        out.append("\n" + "\t" * depth + "}")
    elif isinstance(value, list):
        if not value:
            out.append("[]")
            return
        inner = "\n" + "\t" * (depth + 1)
        out.append("[")
        for i, item in enumerate(value):
            out.append(("," if i else "") + inner)
            _indent_into(item, depth + 1, out)
        out.append("\n" + "\t" * depth + "]")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value")


# -- validation ----------------------------------------------------------------------------


def _check_nodes(nodes: object) -> None:
    if not isinstance(nodes, list):
        raise CanvasError(f'"nodes" must be an array of node objects, got {_describe(nodes)}')
    seen: dict[str, int] = {}
    for index, node in enumerate(nodes):
        where = f"nodes[{index}]"
        if not isinstance(node, dict):
            raise CanvasError(f"{where} must be a node object, got {_describe(node)}")
        node_id = node.get("id", _MISSING)
        if not isinstance(node_id, str) or not node_id:
            raise CanvasError(f"{where}: {_field_problem('id', node_id, 'a non-empty string')}")
        where = f"{where} (id {_quote(node_id)})"
        first = seen.setdefault(node_id, index)
        if first != index:
            raise CanvasError(f"{where}: duplicate node id, already used by nodes[{first}]")
        node_type = node.get("type", _MISSING)
        if not isinstance(node_type, str):
            raise CanvasError(f"{where}: {_field_problem('type', node_type, 'a string')}")
        for key in _COORDINATES:
            value = node.get(key, _MISSING)
            if not _is_number(value):
                raise CanvasError(f"{where}: {_field_problem(key, value, 'a number')}")
            if abs(value) > MAX_COORDINATE:
                raise CanvasError(
                    f'{where}: field "{key}" is {value}, beyond the ±2**53 coordinate range'
                )
        content = _CONTENT_FIELD.get(node_type)
        if content is not None:
            value = node.get(content, _MISSING)
            if not isinstance(value, str):
                got = "it is missing" if value is _MISSING else f"got {_describe(value)}"
                raise CanvasError(
                    f'{where}: a {node_type} node needs a string field "{content}", {got}'
                )


def _check_edges(edges: object) -> None:
    if not isinstance(edges, list):
        raise CanvasError(f'"edges" must be an array of edge objects, got {_describe(edges)}')
    seen: dict[str, int] = {}
    for index, edge in enumerate(edges):
        where = f"edges[{index}]"
        if not isinstance(edge, dict):
            raise CanvasError(f"{where} must be an edge object, got {_describe(edge)}")
        edge_id = edge.get("id", _MISSING)
        if not isinstance(edge_id, str) or not edge_id:
            raise CanvasError(f"{where}: {_field_problem('id', edge_id, 'a non-empty string')}")
        where = f"{where} (id {_quote(edge_id)})"
        first = seen.setdefault(edge_id, index)
        if first != index:
            raise CanvasError(f"{where}: duplicate edge id, already used by edges[{first}]")
        for key in ("fromNode", "toNode"):
            value = edge.get(key, _MISSING)
            if not isinstance(value, str):
                raise CanvasError(f"{where}: {_field_problem(key, value, 'a node id string')}")


def _check_json_value(root: dict[str, Any]) -> None:
    """Check that ``root`` holds only JSON values that survive a round trip.

    Iterative (no recursion limit); the path to an offending value is built only on error.
    """
    # Each entry: (value, depth, path) where path is a linked list (parent_path, key) or None.
    stack: list[tuple[Any, int, tuple[Any, str | int] | None]] = [(root, 1, None)]
    while stack:
        value, depth, path = stack.pop()
        if value is None or isinstance(value, str | int):  # bool is an int
            continue
        if isinstance(value, float):
            if math.isnan(value):
                raise CanvasError(f"{_path(path)}: NaN is not a valid JSON number")
            if math.isinf(value):
                raise CanvasError(
                    f"{_path(path)}: number is Infinity or too large for a double (±1.8e308)"
                )
            continue
        if isinstance(value, dict | list):
            if depth > MAX_NESTING:
                raise CanvasError(
                    f"{_path(path)}: arrays/objects nested more than {MAX_NESTING} levels deep"
                )
            if isinstance(value, list):
                # Pushed in reverse so that the first bad value in document order is reported.
                stack.extend(
                    (value[i], depth + 1, (path, i)) for i in range(len(value) - 1, -1, -1)
                )
                continue
            for key, child in reversed(value.items()):
                if not isinstance(key, str):
                    raise CanvasError(f"{_path(path)}: object key {key!r} is not a string")
                stack.append((child, depth + 1, (path, key)))
            continue
        raise CanvasError(f"{_path(path)}: {type(value).__name__} is not a JSON value")


def _is_number(value: object) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


# -- rendering helpers ---------------------------------------------------------------------


def _ordered(obj: dict[str, Any], order: tuple[str, ...], known: frozenset[str]) -> dict[str, Any]:
    out = {key: obj[key] for key in order if key in obj}
    out.update((key, value) for key, value in obj.items() if key not in known)
    return out


# -- messages ------------------------------------------------------------------------------


def _utf8_problem(raw: bytes, start: int, exc: UnicodeDecodeError) -> str:
    offset = start + exc.start
    before = raw[start:offset].decode("utf-8")
    line = before.count("\n") + 1
    column = len(before) - (before.rfind("\n") + 1) + 1
    return (
        f"not valid UTF-8 at line {line}, column {column} "
        f"(byte offset {offset}: 0x{raw[offset]:02x})"
    )


def _long_number_problem(text: str, exc: ValueError) -> str:
    match = _LONG_DIGITS.search(text)
    if match is None:
        return f"invalid JSON: {exc}"
    line = text.count("\n", 0, match.start()) + 1
    column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
    return f"invalid JSON at line {line}, column {column}: number has too many digits"


def _field_problem(key: str, value: object, expected: str) -> str:
    if value is _MISSING:
        return f'field "{key}" is missing (expected {expected})'
    return f'field "{key}" must be {expected}, got {_describe(value)}'


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {'true' if value else 'false'}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {_quote(value)}"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _quote(text: str, limit: int = 40) -> str:
    short = text if len(text) <= limit else text[: limit - 1] + "…"
    return json.dumps(short, ensure_ascii=False)


def _path(path: tuple[Any, str | int] | None) -> str:
    keys: list[str | int] = []
    while path is not None:
        path, key = path
        keys.append(key)
    if not keys:
        return "top level"
    keys.reverse()
    if len(keys) > 12:  # deep nesting: show the start and the end of the path
        return f"{_path_text(keys[:6])}…{_path_text(keys[-4:], nested=True)}"
    return _path_text(keys)


def _path_text(keys: list[str | int], nested: bool = False) -> str:
    parts: list[str] = []
    for key in keys:
        if isinstance(key, int):
            parts.append(f"[{key}]")
        elif _IDENTIFIER.match(key):
            parts.append(f".{key}" if parts or nested else key)
        else:
            parts.append(f"[{_quote(key)}]")
    return "".join(parts)
