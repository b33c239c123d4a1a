"""A join's store writes alone: how long they take and how much reaches the disk.

``python -m bench.experiments.store_pattern [--dir DIR] [--cards 10000] [--batch 125]
[--checkpoint 1000] [--bases intents|direct|none]``

The pattern of a joining daemon, without the network, the documents or the files: per batch
of ``--batch`` cards, the received updates and their history rows (one transaction), the
write intents (one transaction, no fsync of its own), the ``syncfs`` that makes the batch's
temp files and those intents durable, the ``syncfs`` of the batch's folders, then the bases
taking over the intents (one transaction).  Card ids are random, as in a real space; each
card carries 2 KB.  ``--checkpoint`` is SQLite's ``wal_autocheckpoint`` in pages.  Prints
the wall time and the bytes the process caused to be written to the disk (``write_bytes``
of ``/proc/self/io``: on tmpfs it stays near zero).  Run it on the file system to measure.
``--bases`` says what is stored of the bases: ``intents`` (the default, as above), ``direct``
(each base written once, with no intent before it and no settling after: unsafe, a bound),
``marked`` (each base written once under its own key, with a row in a small table of
unsettled keys in the same transaction, and settling deletes those rows: what Tack's store
could do for a file that had no base, as every file of a join, instead of renaming each
intent's row) or ``none`` (only the updates and their history rows).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from engine.store import Appended, Base, Store

MARK = "INSERT INTO unsettled (key) VALUES (?)"
UNMARK = "DELETE FROM unsettled WHERE key = ?"


def written_to_disk() -> int:
    with open("/proc/self/io", encoding="ascii") as io:
        return next(int(line.split()[1]) for line in io if line.startswith("write_bytes"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=None, help="where to make the store")
    p.add_argument("--cards", type=int, default=10_000)
    p.add_argument("--batch", type=int, default=125)
    p.add_argument("--checkpoint", type=int, default=1000)
    p.add_argument("--bases", choices=("intents", "direct", "marked", "none"), default="intents")
    args = p.parse_args()
    syncfs = ctypes.CDLL(None, use_errno=True).syncfs
    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="tack-store-pattern-"))
    try:
        store = Store.open(work / "store.sqlite")
        store._conn.execute(f"PRAGMA wal_autocheckpoint={args.checkpoint}")
        if args.bases == "marked":
            store._conn.execute("CREATE TABLE unsettled (key TEXT PRIMARY KEY)")
        ids = [secrets.token_urlsafe(12) for _ in range(args.cards)]
        content = secrets.token_hex(1024).encode()  # 2 KB
        folder = os.open(work, os.O_RDONLY)
        before, start = written_to_disk(), time.perf_counter()
        for i in range(0, len(ids), args.batch):
            chunk = ids[i : i + args.batch]
            paths = [f"board{i // 100:03d}/{c}.md" for c in chunk]
            seqs = store.append(
                [
                    Appended(c, content, c, "peer", "device", 0.0, path, "from a peer")
                    for c, path in zip(chunk, paths, strict=True)
                ]
            )
            suffix = "#intent" if args.bases == "intents" else ""
            intents = [
                Base(c + suffix, path, c, content, "0" * 64, seq)
                for c, path, seq in zip(chunk, paths, seqs, strict=True)
            ]
            if args.bases == "marked":
                with store._tx() as c:
                    for base in intents:
                        store._put_base(c, base)
                    c.executemany(MARK, [(b.key,) for b in intents])
            elif args.bases != "none":
                store.put_bases_and_meta(intents, {})
            syncfs(folder)  # the temp files and the intents
            syncfs(folder)  # the folders
            if args.bases == "intents":
                bases = [replace(b, key=b.doc_id) for b in intents]
                store.replace_bases_from([(b, b.key + "#intent") for b in bases], [])
            elif args.bases == "marked":
                with store._tx() as c:
                    c.executemany(UNMARK, [(b.key,) for b in intents])
        took = time.perf_counter() - start
        os.close(folder)
        wal = work / "store.sqlite-wal"
        print(
            f"{args.cards} cards, batches of {args.batch}, checkpoint {args.checkpoint} pages,"
            f" bases {args.bases}: "
            f"{took:.2f} s, {(written_to_disk() - before) / 1e6:.0f} MB to disk, "
            f"WAL {wal.stat().st_size / 1e6:.0f} MB at the end"
        )
        store.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
