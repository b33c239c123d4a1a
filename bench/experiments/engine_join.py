"""How fast could a join be if it received everything first and landed it in bulk? (P2)

``python -m bench.experiments.engine_join [--reps 6] [--cards 10000] [--fresh-ext4 SIZE]
[--old TREE]``

One founder A (``tack up`` of this checkout) serves a space of ``--cards`` 2 KB text cards
and 20 1 MB binary cards.  Joining devices B alternate two ways of joining it, each timed
by the harness's inotify probe until B's folder is complete:

* **tack**: ``tack join`` then ``tack up`` -- the real daemon, which lands files as their
  documents arrive (the P2 row of ``bench.run``);
* **engine then bulk**: ``tack join`` then a process that runs only Tack's engine (the
  network, the sessions, the replica, the SQLite store: no folder bridge, no watcher),
  waits until every card's document and blob is here, and then lands every file in bulk:
  batches of 500 through :func:`fsbridge.atomic.atomic_write_many` with the same write
  intents, one transaction for them and one for the settled bases per batch, as the bridge
  does.  It prints when it was synced and when it had landed.

The second is not a product: it skips what makes the bridge safe while files land (no
watcher, so a save made during the join is not taken in; no render planning against the
folder's and the store's current state; no canvases).  It is an upper bound on what a
"receive first, land in bulk" join could gain, and it splits a join into the engine's part
and the landing's.  For each join it prints the time until B's folder is complete, the CPU
seconds of B's process tree (and, for the engine process, when it was synced), of A, and of
the harness.  With ``--old TREE`` it alternates the engine-then-bulk join of this checkout
and of ``TREE`` instead (the child runs with ``TREE`` on its ``PYTHONPATH``), for a change to
the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import workload
from bench.experiments.join_ab import _founder
from bench.freshfs import environ_set, fresh_ext4, temp_dir_in
from bench.probe import FolderProbe
from bench.tackdev import Fleet, TackDevice, main_thread_cpu_seconds, proc_cpu_seconds, tack_env

LAND_BATCH = 500
KINDS = ("text", "binary")  # the cards that are files (a board is a folder)


async def _engine_join(root: Path, peer: tuple[str, int]) -> dict[str, float]:
    """The child: sync with the engine alone, then land every file in bulk."""
    from engine import DirBlobs, Replica, Store
    from engine.changes import Change
    from engine.network import Network, NetworkConfig
    from engine.presence import Presence
    from engine.replica import SPACE_DOC, sha256_hex
    from engine.spacedoc import CardView
    from engine.store import Base
    from engine.tls import issue_leaf
    from fsbridge.atomic import Companion, Written, atomic_write_many
    from fsbridge.classify import encode_text
    from fsbridge.device import this_device
    from fsbridge.spacedir import open_space

    imported = time.monotonic()
    space = open_space(root)
    store = Store.open(space.store_path)
    identity = this_device(None)
    replica = Replica(store, identity.device_id)
    blobs = DirBlobs(space.blobs_path)
    done = asyncio.Event()
    texts_here: set[str] = set()
    want_cards, want_texts = int(os.environ["EJ_CARDS"]), int(os.environ["EJ_TEXTS"])

    def file_cards() -> list[CardView]:
        return [c for c in replica.cards().values() if c.kind in KINDS and not c.deleted]

    def complete() -> bool:
        cards = file_cards()
        if len(cards) < want_cards:
            return False
        return all((c.id in texts_here) if c.kind == "text" else blobs.has(c.blob) for c in cards)

    def changed(change: Change) -> None:
        if change.doc_id != SPACE_DOC:
            texts_here.add(change.doc_id)
        if len(texts_here) >= want_texts and complete():
            done.set()

    def blob_arrived(_: str) -> None:
        if len(texts_here) >= want_texts and complete():
            done.set()

    replica.changes.subscribe(changed)
    network = Network(
        replica,
        blobs,
        space.keys(),
        identity,
        issue_leaf(identity),
        NetworkConfig(host="127.0.0.1", port=0, name=identity.name, peers=[peer]),
        on_blob=blob_arrived,
        presence=Presence(replica, identity.device_id, identity.name),
    )
    await network.start()
    await done.wait()
    synced = time.monotonic()
    cards = sorted(file_cards(), key=lambda c: c.path)
    for start in range(0, len(cards), LAND_BATCH):
        chunk = cards[start : start + LAND_BATCH]
        writes: list[tuple[Path, bytes, bytes | None]] = []
        bases: list[Base] = []
        for card in chunk:
            if card.kind == "text":
                data: bytes | None = encode_text(replica.text(card.id))
            else:
                data = blobs.get(card.blob)
            assert data is not None
            writes.append((root / card.path, data, None))
            seq = replica.latest_seq(card.id)
            bases.append(Base(card.id, card.path, card.id, data, sha256_hex(data), seq))

        def intents(_: list[int | None], bases: list[Base] = bases) -> Companion:
            store.put_bases_and_meta([replace(b, key=b.key + "#intent") for b in bases], {})
            return Companion(space.store_path, store.barrier)

        outcomes = atomic_write_many(writes, intents)
        assert all(isinstance(o, Written) for o in outcomes), outcomes[:3]
        store.replace_bases_from([(b, b.key + "#intent") for b in bases], [])
    landed = time.monotonic()
    await network.stop()
    replica.close()
    store.close()
    return {"imported": imported, "synced": synced, "landed": landed}


def _child(argv: list[str]) -> None:
    root, peer = Path(argv[0]), argv[1]
    host, _, port = peer.rpartition(":")
    times = asyncio.run(_engine_join(root, (host, int(port))))
    print(json.dumps(times), flush=True)


def _join(
    variant: str,
    b: TackDevice,
    a: TackDevice,
    tree: dict[str, bytes],
    link: str,
    cards: int,
    code: Path,
) -> dict[str, float]:
    b.space.mkdir(parents=True)
    with FolderProbe(b.space) as probe:
        expectation = probe.expect(tree)
        a_cpu, own = proc_cpu_seconds(a.pid), time.process_time()
        t0 = time.monotonic()
        b.join(link)
        row: dict[str, float] = {}
        if variant == "tack":
            b.up(peers=[a.address], wait=False)
            done = expectation.wait(600)
            row["cpu_b"] = proc_cpu_seconds(b.pid)
            row["main"] = main_thread_cpu_seconds(b.pid)
            b.stop()
        else:
            before = os.times()  # the child's CPU, and tack join's, once they are reaped
            env = tack_env(b.home) | {
                "EJ_CARDS": str(cards + 20),
                "EJ_TEXTS": str(cards),
                "PYTHONPATH": str(code),  # whose engine the child runs
            }
            child = subprocess.Popen(
                [sys.executable, __file__, "--child", str(b.space), a.address],
                env=env, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            done = expectation.wait(600)
            out, _ = child.communicate(timeout=600)
            times = json.loads(out.strip().splitlines()[-1])
            row["synced"] = times["synced"] - t0
            row["imported"] = times["imported"] - t0
            after = os.times()
            row["cpu_b"] = (after.children_user + after.children_system) - (
                before.children_user + before.children_system
            )
        row["join"] = done - t0
        row["cpu_a"] = proc_cpu_seconds(a.pid) - a_cpu
        row["harness"] = time.process_time() - own
    return row


def main() -> None:
    if sys.argv[1:2] == ["--child"]:
        _child(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=6, help="joins in all, alternating (even)")
    p.add_argument("--cards", type=int, default=10_000)
    p.add_argument("--fresh-ext4", metavar="SIZE", default=None)
    p.add_argument(
        "--old",
        type=Path,
        default=None,
        help="alternate the engine-then-bulk join of this checkout and of this tree instead",
    )
    args = p.parse_args()
    here = Path(__file__).resolve().parents[2]
    variants = ("tack", "engine") if args.old is None else ("engine-old", "engine")
    with contextlib.ExitStack() as stack:
        if args.fresh_ext4:
            mount = stack.enter_context(fresh_ext4(args.fresh_ext4))
            stack.enter_context(environ_set("TMPDIR", str(temp_dir_in(mount))))
        work = Path(tempfile.mkdtemp(prefix="tack-engine-join-"))
        stack.callback(shutil.rmtree, work, True)
        tree = workload.make_tree(args.cards, 20, 100)
        src = work / "src"
        workload.write_tree(src, tree)
        results: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
        with Fleet(work / "tack") as fleet:
            a, link = _founder(fleet, "A", src)
            for rep in range(args.reps):
                variant = variants[rep % 2]
                b = fleet.device(f"B{rep}")
                code = args.old.resolve() if variant == "engine-old" else here
                row = _join(variant, b, a, tree, link, args.cards, code)
                results[variant].append(row)
                print(
                    f"join {rep} ({variant}): {row['join']:.2f} s"
                    + (f"; synced {row['synced']:.2f} s, imports done {row['imported']:.2f} s"
                       if variant != "tack" else f"; main thread {row['main']:.2f} s")
                    + f"; CPU B {row['cpu_b']:.2f} s, A {row['cpu_a']:.2f} s,"
                    f" the harness {row['harness']:.2f} s",
                    flush=True,
                )  # fmt: skip
        medians: dict[str, dict[str, float]] = {}
        for variant, rows in results.items():
            keys = ("join", "synced") if variant != "tack" else ("join",)
            medians[variant] = {k: statistics.median(r[k] for r in rows) for k in keys}
            joins = [round(r["join"], 2) for r in rows]
            print(
                f"{variant}: {joins}, median {medians[variant]['join']:.2f} s"
                + (f" (synced {medians[variant]['synced']:.2f} s)" if "synced" in keys else "")
            )
        first, second = variants
        for key in ("join", "synced"):
            if key in medians[first] and key in medians[second]:
                ratio = medians[first][key] / medians[second][key]
                print(f"ratio {first} / {second} ({key}): {ratio:.2f}")


if __name__ == "__main__":
    main()
