"""Tests for fsbridge.canvas: JSON Canvas 1.0 parse/render, round trips, and error messages."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsbridge.canvas import (
    EDGE_KEY_ORDER,
    MAX_CANVAS_BYTES,
    NODE_KEY_ORDER,
    Canvas,
    CanvasError,
    empty_canvas,
    parse_canvas,
    render_canvas,
)

# -- strategies ----------------------------------------------------------------------------

KNOWN_TYPES = ("text", "file", "link", "group")
CONTENT = {"text": "text", "file": "file", "link": "url"}

texts = st.text() | st.sampled_from(["", "é", "日本語 ✓", "😀 emoji", "tab\tnew\nline", '"q"\\'])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)
coordinates = st.integers(-(2**53), 2**53) | st.floats(
    -(2.0**53), 2.0**53, allow_nan=False, allow_infinity=False
)
node_types = st.sampled_from(KNOWN_TYPES) | texts
colors = st.sampled_from(["1", "2", "3", "4", "5", "6", "#FF00aa"])


@st.composite
def nodes(draw: st.DrawFn, node_id: str) -> dict[str, Any]:
    node_type = draw(node_types)
    node: dict[str, Any] = {"id": node_id, "type": node_type}
    for key in ("x", "y", "width", "height"):
        node[key] = draw(coordinates)
    if node_type == "text":
        node["text"] = draw(texts)
    elif node_type == "file":
        node["file"] = draw(texts)
        if draw(st.booleans()):
            node["subpath"] = "#" + draw(texts)
    elif node_type == "link":
        node["url"] = draw(texts)
    elif node_type == "group":
        if draw(st.booleans()):
            node["label"] = draw(texts)
        if draw(st.booleans()):
            node["background"] = draw(texts)
            node["backgroundStyle"] = draw(st.sampled_from(["cover", "ratio", "repeat"]))
    if draw(st.booleans()):
        node["color"] = draw(colors)
    reserved = {"id", "type", "x", "y", "width", "height", CONTENT.get(node_type, "")}
    unknown = draw(
        st.dictionaries(texts.filter(lambda k: k not in reserved), json_values, max_size=3)
    )
    for key, value in unknown.items():
        node.setdefault(key, value)
    return dict(draw(st.permutations(list(node.items()))))  # any key order in the input


@st.composite
def edges(draw: st.DrawFn, edge_id: str, node_ids: list[str]) -> dict[str, Any]:
    ends = st.sampled_from(node_ids) | texts if node_ids else texts  # dangling ends allowed
    edge: dict[str, Any] = {"id": edge_id, "fromNode": draw(ends), "toNode": draw(ends)}
    for key, values in (
        ("fromSide", st.sampled_from(["top", "right", "bottom", "left"])),
        ("toSide", st.sampled_from(["top", "right", "bottom", "left"])),
        ("fromEnd", st.sampled_from(["none", "arrow"])),
        ("toEnd", st.sampled_from(["none", "arrow"])),
        ("color", colors),
        ("label", texts),
    ):
        if draw(st.booleans()):
            edge[key] = draw(values)
    reserved = {"id", "fromNode", "toNode"}
    unknown = draw(
        st.dictionaries(texts.filter(lambda k: k not in reserved), json_values, max_size=2)
    )
    for key, value in unknown.items():
        edge.setdefault(key, value)
    return dict(draw(st.permutations(list(edge.items()))))


@st.composite
def canvases(draw: st.DrawFn) -> Canvas:
    node_ids = draw(st.lists(texts.filter(bool), unique=True, max_size=6))
    edge_ids = draw(st.lists(texts.filter(bool), unique=True, max_size=4))
    extra = draw(
        st.dictionaries(
            texts.filter(lambda k: k not in ("nodes", "edges")), json_values, max_size=3
        )
    )
    return Canvas(
        nodes=[draw(nodes(node_id)) for node_id in node_ids],
        edges=[draw(edges(edge_id, node_ids)) for edge_id in edge_ids],
        extra=extra,
    )


def node(node_id: str = "a", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": node_id, "type": "text", "text": "hi"}
    base.update(x=0, y=0, width=200, height=100)
    base.update(fields)
    return base


def canvas_bytes(doc: Any) -> bytes:
    return json.dumps(doc).encode()


def parse_error(doc_or_bytes: Any) -> str:
    data = doc_or_bytes if isinstance(doc_or_bytes, bytes) else canvas_bytes(doc_or_bytes)
    with pytest.raises(CanvasError) as info:
        parse_canvas(data)
    return str(info.value)


# -- round trips ---------------------------------------------------------------------------

ROUND_TRIP = settings(max_examples=120, suppress_health_check=[HealthCheck.too_slow])


@ROUND_TRIP
@given(canvases())
def test_parse_of_render_is_identity(canvas: Canvas) -> None:
    assert parse_canvas(render_canvas(canvas)) == canvas


@ROUND_TRIP
@given(canvases())
def test_render_is_stable(canvas: Canvas) -> None:
    once = render_canvas(canvas)
    assert render_canvas(parse_canvas(once)) == once
    assert render_canvas(canvas) == once  # deterministic


@ROUND_TRIP
@given(canvases())
def test_render_orders_keys_canonically(canvas: Canvas) -> None:
    doc = json.loads(render_canvas(canvas), object_pairs_hook=list)
    assert [key for key, _ in doc[:2]] == ["nodes", "edges"]
    for items, order in ((doc[0][1], NODE_KEY_ORDER), (doc[1][1], EDGE_KEY_ORDER)):
        for obj in items:
            keys = [key for key, _ in obj]
            known = [key for key in keys if key in order]
            assert known == [key for key in order if key in keys]
            assert keys[: len(known)] == known  # known keys first, others after


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_raise_canvas_error(data: bytes) -> None:
    try:
        parse_canvas(data)
    except CanvasError as exc:
        assert str(exc)


def check_total(data: bytes) -> None:
    """Parsing gives a Canvas or a CanvasError; a parsed canvas renders and round-trips."""
    try:
        canvas = parse_canvas(data)
    except CanvasError as exc:
        assert str(exc)
        return
    assert parse_canvas(render_canvas(canvas)) == canvas


@ROUND_TRIP
@given(canvases(), st.data())
def test_byte_mutations_of_valid_canvas(canvas: Canvas, data: st.DataObject) -> None:
    raw = bytearray(render_canvas(canvas))
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(raw)))
        action = data.draw(st.sampled_from(["delete", "insert", "replace"]))
        if action == "delete":
            del raw[position : position + data.draw(st.integers(1, 8))]
        elif action == "insert":
            raw[position:position] = data.draw(
                st.binary(min_size=1, max_size=4)
                | st.sampled_from([b"{", b"}", b"[", b"]", b",", b'"', b":", b"\\", b"\\u"])
            )
        elif position < len(raw):
            raw[position] = data.draw(st.integers(0, 255))
    check_total(bytes(raw))


@ROUND_TRIP
@given(canvases(), st.data())
def test_structural_mutations_of_valid_canvas(canvas: Canvas, data: st.DataObject) -> None:
    doc: dict[str, Any] = {"nodes": canvas.nodes, "edges": canvas.edges, **canvas.extra}
    doc = json.loads(json.dumps(doc))  # a private copy
    targets: list[dict[str, Any]] = [doc, *doc["nodes"], *doc["edges"]]
    for _ in range(data.draw(st.integers(1, 3))):
        target = data.draw(st.sampled_from(targets))
        key = data.draw(
            st.sampled_from(["id", "type", "x", "width", "text", "url", "file", "fromNode"])
            | st.sampled_from(sorted(target) or ["nodes"])
        )
        if data.draw(st.booleans()):
            target.pop(key, None)
        else:
            target[key] = data.draw(json_values)
    check_total(json.dumps(doc, ensure_ascii=data.draw(st.booleans())).encode())


# -- good input ----------------------------------------------------------------------------

OBSIDIAN_SAMPLE = """{
  "nodes": [
    {"id": "nav", "type": "text", "x": 336, "y": 36, "width": 182, "height": 168,
     "text": "Learn more:\\n- [Apps](/docs/apps)"},
    {"id": "logo", "type": "file", "x": 36, "y": 48, "width": 176, "height": 68,
     "file": "logo.svg", "color": "4"},
    {"type": "group", "id": "g", "label": "Ideas", "x": -20, "y": -20, "width": 600,
     "height": 300, "backgroundStyle": "cover"}
  ],
  "edges": [
    {"toEnd": "arrow", "id": "edge-logo-nav", "fromNode": "logo", "fromSide": "right",
     "fromEnd": "none", "toNode": "nav", "toSide": "left"}
  ]
}"""

OBSIDIAN_RENDERED = """{
\t"nodes": [
\t\t{
\t\t\t"id": "nav",
\t\t\t"type": "text",
\t\t\t"text": "Learn more:\\n- [Apps](/docs/apps)",
\t\t\t"x": 336,
\t\t\t"y": 36,
\t\t\t"width": 182,
\t\t\t"height": 168
\t\t},
\t\t{
\t\t\t"id": "logo",
\t\t\t"type": "file",
\t\t\t"file": "logo.svg",
\t\t\t"x": 36,
\t\t\t"y": 48,
\t\t\t"width": 176,
\t\t\t"height": 68,
\t\t\t"color": "4"
\t\t},
\t\t{
\t\t\t"id": "g",
\t\t\t"type": "group",
\t\t\t"label": "Ideas",
\t\t\t"x": -20,
\t\t\t"y": -20,
\t\t\t"width": 600,
\t\t\t"height": 300,
\t\t\t"backgroundStyle": "cover"
\t\t}
\t],
\t"edges": [
\t\t{
\t\t\t"id": "edge-logo-nav",
\t\t\t"fromNode": "logo",
\t\t\t"fromSide": "right",
\t\t\t"fromEnd": "none",
\t\t\t"toNode": "nav",
\t\t\t"toSide": "left",
\t\t\t"toEnd": "arrow"
\t\t}
\t]
}
"""


def test_sample_canvas_renders_in_canonical_form() -> None:
    canvas = parse_canvas(OBSIDIAN_SAMPLE.encode())
    assert [n["id"] for n in canvas.nodes] == ["nav", "logo", "g"]  # file order = z order
    assert render_canvas(canvas).decode() == OBSIDIAN_RENDERED


def test_empty_canvas() -> None:
    assert empty_canvas() == Canvas(nodes=[], edges=[], extra={})
    assert render_canvas(empty_canvas()) == b'{\n\t"nodes": [],\n\t"edges": []\n}\n'
    assert parse_canvas(b"{}") == empty_canvas()
    assert parse_canvas(b' {"nodes": []} \n') == empty_canvas()


def test_bom_is_tolerated_and_dropped() -> None:
    canvas = parse_canvas(b"\xef\xbb\xbf" + canvas_bytes({"nodes": [node()]}))
    assert canvas.nodes == [node()]
    assert not render_canvas(canvas).startswith(b"\xef\xbb\xbf")


def test_unknown_types_fields_and_top_level_keys_are_kept() -> None:
    doc = {
        "version": "x-1",
        "nodes": [
            {"id": "s", "type": "sticker", "x": 1, "y": 2, "width": 3, "height": 4, "emoji": "🦆"},
            node("t", plugin={"deep": [1, 2.5, None, True]}, color="#abcdef"),
        ],
        "edges": [{"id": "e", "fromNode": "s", "toNode": "t", "x-style": "dashed"}],
    }
    canvas = parse_canvas(canvas_bytes(doc))
    assert canvas.extra == {"version": "x-1"}
    assert canvas.nodes == doc["nodes"]
    assert canvas.edges == doc["edges"]
    rendered = render_canvas(canvas).decode()
    assert "🦆" in rendered  # non-ASCII written as UTF-8, not escaped
    assert rendered.index('"edges"') < rendered.index('"version"')


def test_dangling_edges_are_kept() -> None:
    edge = {"id": "e", "fromNode": "gone", "toNode": "also-gone"}
    assert parse_canvas(canvas_bytes({"edges": [edge]})).edges == [edge]


def test_ints_and_floats_are_kept_as_given() -> None:
    canvas = parse_canvas(b'{"nodes": [' + canvas_bytes(node(x=1.0, y=-0.5, width=7)) + b"]}")
    x, y, width = (canvas.nodes[0][key] for key in ("x", "y", "width"))
    assert (type(x), type(y), type(width)) == (float, float, int)
    assert b'"x": 1.0,' in render_canvas(canvas)
    assert b'"width": 7,' in render_canvas(canvas)


def test_lone_surrogate_escape_round_trips() -> None:
    canvas = parse_canvas(b'{"nodes": [' + canvas_bytes(node(text="\ud800 a\udfff")) + b"]}")
    assert canvas.nodes[0]["text"] == "\ud800 a\udfff"
    rendered = render_canvas(canvas)
    assert b"\\ud800 a\\udfff" in rendered
    assert parse_canvas(rendered) == canvas


def test_group_node_needs_no_content_field() -> None:
    group = {"id": "g", "type": "group", "x": 0, "y": 0, "width": 1, "height": 1}
    assert parse_canvas(canvas_bytes({"nodes": [group]})).nodes == [group]


def test_parse_does_not_share_state_with_render_input() -> None:
    canvas = parse_canvas(OBSIDIAN_SAMPLE.encode())
    before = json.dumps(canvas.nodes)
    render_canvas(canvas)
    assert json.dumps(canvas.nodes) == before  # rendering reorders a copy, not the input


# -- bad input: each kind of problem says what and where -----------------------------------


def test_invalid_json_reports_line_and_column() -> None:
    message = parse_error(b'{\n  "nodes": [\n    {"id": "a",}\n  ]\n}')
    assert message.startswith("invalid JSON at line 3, column 16:")
    assert "line 1, column 1" in parse_error(b"")
    assert "line 1, column 15" in parse_error(b'{"nodes": []} trailing')


def test_not_an_object() -> None:
    assert parse_error(b"[]") == "top level must be a JSON object, got an array"
    assert parse_error(b'"canvas"') == 'top level must be a JSON object, got string "canvas"'
    assert parse_error(b"null") == "top level must be a JSON object, got null"


def test_nodes_and_edges_must_be_arrays_of_objects() -> None:
    assert parse_error({"nodes": {}}) == '"nodes" must be an array of node objects, got an object'
    assert parse_error({"nodes": None}) == '"nodes" must be an array of node objects, got null'
    assert parse_error({"edges": "x"}) == (
        '"edges" must be an array of edge objects, got string "x"'
    )
    assert parse_error({"nodes": [node(), 3]}) == "nodes[1] must be a node object, got number 3"
    assert parse_error({"edges": [[]]}) == "edges[0] must be an edge object, got an array"


def test_duplicate_ids() -> None:
    assert parse_error({"nodes": [node("a"), node("b"), node("a")]}) == (
        'nodes[2] (id "a"): duplicate node id, already used by nodes[0]'
    )
    edge = {"id": "e", "fromNode": "a", "toNode": "b"}
    assert parse_error({"edges": [edge, edge]}) == (
        'edges[1] (id "e"): duplicate edge id, already used by edges[0]'
    )
    # Node ids and edge ids are separate namespaces.
    assert parse_canvas(canvas_bytes({"nodes": [node("a")], "edges": [{**edge, "id": "a"}]}))


def test_node_missing_coordinates() -> None:
    for key in ("x", "y", "width", "height"):
        bad = node("n1")
        del bad[key]
        assert parse_error({"nodes": [bad]}) == (
            f'nodes[0] (id "n1"): field "{key}" is missing (expected a number)'
        )


def test_wrong_types() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        (node(x="12"), 'nodes[0] (id "a"): field "x" must be a number, got string "12"'),
        (node(width=True), 'nodes[0] (id "a"): field "width" must be a number, got boolean true'),
        (node(y=None), 'nodes[0] (id "a"): field "y" must be a number, got null'),
        (node(height=[1]), 'nodes[0] (id "a"): field "height" must be a number, got an array'),
        ({**node(), "id": 7}, 'nodes[0]: field "id" must be a non-empty string, got number 7'),
        ({**node(), "id": ""}, 'nodes[0]: field "id" must be a non-empty string, got string ""'),
        (
            {k: v for k, v in node().items() if k != "id"},
            'nodes[0]: field "id" is missing (expected a non-empty string)',
        ),
        (
            {k: v for k, v in node().items() if k != "type"},
            'nodes[0] (id "a"): field "type" is missing (expected a string)',
        ),
        (node(type=1), 'nodes[0] (id "a"): field "type" must be a string, got number 1'),
        (node(text=5), 'nodes[0] (id "a"): a text node needs a string field "text", got number 5'),
        (
            node(type="file"),
            'nodes[0] (id "a"): a file node needs a string field "file", it is missing',
        ),
        (
            node(type="link", url={"href": "x"}),
            'nodes[0] (id "a"): a link node needs a string field "url", got an object',
        ),
    ]
    for bad, expected in cases:
        assert parse_error({"nodes": [bad]}) == expected


def test_edge_wrong_types() -> None:
    assert parse_error({"edges": [{"id": "e", "fromNode": "a"}]}) == (
        'edges[0] (id "e"): field "toNode" is missing (expected a node id string)'
    )
    assert parse_error({"edges": [{"id": "e", "fromNode": 1, "toNode": "b"}]}) == (
        'edges[0] (id "e"): field "fromNode" must be a node id string, got number 1'
    )
    assert parse_error({"edges": [{"id": None, "fromNode": "a", "toNode": "b"}]}) == (
        'edges[0]: field "id" must be a non-empty string, got null'
    )


def test_long_ids_are_shortened_in_messages() -> None:
    message = parse_error({"nodes": [node("n" * 500, x="?")]})
    assert len(message) < 150
    assert "…" in message


def test_non_finite_and_oversized_numbers() -> None:
    nan = b'{"nodes": [{"id": "a", "type": "group", "x": NaN, "y": 0, "width": 1, "height": 1}]}'
    assert parse_error(nan) == "nodes[0].x: NaN is not a valid JSON number"
    big = b'{"meta": {"zoom": [1, 1e400]}}'
    assert parse_error(big).startswith("meta.zoom[1]: number is Infinity or too large")
    assert parse_error(b'{"a": -Infinity}').startswith("a: number is Infinity")
    digits = b'{\n"a": ' + b"9" * 5000 + b"}"
    assert parse_error(digits) == "invalid JSON at line 2, column 6: number has too many digits"
    far = {"nodes": [node(x=2**53 + 1)]}
    assert "beyond the ±2**53 coordinate range" in parse_error(far)


def test_not_utf8() -> None:
    assert parse_error(b'{\n  "a": "\xff"}') == (
        "not valid UTF-8 at line 2, column 9 (byte offset 10: 0xff)"
    )
    assert parse_error(b"\xef\xbb\xbf\xc3") == (
        "not valid UTF-8 at line 1, column 1 (byte offset 3: 0xc3)"
    )
    assert "not valid UTF-8" in parse_error('{"a": "é"}'.encode("latin-1"))


def test_size_guard() -> None:
    message = parse_error(b" " * (MAX_CANVAS_BYTES + 1))
    assert "64 MiB" in message


def test_deep_nesting_is_refused_not_crashing() -> None:
    assert "nested" in parse_error(b"[" * 100_000)
    assert "nested" in parse_error(b'{"a": ' + b"[" * 100_000)
    message = parse_error(b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}")
    assert message.endswith("arrays/objects nested more than 128 levels deep")
    assert message.startswith("a[0][0]")
    fine = b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}"
    assert render_canvas(parse_canvas(fine))


def test_render_refuses_invalid_canvas() -> None:
    with pytest.raises(CanvasError, match="nodes"):
        render_canvas(Canvas(nodes=[], edges=[], extra={"nodes": []}))
    with pytest.raises(CanvasError, match="duplicate node id"):
        render_canvas(Canvas(nodes=[node(), node()], edges=[], extra={}))
    with pytest.raises(CanvasError, match=r"nodes\[0\]\.tags: tuple is not a JSON value"):
        render_canvas(Canvas(nodes=[node(tags=("a",))], edges=[], extra={}))
    with pytest.raises(CanvasError, match="NaN"):
        render_canvas(Canvas(nodes=[], edges=[], extra={"v": float("nan")}))
    with pytest.raises(CanvasError, match="object key 1 is not a string"):
        render_canvas(Canvas(nodes=[], edges=[], extra={"v": {1: 2}}))


def test_canvas_error_is_a_value_error() -> None:
    assert issubclass(CanvasError, ValueError)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=30,
)  # fmt: skip


@given(json_values)
def test_tab_indented_json_is_exactly_the_standard_librarys(value: object) -> None:
    from fsbridge.canvas import tab_indented_json

    assert tab_indented_json(value) == json.dumps(value, indent="\t", ensure_ascii=False)
