"""The blob directory: blobs stored once under their hash, and blobs assembled from a peer's
chunks (resumable, verified before they count).  Real files in a temp dir."""

from __future__ import annotations

import hashlib
import os
import secrets
from pathlib import Path

import pytest

from engine.blobs import DirBlobs

CHUNK = 64 * 1024


def _assemble(blobs: DirBlobs, digest: str, data: bytes, start: int = 0) -> None:
    for offset in range(start, len(data), CHUNK):
        blobs.write_partial(digest, offset, data[offset : offset + CHUNK])


def test_an_assembled_blob_becomes_the_blob_without_being_copied(tmp_path: Path) -> None:
    blobs = DirBlobs(tmp_path / "blobs")
    data = secrets.token_bytes(5 * CHUNK + 17)
    digest = hashlib.sha256(data).hexdigest()
    _assemble(blobs, digest, data)
    assembled = os.open(tmp_path / "blobs" / "partial" / digest, os.O_RDONLY)
    try:
        assert not blobs.has(digest)  # not a blob until it is verified
        assert blobs.complete_partial(digest)
        assert blobs.get(digest) == data and blobs.partial_size(digest) == 0
        # The file assembled from the chunks is the blob (renamed, not read and written
        # again).  Held open, its inode cannot be handed to a copy made after an unlink.
        blob = os.stat(tmp_path / "blobs" / digest[:2] / digest[2:])
        assert os.path.samestat(os.fstat(assembled), blob) and blob.st_nlink == 1
    finally:
        os.close(assembled)


def test_a_transfer_cut_halfway_resumes_from_what_arrived(tmp_path: Path) -> None:
    blobs = DirBlobs(tmp_path / "blobs")
    data = secrets.token_bytes(4 * CHUNK)
    digest = hashlib.sha256(data).hexdigest()
    _assemble(blobs, digest, data[: 2 * CHUNK])
    restarted = DirBlobs(tmp_path / "blobs")
    have = restarted.partial_size(digest)
    assert have == 2 * CHUNK
    with pytest.raises(ValueError):
        restarted.write_partial(digest, have + 1, b"x")  # a chunk that does not follow
    _assemble(restarted, digest, data, start=have)
    assert restarted.complete_partial(digest) and restarted.get(digest) == data


def test_assembled_bytes_that_do_not_match_their_hash_are_discarded(tmp_path: Path) -> None:
    blobs = DirBlobs(tmp_path / "blobs")
    data = secrets.token_bytes(2 * CHUNK)
    digest = hashlib.sha256(data).hexdigest()
    _assemble(blobs, digest, data[:-1] + bytes([data[-1] ^ 1]))  # a wrong last byte
    assert not blobs.complete_partial(digest)
    assert not blobs.has(digest) and blobs.partial_size(digest) == 0  # fetched anew


def test_a_blob_already_here_is_kept_and_its_second_copy_dropped(tmp_path: Path) -> None:
    blobs = DirBlobs(tmp_path / "blobs")
    data = secrets.token_bytes(CHUNK + 1)
    digest = blobs.put(data)
    stored = os.stat(tmp_path / "blobs" / digest[:2] / digest[2:]).st_ino
    _assemble(blobs, digest, data)
    assert blobs.complete_partial(digest)
    assert blobs.partial_size(digest) == 0 and blobs.get(digest) == data
    assert os.stat(tmp_path / "blobs" / digest[:2] / digest[2:]).st_ino == stored
