"""Deterministic inputs: 2 KB text cards, 1 MB binary cards, the automerge-paper trace.

Card text is made of plain words (valid UTF-8, so Tack treats it as a text card) and is
exactly ``size`` bytes; a binary card is seeded pseudo-random bytes (not UTF-8, so a binary
card).  Trees put cards in sub-folders (boards) of ``per_board`` cards.

The editing trace is Martin Kleppmann and Alastair R. Beresford's ``automerge-paper`` (the
trace of writing "A Conflict-Free Replicated JSON Datatype", automerge/automerge-perf),
converted by Joseph Gentle (josephg/editing-traces), CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/), read unmodified from
``shared/data/traces/sequential``.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

WORDS = [
    "tack", "card", "board", "canvas", "merge", "sync", "device", "peer", "space", "folder",
    "layout", "note", "text", "link", "crdt", "yjs", "update", "state", "vector", "base",
    "fork", "save", "write", "read", "change", "origin", "echo", "render",
]  # fmt: skip

TRACE_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "shared" / "data" / "traces" / "sequential",
    Path("/work/shared/data/traces/sequential"),
)


def text_card(seed: int, size: int = 2048, version: int = 0) -> bytes:
    """``size`` bytes of word-salad text, different for every (seed, version)."""
    rnd = random.Random(seed * 1_000_003 + version)
    head = f"# card {seed} version {version}\n".encode()
    out = bytearray(head)
    while len(out) < size:
        line = " ".join(rnd.choice(WORDS) for _ in range(9)) + "\n"
        out += line.encode()
    out = out[: size - 1] + b"\n"
    return bytes(out)


def edited_card(seed: int, version: int, size: int = 2048) -> bytes:
    """The card ``text_card(seed)`` after ``version`` small edits: each edit rewrites one
    line (the ``version``-th, cyclically) with new words of the same length, as a person
    changing a sentence does; the card stays ``size`` bytes."""
    lines = text_card(seed, size).split(b"\n")
    body = len(lines) - 2  # keep the header and the final newline
    for v in range(max(1, version - body + 1), version + 1):
        k = 1 + (v - 1) % body
        old = lines[k]
        rnd = random.Random(seed * 7919 + v)
        new = b""
        while len(new) < len(old):
            new += (rnd.choice(WORDS) + " ").encode()
        lines[k] = new[: len(old)]
    return b"\n".join(lines)


def binary_card(seed: int, size: int = 1 << 20) -> bytes:
    data = bytearray(random.Random(f"bin{seed}").randbytes(size))
    data[0] = 0  # a NUL byte: never a text card
    return bytes(data)


def card_path(index: int, per_board: int, ext: str = "md") -> str:
    if per_board <= 0:
        return f"card{index:05d}.{ext}"
    return f"board{index // per_board:03d}/card{index:05d}.{ext}"


def make_tree(
    n_text: int, n_binary: int, per_board: int, text_size: int = 2048, bin_size: int = 1 << 20
) -> dict[str, bytes]:
    tree = {card_path(i, per_board): text_card(i, text_size) for i in range(n_text)}
    for j in range(n_binary):
        tree[f"media/blob{j:03d}.bin"] = binary_card(j, bin_size)
    return tree


def write_tree(root: Path, tree: dict[str, bytes]) -> None:
    for rel, data in tree.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def user_files(root: Path, skip: tuple[str, ...] = (".tack", ".stfolder", ".git")) -> set[str]:
    out: set[str] = set()
    for top, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in skip]
        rel_top = os.path.relpath(top, root)
        for name in names:
            if name in ("board.canvas", ".stignore") or name.startswith((".syncthing.", "~")):
                continue
            out.add(name if rel_top == "." else f"{rel_top}/{name}")
    return out


def trace_path(name: str = "automerge-paper") -> Path | None:
    for folder in TRACE_CANDIDATES:
        path = folder / f"{name}.json.gz"
        if path.exists():
            return path
    return None


def load_trace(name: str = "automerge-paper") -> dict[str, Any]:
    path = trace_path(name)
    if path is None:
        raise FileNotFoundError(f"the editing trace {name} is not in shared/data/traces")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        data: dict[str, Any] = json.load(f)
    return data


def trace_patches(trace: dict[str, Any]) -> list[tuple[int, int, str]]:
    return [(int(p[0]), int(p[1]), str(p[2])) for t in trace["txns"] for p in t["patches"]]


def trace_saves(trace: dict[str, Any], every: int, limit: int | None = None) -> Iterator[str]:
    """The document after every ``every`` patches (and at the end): one item per save.

    A generator: the 5,196 saves of automerge-paper would hold ~270 MB as a list.
    """
    doc = trace["startContent"]
    patches = trace_patches(trace)
    if limit is not None:
        patches = patches[:limit]
    last = None
    for n, (pos, delete, insert) in enumerate(patches, 1):
        doc = doc[:pos] + insert + doc[pos + delete :]
        if n % every == 0:
            last = doc
            yield doc
    if last is not doc:
        yield doc


def count_saves(n_patches: int, every: int) -> int:
    return n_patches // every + (1 if n_patches % every else 0)
