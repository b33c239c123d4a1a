"""A join's files alone: Tack's atomic landing against plain writes (P2).

``python -m bench.experiments.landing_pattern [--dir DIR] [--files 10000] [--reps 2]``

``--files`` files of 2 KB in folders of 100, written three ways, in turn, into new folders
under ``--dir``: with plain ``open``/``write``/``close`` and one ``syncfs`` at the end (the
floor's way); and with :func:`fsbridge.atomic.atomic_write_many` in batches of 125 and of
500 (unnamed temp files, one ``syncfs`` before they are linked in and one for the folders
after, per batch), without the store's write intents (``store_pattern.py`` measures those).
Prints the wall time and this process's user and system CPU for each.  What is written is
kept until the end (deleting files slows the creations that follow on some file systems;
see ``KEEP_COPIES`` in ``bench/scenarios.py``).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fsbridge.atomic import atomic_write_many

PER_FOLDER = 100


def _plain(root: Path, data: list[bytes]) -> None:
    for i, content in enumerate(data):
        folder = root / f"board{i // PER_FOLDER:03d}"
        if i % PER_FOLDER == 0:
            folder.mkdir(parents=True)
        with open(folder / f"card{i}.md", "wb") as f:
            f.write(content)
    fd = os.open(root, os.O_RDONLY)
    try:
        ctypes.CDLL(None, use_errno=True).syncfs(fd)
    finally:
        os.close(fd)


def _atomic(batch: int) -> Callable[[Path, list[bytes]], None]:
    def land(root: Path, data: list[bytes]) -> None:
        for start in range(0, len(data), batch):
            atomic_write_many(
                [
                    (root / f"board{i // PER_FOLDER:03d}" / f"card{i}.md", data[i], None)
                    for i in range(start, min(start + batch, len(data)))
                ]
            )

    return land


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=None, help="where to write")
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--reps", type=int, default=2)
    args = p.parse_args()
    data = [secrets.token_hex(1024).encode() for _ in range(args.files)]
    ways = {
        "plain writes, one syncfs": _plain,
        "atomic_write_many, batches of 125": _atomic(125),
        "atomic_write_many, batches of 500": _atomic(500),
    }
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="tack-landing-pattern-"))
    try:
        for rep in range(args.reps):
            for n, (name, land) in enumerate(ways.items()):
                root = work / f"{rep}-{n}"
                root.mkdir()
                before, start = os.times(), time.perf_counter()
                land(root, data)
                took, after = time.perf_counter() - start, os.times()
                print(
                    f"{name}: {took:.2f} s, user {after.user - before.user:.2f} s,"
                    f" system {after.system - before.system:.2f} s",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
