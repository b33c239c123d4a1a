"""Space-relative paths: the only way a path crosses between the folder and a document.

A card is named by its *rel*: a POSIX path relative to the space root, in the form that is sent
to peers and stored in ``board.canvas``.  Anything that turns a rel (which may come from the
network, i.e. untrusted) into a real path goes through :func:`resolve_inside`; anything that
turns a real path into a rel goes through :func:`rel_of`.

Invariants of a valid rel (checked by :func:`validate_rel`):

* non-empty, relative (no leading ``/``), ``/``-separated, no trailing ``/``;
* no empty, ``.`` or ``..`` segment, so it can never name anything above the root lexically;
* no NUL and no backslash (a backslash is a separator for Windows peers);
* valid Unicode (no lone surrogates, which cannot be sent as UTF-8) and every segment at most
  255 bytes of UTF-8 (the usual NAME_MAX).

:func:`resolve_inside` adds the file-system check: no existing directory on the way to the
target may be a symlink that leads outside the space.  The final component is *not* followed:
callers that read or replace it decide what to do with a symlink there.  The check is a
point-in-time check; a symlink swapped in afterwards by a local user is not prevented.
"""

from __future__ import annotations

import os
from pathlib import Path

NAME_MAX = 255
"""Longest allowed segment, in bytes of UTF-8."""


class UnsafePath(ValueError):
    """A path that must not be used as a card path in this space."""


def validate_rel(rel: str) -> str:
    """Return ``rel`` unchanged if it is a valid space-relative path, else raise UnsafePath."""
    if not rel:
        raise UnsafePath("empty path")
    if "\x00" in rel:
        raise UnsafePath(f"path contains NUL: {rel!r}")
    if "\\" in rel:
        raise UnsafePath(f"path contains a backslash: {rel!r}")
    if rel.startswith("/"):
        raise UnsafePath(f"path is absolute: {rel!r}")
    for segment in rel.split("/"):
        if segment == "":
            raise UnsafePath(f"path has an empty segment: {rel!r}")
        if segment in (".", ".."):
            raise UnsafePath(f"path has a {segment!r} segment: {rel!r}")
        try:
            size = len(segment.encode("utf-8"))
        except UnicodeEncodeError:
            raise UnsafePath(f"path is not valid Unicode: {rel!r}") from None
        if size > NAME_MAX:
            raise UnsafePath(f"path segment longer than {NAME_MAX} bytes: {segment[:40]!r}…")
    return rel


def _is_within(inner: str, outer: str) -> bool:
    """Whether absolute normalised path ``inner`` is ``outer`` or below it."""
    return inner == outer or inner.startswith(outer.rstrip("/") + "/")


def rel_of(root: Path, path: Path) -> str:
    """The valid rel of ``path`` inside the space at ``root``.

    Lexical: neither ``root`` nor ``path`` is resolved through symlinks, so a watcher event for
    ``<root>/link`` maps to ``"link"`` even when ``link`` points elsewhere.  Raises
    :class:`UnsafePath` when ``path`` is outside ``root``, is ``root`` itself, or has a name that
    cannot be a card path (see :func:`validate_rel`).
    """
    base = os.path.abspath(root)
    full = os.path.abspath(path)
    if full == base or not _is_within(full, base):
        raise UnsafePath(f"{path} is not inside the space {root}")
    rel = os.path.relpath(full, base)
    return validate_rel(Path(rel).as_posix())


def resolve_inside(root: Path, rel: str) -> Path:
    """The path of ``rel`` under ``root``, refusing to leave the space through a symlink.

    ``rel`` is validated first.  Then the real location of its parent directory (following
    every existing symlink) must lie inside the real location of ``root``; missing components
    are fine, since a valid rel cannot climb.  The returned path is ``root / rel``, unresolved.
    """
    validate_rel(rel)
    target = root / rel
    real_root = os.path.realpath(root)
    real_parent = os.path.realpath(target.parent)
    if not _is_within(real_parent, real_root):
        raise UnsafePath(f"{rel!r} leads outside the space through a symlink")
    return target
