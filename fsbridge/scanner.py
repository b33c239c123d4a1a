"""A walk of the space folder: which boards (folders) and which card files are there now.

The walk never follows symlinks, skips ignored paths (and never descends into ignored
folders), and reports special files (FIFOs, sockets, devices) and symlinks as *skipped*
rather than reading them, so a FIFO can never block Tack.  Paths are POSIX, relative to the
space root.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from fsbridge.ignore import IgnoreRules
from fsbridge.paths import UnsafePath, validate_rel

CANVAS_NAME = "board.canvas"


@dataclass
class Tree:
    """What one walk found."""

    boards: set[str] = field(default_factory=lambda: {""})
    files: dict[str, int] = field(default_factory=dict)  # path -> size
    canvases: set[str] = field(default_factory=set)  # boards that have a board.canvas
    skipped: dict[str, str] = field(default_factory=dict)  # path -> why
    invalid: dict[str, str] = field(default_factory=dict)  # names that cannot be cards


def join(board: str, name: str) -> str:
    return f"{board}/{name}" if board else name


def parent_board(rel: str) -> str:
    return rel.rsplit("/", 1)[0] if "/" in rel else ""


def canvas_path(board: str) -> str:
    return join(board, CANVAS_NAME)


def walk(root: Path, rules: IgnoreRules) -> Tree:
    tree = Tree()
    stack = [""]
    while stack:
        board = stack.pop()
        directory = root / board if board else root
        try:
            entries = list(os.scandir(directory))
        except OSError as exc:
            tree.skipped[board or "."] = f"cannot list folder: {exc.strerror}"
            continue
        for entry in entries:
            rel = join(board, entry.name)
            try:
                validate_rel(rel)
            except UnsafePath as exc:
                # Not valid UTF-8, a backslash, an over-long name: it could never travel
                # as a card, so it is left alone and reported, never half-synced.
                tree.invalid[rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")] = (
                    str(exc)
                )
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if rules.is_ignored(rel, is_dir):
                continue
            if stat.S_ISLNK(st.st_mode):
                tree.skipped[rel] = "symbolic link (not followed)"
            elif is_dir:
                tree.boards.add(rel)
                stack.append(rel)
            elif not stat.S_ISREG(st.st_mode):
                tree.skipped[rel] = "not a regular file"
            elif entry.name == CANVAS_NAME:
                tree.canvases.add(board)
            else:
                tree.files[rel] = st.st_size
    return tree
