"""The background closer of replaced files' descriptors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsbridge.fdcloser import DescriptorCloser


def test_every_descriptor_handed_over_is_closed_by_drain_and_the_closer_restarts(
    tmp_path: Path,
) -> None:
    closer = DescriptorCloser()
    for round_ in range(2):  # the second round restarts the thread after a drain
        path = tmp_path / f"f{round_}"
        path.write_bytes(b"x")
        fds = [os.open(path, os.O_RDONLY) for _ in range(50)]
        for fd in fds:
            closer.close(fd)
        closer.drain()
        for fd in fds:
            with pytest.raises(OSError):
                os.fstat(fd)  # closed (EBADF): no descriptor leaks
