"""Content-addressed storage for binary cards: each blob stored once under its SHA-256.

Blobs live in ``.tack/blobs/ab/cdef…``.  A blob is written to a temporary file, fsynced and
renamed into place, so a present blob is always complete; its name is its hash, so a blob is
never rewritten.  :class:`MemoryBlobs` is the in-memory fake with the same face.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path
from typing import Protocol


class Blobs(Protocol):
    def put(self, data: bytes) -> str: ...
    def get(self, digest: str) -> bytes | None: ...
    def has(self, digest: str) -> bool: ...
    def partial_size(self, digest: str) -> int: ...
    def write_partial(self, digest: str, offset: int, data: bytes) -> int: ...
    def complete_partial(self, digest: str) -> bool: ...


def _check_digest(digest: str) -> str:
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"not a SHA-256 hex digest: {digest!r}")
    return digest


class DirBlobs:
    """Blobs as files in a directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, digest: str) -> Path:
        _check_digest(digest)
        return self.root / digest[:2] / digest[2:]

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        target = self._path(digest)
        if target.exists():
            return digest
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".tmp-{secrets.token_hex(6)}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        return digest

    def get(self, digest: str) -> bytes | None:
        try:
            return self._path(digest).read_bytes()
        except FileNotFoundError:
            return None

    def has(self, digest: str) -> bool:
        return self._path(digest).exists()

    # A blob arriving from a peer is assembled in ``partial/<digest>`` (so a transfer cut
    # halfway resumes from its size) and only becomes a blob once its hash checks out: then
    # the assembled file itself is fsynced and renamed into place, as ``put`` does with its
    # temporary file (a 1 MB blob is written once, not copied).  Chunks are not fsynced one
    # by one: a partial that a power cut left shorter, or with a wrong tail, fails the hash
    # check and is fetched again, so no fsync on the way can make a blob more correct.

    def _partial(self, digest: str) -> Path:
        return self.root / "partial" / _check_digest(digest)

    def partial_size(self, digest: str) -> int:
        try:
            return self._partial(digest).stat().st_size
        except FileNotFoundError:
            return 0

    def write_partial(self, digest: str, offset: int, data: bytes) -> int:
        """Append a chunk at ``offset`` (must equal the partial size); returns the new size."""
        path = self._partial(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as f:
            if f.tell() != offset:
                raise ValueError(f"chunk at {offset} does not follow {f.tell()} bytes")
            f.write(data)
            f.flush()
            return f.tell()

    def complete_partial(self, digest: str) -> bool:
        """Verify the assembled bytes; a match becomes the blob, a mismatch is discarded."""
        path = self._partial(digest)
        with open(path, "rb") as f:
            hashed = hashlib.file_digest(f, "sha256").hexdigest()
            if hashed == digest:
                os.fsync(f.fileno())
        if hashed != digest:
            path.unlink()
            return False
        target = self._path(digest)
        if target.exists():
            path.unlink()  # arrived meanwhile by another way: blobs are never rewritten
            return True
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
        return True


class MemoryBlobs:
    """The in-memory fake of :class:`DirBlobs`."""

    def __init__(self) -> None:
        self._data: dict[str, bytes] = {}
        self._partials: dict[str, bytes] = {}

    def put(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        self._data[digest] = data
        return digest

    def get(self, digest: str) -> bytes | None:
        return self._data.get(_check_digest(digest))

    def has(self, digest: str) -> bool:
        return digest in self._data

    def partial_size(self, digest: str) -> int:
        return len(self._partials.get(_check_digest(digest), b""))

    def write_partial(self, digest: str, offset: int, data: bytes) -> int:
        current = self._partials.get(_check_digest(digest), b"")
        if len(current) != offset:
            raise ValueError(f"chunk at {offset} does not follow {len(current)} bytes")
        self._partials[digest] = current + data
        return offset + len(data)

    def complete_partial(self, digest: str) -> bool:
        data = self._partials.pop(_check_digest(digest), b"")
        if hashlib.sha256(data).hexdigest() != digest:
            return False
        self.put(data)
        return True
