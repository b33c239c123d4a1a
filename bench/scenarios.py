"""The seven scenarios of the "Fast" issue, each measured side by side with its baselines.

Every function takes the run's :class:`~bench.context.Context` and fills one
:class:`~bench.results.Scenario`: rows of samples (Tack and baselines, measured in the same
invocation), the issue's goals judged on them, and notes on anything that makes a number
less than it seems (a reduced size, a coalesced save, a sample too small for its p99).

* P1 — one 2 KB card saved repeatedly on A: save → B's file holds it (inotify on B).
* P2 — ``tack up --join`` of a 10,000-card space (plus 20 binary cards of 1 MB): join → B's folder
  complete; Syncthing's fresh device; ``cp -r`` and ``rsync`` over loopback.
* P3 — automerge-paper replayed as saves on A (one every 50 patches): end to end until B is
  byte-identical, and per-save ingest time in-process, against bare pycrdt.
* P4 — ``git checkout`` switching 1,000 cards on A: checkout → all on B.
* P5 — a 10,000-card space: (re)start to ready, RSS, idle CPU; Syncthing the same.
* P6 — the trace's 259,778 patches through ``Replica.transact`` vs bare pycrdt.
* P7 — 8 devices, one edit: all folders updated.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench import floor, workload
from bench.context import Context
from bench.probe import FolderProbe, ProbeTimeout
from bench.profiling import Spy, cprofile
from bench.results import Goal, Row, Scenario
from bench.syncthing import INITIAL_SCAN, Cluster, SyncthingNode
from bench.tackdev import Fleet, TackDevice, proc_cpu_seconds, proc_rss_kib

ST10 = "syncthing-10s"
ST1 = "syncthing-1s"
CRDT_FLOOR = "crdt floor (python)"
SAFE_FLOOR = "crdt floor, crash-safe (python)"
TLS_FLOOR = "join floor: TLS, layout, crash-safe (python)"
SYNC_FLOOR = "join floor: y-sync, hashes, watcher, TLS, layout, crash-safe (python)"


# -- small pieces -------------------------------------------------------------------------------


def save(path: Path, data: bytes) -> None:
    """Save a file in place, as a simple editor or ``echo >`` does."""
    with open(path, "wb") as f:
        f.write(data)


def timed_save(
    space: Path, probes: list[FolderProbe], rel: str, data: bytes, timeout: float
) -> float:
    """Milliseconds from the save on one device until every probed folder holds ``data``."""
    exps = [p.expect({rel: data}) for p in probes]
    t0 = time.perf_counter()
    save(space / rel, data)
    last = max(e.wait(timeout, poll_every=0.25) for e in exps)
    return (last - t0) * 1000


def goal(sc: Scenario, text: str, met: bool | None, value: str, row: str = "") -> None:
    """Record a goal verdict, judged on the row labelled ``row`` ("tool metric"; default:
    the scenario's first Tack row)."""
    if not row:
        first = next((r for r in sc.rows if r.tool == "tack"), None)
        row = f"{first.tool} {first.metric}" if first is not None else "tack"
    sc.goals.append(Goal(text, met, value, row))


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "n/a"
    return f"{x:.3g}{unit}" if abs(x) < 100 else f"{x:.0f}{unit}"


@contextlib.contextmanager
def spied(ctx: Context, sc: Scenario, targets: list[tuple[str, int]]) -> Iterator[None]:
    """py-spy on the given daemons while the block runs, when ``--profile`` is on."""
    if not ctx.profile:
        yield
        return
    spies = [(name, Spy(pid, ctx.out / "profiles" / f"{sc.id}-{name}.txt").start())
             for name, pid in targets]  # fmt: skip
    try:
        yield
    finally:
        for name, spy in spies:
            top = spy.stop()
            sc.profiles[name] = top if top is not None else {"note": spy.note}
        sc.notes.append("measured with py-spy attached (--profile): times include its overhead")


def tack_pair(
    ctx: Context, fleet: Fleet, files: dict[str, bytes], timeout: float = 120
) -> tuple[TackDevice, TackDevice, FolderProbe]:
    """Founder A with ``files``, B joined by link and up with A as its peer; B in sync."""
    a = fleet.founder("A")
    workload.write_tree(a.space, files)
    a.init()
    link = a.share()
    a.up()
    b = fleet.device("B")
    b.space.mkdir(parents=True)
    b.join(link)
    probe = FolderProbe(b.space)
    exp = probe.expect(files)
    b.up(peers=[a.address])
    try:
        exp.wait(timeout)
    except ProbeTimeout:
        probe.close()
        raise
    return a, b, probe


def st_cluster(ctx: Context, root: Path, names: list[str], delay: int) -> Cluster:
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    return Cluster(root, ctx.netns(), names, delay)


def wait_st_synced(b: SyncthingNode, files: dict[str, bytes], timeout: float) -> None:
    with FolderProbe(b.folder) as probe:
        probe.expect(files).wait(timeout)


# -- P1 -----------------------------------------------------------------------------------------


def p1(ctx: Context, sc: Scenario) -> None:
    s = ctx.sizes
    rel = "card.md"
    sc.params = {"saves": s.p1_saves, "card_bytes": 2048, "gap_s": s.p1_gap_s}
    lat: list[float] = []
    misses = 0
    with Fleet(ctx.work / "p1") as fleet:
        a, b, probe = tack_pair(ctx, fleet, {rel: workload.text_card(1)})
        with probe, spied(ctx, sc, [("tack-A", a.pid), ("tack-B", b.pid)]):
            for i in range(1, s.p1_saves + 1):
                try:
                    lat.append(timed_save(a.space, [probe], rel, workload.edited_card(1, i), 10))
                except ProbeTimeout:
                    misses += 1
                time.sleep(s.p1_gap_s)
        sc.notes += fleet.troubles()
    if misses:
        sc.notes.append(f"tack: {misses} of {s.p1_saves} saves did not reach B within 10 s")
    sc.add(Row("tack", "save→B", "ms", lat, vs=[ST10, ST1]))
    if ctx.use_syncthing:
        for delay, n, tool in ((10, s.p1_st10_saves, ST10), (1, s.p1_st1_saves, ST1)):
            values, lost = _st_p1(ctx, delay, n, rel)
            sc.add(Row(tool, "save→B", "ms", values, note=f"fsWatcherDelayS={delay}"))
            if lost:
                sc.notes.append(f"{tool}: {lost} of {n} saves did not reach B within 60 s")
    sc.finish()
    row = sc.row("tack")
    assert row is not None
    med = row.median
    p99 = row.summary.p99 if row.summary else None
    goal(sc, "median ≤ 25 ms", med is not None and med <= 25, fmt(med, " ms"))
    goal(sc, "p99 ≤ 100 ms", p99 is not None and p99 <= 100, fmt(p99, " ms") + f" (n={len(lat)})")
    r10, r1 = row.ratios.get(ST10), row.ratios.get(ST1)
    goal(sc, "≥ 10× faster than Syncthing (10 s delay)", None if r10 is None else r10 >= 10,
         fmt(r10, "×"))  # fmt: skip
    goal(sc, "faster than Syncthing (1 s delay)", None if r1 is None else r1 > 1, fmt(r1, "×"))


def _st_p1(ctx: Context, delay: int, n: int, rel: str) -> tuple[list[float], int]:
    values: list[float] = []
    lost = 0
    first = {rel: workload.text_card(1)}
    with st_cluster(ctx, ctx.work / f"p1-st{delay}", ["A", "B"], delay) as cluster:
        a, b = cluster.nodes
        workload.write_tree(a.folder, first)
        cluster.start()
        with FolderProbe(b.folder) as probe:
            probe.expect(first).wait(120)
            for i in range(1, n + 1):
                try:
                    values.append(
                        timed_save(a.folder, [probe], rel, workload.edited_card(1, i), 60)
                    )
                except ProbeTimeout:
                    lost += 1
                time.sleep(0.2)
    return values, lost


# -- the big space (P2, P5) ---------------------------------------------------------------------


class BigSpace:
    """The 10,000-card space: a pristine source tree, Tack's founder and Syncthing's."""

    def __init__(self, ctx: Context) -> None:
        s = ctx.sizes
        self.ctx = ctx
        self.root = ctx.work / "big"
        self.tree = workload.make_tree(
            s.p2_text, s.p2_binary, s.per_board, bin_size=s.p2_binary_bytes
        )
        self.src = self.root / "src"
        workload.write_tree(self.src, self.tree)
        self.bytes = sum(len(v) for v in self.tree.values())
        self.fleet = ctx.stack.enter_context(Fleet(self.root / "tack"))
        self.a = self.fleet.device("A")
        subprocess.run(["cp", "-r", str(self.src), str(self.a.space)], check=True)
        self.a.init()
        self.link = self.a.share()
        ctx.say(f"big space: tack up A indexes {len(self.tree)} files for the first time")
        self.a.up(timeout=s.timeout_s * 4)
        self.first_index_s = self.a.wait_ready()
        ctx.say(f"big space: A ready after {self.first_index_s:.1f} s")
        self.cluster: Cluster | None = None
        self.st_index_s: float | None = None

    def syncthing(self, n_joiners: int) -> Cluster:
        if self.cluster is None:
            names = ["A"] + [f"B{k}" for k in range(1, n_joiners + 1)]
            root = self.root / "st"
            self.cluster = self.ctx.stack.enter_context(st_cluster(self.ctx, root, names, 10))
            a = self.cluster.nodes[0]
            subprocess.run(["cp", "-r", f"{self.src}/.", str(a.folder)], check=True)
            self.cluster.start([a])
            self.st_index_s = a.wait_line(INITIAL_SCAN, self.ctx.sizes.timeout_s) - a.spawned_at
        return self.cluster


def big_space(ctx: Context) -> BigSpace:
    if "big" not in ctx.shared:
        ctx.shared["big"] = BigSpace(ctx)
    big: BigSpace = ctx.shared["big"]
    return big


# -- P2 -----------------------------------------------------------------------------------------

# KEEP_COPIES: every copy P2 makes (each Tack join, each floor rep) gets a folder of its own
# and keeps it until the run ends.  Deleting one copy's 10,000 files before the next was timed
# made the next one pay for it: for a few minutes after many inodes are freed, ext4's inode
# allocator checks each free inode it considers for a recent deletion (``recently_deleted``);
# perf showed that check taking most of the kernel time of creating 10,000 files, which then
# took 2 s instead of 0.3 s (BENCHMARKS.md, "Sixth round").


def p2(ctx: Context, sc: Scenario) -> None:
    s = ctx.sizes
    big = big_space(ctx)
    sc.params = {
        "text_cards": s.p2_text, "binary_cards": s.p2_binary,
        "binary_bytes": s.p2_binary_bytes, "cards_per_board": s.per_board,
        "total_bytes": big.bytes, "tack_reps": s.p2_reps, "syncthing_reps": s.p2_st_reps,
    }  # fmt: skip
    sc.notes.append(
        f"layout: {s.per_board} cards per board folder; times start when `tack up --join "
        "LINK DIR` (join and run, one command) is spawned (Tack) or when the new device's "
        "process is spawned (Syncthing, configured beforehand) and end when the last file on "
        "B holds the right bytes (inotify on B)"
    )
    # Before the joins, in the folder that holds them: a slow row here means the file
    # system was slow to make files at the time (KEEP_COPIES), for Tack and Syncthing alike.
    convoy: list[tuple[float, float]] | OSError
    try:
        convoy = [floor.syscall_beside_busy_thread(big.root) for _ in range(5)]
    except OSError as exc:
        convoy = exc
    tack_times: list[float] = []
    for k in range(1, s.p2_reps + 1):
        b = big.fleet.device(f"B{k}")
        b.space.mkdir(parents=True)
        with FolderProbe(b.space) as probe:
            exp = probe.expect(big.tree)
            t0 = time.perf_counter()
            b.up("--join", big.link, peers=[big.a.address], wait=False)
            with spied(ctx, sc, [(f"tack-B{k}", b.pid), ("tack-A", big.a.pid)] if k == 1 else []):
                t = exp.wait(s.timeout_s)
            tack_times.append(t - t0)
            if exp.polled:
                sc.notes.append(f"tack B{k}: {exp.polled} arrivals seen only by the 0.5 s poll")
        extra = workload.user_files(b.space) - set(big.tree)
        if extra:
            sc.notes.append(f"tack B{k} has unexpected files: {sorted(extra)[:5]}")
        ctx.say(f"P2 tack join {k}: {tack_times[-1]:.2f} s")
        b.stop()
        sc.notes += [f"B{k}: {t}" for t in b.troubles()]
        # B's folder stays until the run ends: see KEEP_COPIES.
    sc.add(Row("tack", "join→complete", "s", tack_times,
               vs=[ST10, "rsync-loopback", "rsync-loopback+fsync", "rsync-loopback+syncfs",
                   "cp -r", CRDT_FLOOR, SAFE_FLOOR, TLS_FLOOR, SYNC_FLOOR]))  # fmt: skip

    if ctx.use_syncthing:
        cluster = big.syncthing(s.p2_st_reps)
        st_times: list[float] = []
        for node in cluster.nodes[1 : 1 + s.p2_st_reps]:
            with FolderProbe(node.folder) as probe:
                exp = probe.expect(big.tree)
                t0 = time.perf_counter()
                cluster.start([node])
                t = exp.wait(s.timeout_s)
                st_times.append(t - t0)
            ctx.say(f"P2 syncthing {node.name}: {st_times[-1]:.2f} s")
            node.stop()
        sc.add(Row(ST10, "join→complete", "s", st_times, note="fresh device, pre-configured"))

    reps = range(s.p2_floor_reps)
    copies = big.root / "copies"  # one fresh folder per copy: see KEEP_COPIES
    copies.mkdir(exist_ok=True)
    cp_times = [floor.cp_r(big.src, copies / f"cp-{k}") for k in reps]
    sc.add(Row("cp -r", "join→complete", "s", cp_times, note="local copy, no fsync"))
    with floor.rsync_daemon(big.src, big.root / "rsyncd") as url:
        rs_times = [floor.rsync_pull(url, copies / f"rsync-{k}") for k in reps]
        rs_sync = [floor.rsync_pull(url, copies / f"rsync-fsync-{k}", durable="fsync")
                   for k in reps]  # fmt: skip
        rs_syncfs = [floor.rsync_pull(url, copies / f"rsync-syncfs-{k}", durable="syncfs")
                     for k in reps]  # fmt: skip
    sc.add(Row("rsync-loopback", "join→complete", "s", rs_times,
               note="rsync daemon on 127.0.0.1, no fsync"))  # fmt: skip
    sc.add(Row("rsync-loopback+fsync", "join→complete", "s", rs_sync,
               note="the same with --fsync: every file written durably"))  # fmt: skip
    sc.add(Row("rsync-loopback+syncfs", "join→complete", "s", rs_syncfs,
               note="plain rsync, then one syncfs of the copy: durability batched"))  # fmt: skip
    crdt = [floor.crdt_join_floor(big.tree, copies / f"crdt-{k}") for k in reps]
    sc.add(Row(CRDT_FLOOR, "join→complete", "s", crdt,
               note="in one process: pycrdt applies each card's update, SQLite keeps it, the "
                    "file is written; one syncfs; no transport, no crash bookkeeping"))  # fmt: skip
    # Each batch placed on a second thread while the next is prepared: the lower of the two
    # ways in the thirteenth round's join_floors runs (BENCHMARKS.md).
    safe = [floor.crash_safe_join_floor(big.tree, copies / f"safe-{k}", overlap=True)
            for k in reps]  # fmt: skip
    sc.add(Row(SAFE_FLOOR, "join→complete", "s", safe, vs=[ST10],
               note="the CRDT floor plus what a crash must not undo, per batch of 128 files: "
                    "write intents, a syncfs before the renames and one after, the intents "
                    "made bases; each batch placed by a second thread"))  # fmt: skip
    tls = [floor.tls_join_floor(big.tree, copies / f"tls-{k}", overlap=True) for k in reps]
    sc.add(Row(TLS_FLOOR, "join→complete", "s", tls, vs=[ST10],
               note="the crash-safe floor fed by another process over TLS on loopback, the "
                    "paths read from a layout document"))  # fmt: skip
    synced = [floor.sync_join(big.tree, copies / f"sync-{k}", overlap=True) for k in reps]
    overflowed = sum(1 for run in synced if run.watched.overflows)
    sc.add(Row(SYNC_FLOOR, "join→complete", "s", [run.seconds for run in synced], vs=[ST10],
               note="the TLS floor with the rest of a join that DESIGN.md names: a y-protocols "
                    "SyncStep1/SyncStep2 per card, blobs checked against their digests, and a "
                    "watchdog watcher in a process of its own: the least a Tack join does; "
                    f"its watcher's queue overflowed in {overflowed} of {len(synced)} runs "
                    "(Tack would rescan)"))  # fmt: skip
    if isinstance(convoy, OSError):
        sc.notes.append(f"no O_TMPFILE here, so no GIL handoff rows: {convoy}")
    else:
        sc.add(Row("open(O_TMPFILE)", "per call, alone", "µs", [a for a, _ in convoy],
                   note="one thread: the system call a join makes per new file, measured "
                        "before the joins in the folder that holds them"))  # fmt: skip
        sc.add(Row("open(O_TMPFILE)", "per call, beside a busy thread", "µs",
                   [b for _, b in convoy],
                   note="the same beside a thread running Python: the GIL handoff"))  # fmt: skip
    sc.finish()
    row = sc.row("tack")
    assert row is not None
    r_st = row.ratios.get(ST10)
    r_rs = row.ratios.get("rsync-loopback")
    least = sc.row(SYNC_FLOOR)
    r_least = None if least is None else least.ratios.get(ST10)
    goal(sc, "≥ 5× faster than Syncthing", None if r_st is None else r_st >= 5,
         f"{fmt(r_st, '×')}; the join floor {fmt(r_least, '×')}")  # fmt: skip
    goal(sc, "within 3× of rsync over loopback", None if r_rs is None else r_rs >= 1 / 3,
         f"{fmt(None if r_rs is None else 1 / r_rs, '×')} rsync's time")  # fmt: skip
    ctx.shared["big_first_index_s"] = big.first_index_s


# -- P3 -----------------------------------------------------------------------------------------


def _trace_chunks(
    trace: dict[str, Any], every: int, limit: int
) -> list[list[tuple[int, int, str]]]:
    patches = workload.trace_patches(trace)
    if limit:
        patches = patches[:limit]
    return [patches[i : i + every] for i in range(0, len(patches), every)]


def _expected_end(trace: dict[str, Any], limit: int) -> str:
    if not limit:
        return str(trace["endContent"])
    doc = ""
    for pos, delete, insert in workload.trace_patches(trace)[:limit]:
        doc = doc[:pos] + insert + doc[pos + delete :]
    return doc


def _ingests(space: Path, rel: str) -> int:
    """How many file-origin transactions a device recorded for ``rel`` (from its store)."""
    conn = sqlite3.connect(f"file:{space / '.tack' / 'store.sqlite'}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT COUNT(*) FROM history WHERE path = ? AND origin = 'file'", (rel,)
        ).fetchone()
        return int(row[0])
    finally:
        conn.close()


def p3(ctx: Context, sc: Scenario) -> None:
    s = ctx.sizes
    trace = workload.load_trace()
    n_patches = len(workload.trace_patches(trace)) if not s.p3_limit else s.p3_limit
    n_saves = workload.count_saves(n_patches, s.p3_every)
    end = _expected_end(trace, s.p3_limit).encode()
    sc.params = {"patches": n_patches, "every": s.p3_every, "saves": n_saves,
                 "final_bytes": len(end), "paced_ms": s.p3_paced_ms}  # fmt: skip
    sc.notes.append(
        "trace: automerge-paper by Martin Kleppmann and Alastair R. Beresford "
        "(automerge/automerge-perf), via Joseph Gentle's editing-traces, CC BY 4.0, unmodified"
    )
    # in-process: every save ingested, timed
    ingest_ms, bare_ms = _p3_inprocess(ctx, sc, trace, s.p3_every, s.p3_limit, end)
    sc.add(Row("tack", "ingest per save", "ms", ingest_ms, vs=["pycrdt"],
               note="in-process FolderBridge.reconcile on a file store (fsync on)"))  # fmt: skip
    sc.add(Row("pycrdt", "ingest per save", "ms", bare_ms,
               note="bare pycrdt: the same patches, one transaction per save"))  # fmt: skip

    # end to end: two real daemons
    rates: dict[str, float] = {}
    with Fleet(ctx.work / "p3") as fleet:
        a, b, probe = tack_pair(ctx, fleet, {"paper.md": b"", "paced.md": b""})
        with probe, spied(ctx, sc, [("tack-A", a.pid), ("tack-B", b.pid)]):
            for rel, pace in (("paper.md", 0.0), ("paced.md", s.p3_paced_ms / 1000)):
                exp = probe.expect({rel: end})
                t0 = time.perf_counter()
                saves = workload.trace_saves(trace, s.p3_every, s.p3_limit or None)
                for i, doc in enumerate(saves):
                    if pace:
                        delay = t0 + i * pace - time.perf_counter()
                        if delay > 0:
                            time.sleep(delay)
                    save(a.space / rel, doc.encode())
                t_written = time.perf_counter()
                t = exp.wait(s.timeout_s)
                rates[rel] = n_saves / (t - t0)
                sc.notes.append(
                    f"tack e2e {rel}: {n_saves} saves written in {t_written - t0:.2f} s, B "
                    f"identical {t - t_written:.2f} s after the last save; A ingested them as "
                    f"{_ingests(a.space, rel)} transactions (saves closer than the 20 ms "
                    "debounce coalesce)"
                )
        sc.notes += fleet.troubles()
    sc.add(Row("tack", "e2e saves/s (max rate)", "saves/s", [rates["paper.md"]],
               vs=[ST1], higher_is_better=True))  # fmt: skip
    sc.add(Row("tack", f"e2e saves/s (offered {1000 / s.p3_paced_ms:.0f}/s)", "saves/s",
               [rates["paced.md"]], higher_is_better=True))  # fmt: skip
    if ctx.use_syncthing:
        with st_cluster(ctx, ctx.work / "p3-st1", ["A", "B"], 1) as cluster:
            sa, sb = cluster.nodes
            workload.write_tree(sa.folder, {"paper.md": b""})
            cluster.start()
            with FolderProbe(sb.folder) as probe:
                probe.expect({"paper.md": b""}).wait(120)
                exp = probe.expect({"paper.md": end})
                t0 = time.perf_counter()
                for doc in workload.trace_saves(trace, s.p3_every, s.p3_limit or None):
                    save(sa.folder / "paper.md", doc.encode())
                t = exp.wait(s.timeout_s)
        sc.add(Row(ST1, "e2e saves/s (max rate)", "saves/s", [n_saves / (t - t0)],
                   higher_is_better=True))  # fmt: skip
    sc.finish()
    ing = sc.row("tack", "ingest per save")
    e2e = sc.row("tack", "e2e saves/s (max rate)")
    assert ing is not None and e2e is not None
    goal(sc, "per-save ingest median ≤ 2 ms", ing.median is not None and ing.median <= 2,
         fmt(ing.median, " ms"), "tack ingest per save")  # fmt: skip
    goal(sc, "≥ 200 saves/s end to end", e2e.median is not None and e2e.median >= 200,
         fmt(e2e.median, " saves/s"), "tack e2e saves/s (max rate)")  # fmt: skip
    if ing.median is not None and ing.median > 2:
        sc.profiles["ingest"] = cprofile(
            lambda: _p3_inprocess(ctx, sc, trace, s.p3_every, min(s.p3_limit or 60_000, 60_000),
                                  None, bare=False),
            ctx.out / "profiles" / "P3-ingest.pstats",
        )  # fmt: skip


def _p3_inprocess(
    ctx: Context,
    sc: Scenario,
    trace: dict[str, Any],
    every: int,
    limit: int,
    end: bytes | None,
    bare: bool = True,
) -> tuple[list[float], list[float]]:
    from pycrdt import Doc, Text
    from reactivex.testing import TestScheduler

    from engine import DirBlobs, Replica, Store
    from fsbridge.bridge import FolderBridge
    from fsbridge.spacedir import init_space

    root = ctx.work / "p3-inproc"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    space, _ = init_space(root)
    store = Store.open(space.store_path)
    replica = Replica(store, "bench")
    bridge = FolderBridge(space.root, replica, DirBlobs(space.blobs_path), TestScheduler())
    rel = "paper.md"
    path = root / rel
    times: list[float] = []
    try:
        save(path, b"")
        bridge.reconcile(rel)
        for doc in workload.trace_saves(trace, every, limit or None):
            data = doc.encode()
            save(path, data)
            t0 = time.perf_counter()
            bridge.reconcile(rel)
            times.append((time.perf_counter() - t0) * 1000)
        card = replica.card_at(rel)
        if end is not None and (card is None or replica.text(card.id).encode() != end):
            sc.notes.append("in-process ingest: the document does not match the trace's end!")
    finally:
        bridge.dispose()
        store.close()
    bare_times: list[float] = []
    if bare:
        doc_: Doc[Any] = Doc()
        text = doc_.get("text", type=Text)
        for chunk in _trace_chunks(trace, every, limit):
            t0 = time.perf_counter()
            with doc_.transaction():
                for pos, delete, insert in chunk:
                    if delete:
                        del text[pos : pos + delete]
                    if insert:
                        text.insert(pos, insert)
            bare_times.append((time.perf_counter() - t0) * 1000)
    return times, bare_times


# -- P4 -----------------------------------------------------------------------------------------


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=bench@localhost", "-c", "user.name=bench", *args],
        cwd=cwd, check=True, capture_output=True,
    )  # fmt: skip


def _git_repo(root: Path, one: dict[str, bytes], two: dict[str, bytes]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    _git(root, "init", "-q", "-b", "one")
    workload.write_tree(root, one)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "one")
    _git(root, "checkout", "-q", "-b", "two")
    workload.write_tree(root, two)
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "two")
    _git(root, "checkout", "-q", "one")


def _checkouts(folder: Path, probe: FolderProbe, trees: dict[str, dict[str, bytes]], reps: int,
               timeout: float) -> tuple[list[float], list[float]]:  # fmt: skip
    times: list[float] = []
    git_times: list[float] = []
    for r in range(reps):
        branch = "two" if r % 2 == 0 else "one"
        exp = probe.expect(trees[branch])
        t0 = time.perf_counter()
        _git(folder, "checkout", "-q", branch)
        git_times.append(time.perf_counter() - t0)
        times.append(exp.wait(timeout) - t0)
        time.sleep(0.5)
    return times, git_times


def p4(ctx: Context, sc: Scenario) -> None:
    s = ctx.sizes
    n = s.p4_cards
    one = {workload.card_path(i, s.per_board): workload.text_card(i) for i in range(n)}
    two = {p: workload.edited_card(i, 1) for i, p in enumerate(one)}
    trees = {"one": one, "two": two}
    sc.params = {"cards": n, "cards_per_board": s.per_board, "reps": s.p4_reps,
                 "change": "one line of every card differs between the branches"}  # fmt: skip
    with Fleet(ctx.work / "p4") as fleet:
        a = fleet.founder("A")
        _git_repo(a.space, one, two)
        a.init()
        link = a.share()
        a.up(timeout=s.timeout_s)
        b = fleet.device("B")
        b.space.mkdir(parents=True)
        b.join(link)
        with FolderProbe(b.space) as probe:
            exp = probe.expect(one)
            b.up(peers=[a.address])
            exp.wait(s.timeout_s)
            with spied(ctx, sc, [("tack-A", a.pid), ("tack-B", b.pid)]):
                times, git_times = _checkouts(a.space, probe, trees, s.p4_reps, s.timeout_s)
        sc.notes += fleet.troubles()
    sc.add(Row("tack", "checkout→all on B", "s", times, vs=[ST10, ST1]))
    sc.add(Row("git checkout", "checkout→all on B", "s", git_times,
               note="git's own time on A (the floor: nothing synced)"))  # fmt: skip
    if ctx.use_syncthing:
        for delay, tool in ((10, ST10), (1, ST1)):
            with st_cluster(ctx, ctx.work / f"p4-st{delay}", ["A", "B"], delay) as cluster:
                sa, sb = cluster.nodes
                _git_repo(sa.folder, one, two)
                (sa.folder / ".stignore").write_text(".git\n")
                (sb.folder / ".stignore").write_text(".git\n")
                cluster.start()
                with FolderProbe(sb.folder) as probe:
                    probe.expect(one).wait(s.timeout_s)
                    st_times, _ = _checkouts(sa.folder, probe, trees, s.p4_st_reps, s.timeout_s)
            sc.add(Row(tool, "checkout→all on B", "s", st_times, note=f"fsWatcherDelayS={delay}"))
    sc.add(_rewrite_diff_row())
    sc.finish()
    row = sc.row("tack")
    assert row is not None
    worst = row.summary.max if row.summary else None
    goal(sc, f"all {n} on B within 3 s", worst is not None and worst <= 3,
         f"worst {fmt(worst, ' s')}, median {fmt(row.median, ' s')}")  # fmt: skip


def _rewrite_diff_row(reps: int = 15) -> Row:
    """What a branch that *rewrites* cards would cost: Tack's diff of a 2 KB card against a
    completely different 2 KB card (in-process, one card)."""
    from fsbridge.textdiff import diff_splices

    times = []
    for i in range(reps):
        old, new = workload.text_card(i).decode(), workload.text_card(i, version=1).decode()
        t0 = time.perf_counter()
        diff_splices(old, new)
        times.append((time.perf_counter() - t0) * 1000)
    return Row("tack diff_splices", "2 KB card fully rewritten", "ms", times,
               note="in-process, per card: a checkout rewriting 1,000 cards pays it 1,000×",
               )  # fmt: skip


# -- P5 -----------------------------------------------------------------------------------------


def _idle(pid: int, seconds: float) -> float:
    c0 = proc_cpu_seconds(pid)
    time.sleep(seconds)
    return (proc_cpu_seconds(pid) - c0) / seconds * 100


def p5(ctx: Context, sc: Scenario) -> None:
    s = ctx.sizes
    big = big_space(ctx)
    sc.params = {"cards": len(big.tree), "reps": s.p5_reps, "idle_window_s": s.p5_idle_s,
                 "settle_s": 2.0}  # fmt: skip
    sc.notes.append(
        "start = spawn of `tack up` → its 'Tack is watching' line (after the start-up scan "
        "has read every file); RSS after 2 s of settling; idle CPU = CPU time over the idle "
        "window / wall time, % of one core. Page cache is warm (drop_caches is not "
        "available to the harness). RSS and CPU are summed over the process tree (Syncthing "
        "runs as a monitor process plus the syncing child)"
    )
    a = big.a
    starts: list[float] = []
    rss: list[float] = []
    hwm: list[float] = []
    idle: list[float] = []
    a.stop()
    for _ in range(s.p5_reps):
        a.up(timeout=s.timeout_s)
        starts.append(a.wait_ready())
        time.sleep(2.0)
        with spied(ctx, sc, [("tack-A-idle", a.pid)] if not idle else []):
            idle.append(_idle(a.pid, s.p5_idle_s))
        r, h = proc_rss_kib(a.pid)
        rss.append(r / 1024)
        hwm.append(h / 1024)
        a.stop()
    if "big_first_index_s" in ctx.shared or big.first_index_s:
        sc.add(Row("tack", "first start (indexing)", "s", [big.first_index_s],
                   note="first `tack up` after `tack init`: each file becomes a card"))  # fmt: skip
    sc.add(Row("tack", "start→ready", "s", starts, vs=[ST10]))
    sc.add(Row("tack", "RSS", "MiB", rss, vs=[ST10]))
    sc.add(Row("tack", "peak RSS", "MiB", hwm, vs=[ST10]))
    sc.add(Row("tack", "idle CPU", "%", idle, vs=[ST10]))
    if ctx.use_syncthing:
        cluster = big.syncthing(ctx.sizes.p2_st_reps)
        node = cluster.nodes[0]
        for other in cluster.nodes[1:]:
            other.stop()
        st = {"start→ready": [], "RSS": [], "peak RSS": [], "idle CPU": []}  # type: dict[str, list[float]]
        for _ in range(s.p5_reps):
            node.stop()
            node.start(cluster.netns)
            st["start→ready"].append(node.wait_line(INITIAL_SCAN, s.timeout_s) - node.spawned_at)
            time.sleep(2.0)
            st["idle CPU"].append(_idle(node.pid, s.p5_idle_s))
            r, h = proc_rss_kib(node.pid)
            st["RSS"].append(r / 1024)
            st["peak RSS"].append(h / 1024)
        node.stop()
        units = {"start→ready": "s", "RSS": "MiB", "peak RSS": "MiB", "idle CPU": "%"}
        for metric, values in st.items():
            sc.add(Row(ST10, metric, units[metric], values,
                       note="start→ready = spawn → 'Completed initial scan'"))  # fmt: skip
        if big.st_index_s is not None:
            sc.add(Row(ST10, "first start (indexing)", "s", [big.st_index_s]))
    sc.finish()
    med_start = sc.median("tack", "start→ready")
    med_rss = sc.median("tack", "RSS")
    med_idle = sc.median("tack", "idle CPU")
    goal(sc, "start ≤ 2 s", med_start is not None and med_start <= 2, fmt(med_start, " s"),
         "tack start→ready")  # fmt: skip
    goal(sc, "RSS ≤ 200 MB", med_rss is not None and med_rss * 1.048576 <= 200,
         fmt(med_rss, " MiB"), "tack RSS")  # fmt: skip
    goal(sc, "idle CPU < 1 %", med_idle is not None and med_idle < 1, fmt(med_idle, " %"),
         "tack idle CPU")  # fmt: skip


# -- P6 -----------------------------------------------------------------------------------------


def _p6_now() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _p6_since(t0: tuple[float, float]) -> tuple[float, float]:
    """Wall-clock and CPU seconds since ``t0``: CPU time is what other sessions' load on this
    shared machine disturbs least."""
    return time.perf_counter() - t0[0], time.process_time() - t0[1]


def _p6_bare(
    patches: list[tuple[int, int, str]],
    capture: bool = False,
    origin: str | None = None,
    after: Callable[[bytes], object] | None = None,
) -> tuple[float, float]:
    """Bare pycrdt, one transaction per patch; with ``after``, each transaction's update is
    captured and handed to it before the next transaction runs (the floors below)."""
    from pycrdt import Doc, Text

    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    sink: list[bytes] = []
    if capture or after is not None:
        doc.observe(lambda e: sink.append(e.update))
    t0 = _p6_now()
    for pos, delete, insert in patches:
        with doc.transaction(origin=origin):
            if delete:
                del text[pos : pos + delete]
            if insert:
                text.insert(pos, insert)
        if after is not None:
            after(sink[-1])
            sink.clear()
    return _p6_since(t0)


def _p6_floor(patches: list[tuple[int, int, str]]) -> tuple[float, float]:
    """Bare pycrdt plus the least a durable log costs: each transaction's update captured and
    committed with its history row (``Store.append_one``, one SQLite transaction), nothing
    else — no replica, no Change, no bookkeeping.  Any design that commits every transaction
    before it returns pays at least this."""
    from engine import Store

    store = Store.memory()
    try:
        return _p6_bare(
            patches,
            origin="api",
            after=lambda u: store.append_one("paper", u, "paper", "api", "bench", 0.0, "", ""),
        )
    finally:
        store.close()


def _p6_sqlite_floor(patches: list[tuple[int, int, str]]) -> tuple[float, float]:
    """Bare pycrdt plus the least *any* per-transaction log in Python and SQLite can cost:
    each captured update one autocommitted ``INSERT`` into a one-table in-memory database (no
    history row, no index, no ``BEGIN``/``COMMIT`` pair).  Not Tack's schema: a floor under
    every design that stores each transaction before the next one runs."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute("CREATE TABLE log (seq INTEGER PRIMARY KEY, data BLOB NOT NULL)")
    try:
        return _p6_bare(
            patches, after=lambda u: conn.execute("INSERT INTO log (data) VALUES (?)", (u,))
        )
    finally:
        conn.close()


def _p6_tack(
    patches: list[tuple[int, int, str]], store_path: Path | None = None, batch: int = 1
) -> tuple[float, float, str]:
    """Each patch one ``Replica.transact``; with ``batch`` > 1, every ``batch`` of them
    inside one ``Replica.batch()`` (stored in one store transaction, as a sync session
    stores what one network read carries)."""
    from pycrdt import Doc

    from engine import Origin, Replica, Store

    store = Store.open(store_path) if store_path is not None else Store.memory()
    replica = Replica(store, "bench")
    doc_id = "paper"
    text = replica.ytext(doc_id)

    def run(chunk: list[tuple[int, int, str]]) -> None:
        for pos, delete, insert in chunk:

            def mutate(
                _d: Doc[Any], pos: int = pos, delete: int = delete, insert: str = insert
            ) -> None:
                if delete:
                    del text[pos : pos + delete]
                if insert:
                    text.insert(pos, insert)

            replica.transact(doc_id, Origin.API, mutate)

    try:
        t0 = _p6_now()
        if batch <= 1:
            run(patches)
        else:
            for start in range(0, len(patches), batch):
                with replica.batch():
                    run(patches[start : start + batch])
        wall, cpu = _p6_since(t0)
        return wall, cpu, str(text)
    finally:
        store.close()


def _p6_updates(patches: list[tuple[int, int, str]]) -> list[bytes]:
    from pycrdt import Doc, Text

    doc: Doc[Any] = Doc()
    text = doc.get("text", type=Text)
    out: list[bytes] = []
    doc.observe(lambda e: out.append(e.update))
    for pos, delete, insert in patches:
        with doc.transaction():
            if delete:
                del text[pos : pos + delete]
            if insert:
                text.insert(pos, insert)
    return out


def _p6_apply_bare(updates: list[bytes]) -> float:
    from pycrdt import Doc

    doc: Doc[Any] = Doc()
    t0 = time.perf_counter()
    for u in updates:
        doc.apply_update(u)
    return time.perf_counter() - t0


def _p6_apply_tack(updates: list[bytes]) -> float:
    from engine import Origin, Replica, Store

    store = Store.memory()
    replica = Replica(store, "bench")
    t0 = time.perf_counter()
    for u in updates:
        replica.apply_update("paper", u, Origin.PEER, peer="bench-peer")
    elapsed = time.perf_counter() - t0
    store.close()
    return elapsed


def p6(ctx: Context, sc: Scenario) -> None:
    s = ctx.sizes
    trace = workload.load_trace()
    patches = workload.trace_patches(trace)
    if s.p6_limit:
        patches = patches[: s.p6_limit]
    sc.params = {"patches": len(patches), "reps": s.p6_reps, "file_store_patches": s.p6_file_limit}
    sc.notes.append("automerge-paper is ASCII, so code-point positions are byte offsets here")
    tack: list[float] = []
    bare: list[float] = []
    bare_cap: list[float] = []
    commit_floor: list[float] = []
    sqlite_floor: list[float] = []
    cpu: dict[str, list[float]] = {
        "tack": [], "pycrdt": [], "pycrdt+commit": [], "pycrdt+sqlite-insert": []
    }  # fmt: skip
    batched: dict[int, list[float]] = {}
    final = ""
    for rep in range(s.p6_reps):  # interleaved, so machine noise hits both alike
        wall, cpu_s = _p6_bare(patches)
        bare.append(wall)
        cpu["pycrdt"].append(cpu_s)
        wall, cpu_s, final = _p6_tack(patches)
        tack.append(wall)
        cpu["tack"].append(cpu_s)
        for size in s.p6_batches:
            batched.setdefault(size, []).append(_p6_tack(patches, batch=size)[0])
        bare_cap.append(_p6_bare(patches, capture=True)[0])
        wall, cpu_s = _p6_floor(patches)
        commit_floor.append(wall)
        cpu["pycrdt+commit"].append(cpu_s)
        wall, cpu_s = _p6_sqlite_floor(patches)
        sqlite_floor.append(wall)
        cpu["pycrdt+sqlite-insert"].append(cpu_s)
        ctx.say(f"P6 rep {rep + 1}: tack {tack[-1]:.2f} s, pycrdt {bare[-1]:.2f} s, "
                f"pycrdt+commit {commit_floor[-1]:.2f} s")  # fmt: skip
    if not s.p6_limit and final != trace["endContent"]:
        sc.notes.append("P6: Tack's document does not equal the trace's endContent!")
    sc.add(Row("tack", "transact, memory store", "s", tack, vs=["pycrdt"],
               note="Replica.transact(Origin.API), one patch per transaction"))  # fmt: skip
    for size in s.p6_batches:
        sc.add(Row("tack", f"transact, memory store, batches of {size}", "s", batched[size],
                   vs=["pycrdt"], note=f"the same transactions, each {size} stored together "
                   "(Replica.batch, as a sync session stores one network read)"))  # fmt: skip
    sc.add(Row("pycrdt", "transact, memory store", "s", bare, note="one transaction per patch"))
    sc.add(Row("pycrdt+capture", "transact, memory store", "s", bare_cap,
               note="bare pycrdt also collecting each update (as any persistence must)",
               ))  # fmt: skip
    sc.add(Row("pycrdt+commit", "transact, memory store", "s", commit_floor, vs=["pycrdt"],
               note="bare pycrdt + each update committed with its history row "
               "(Store.append_one): the floor of a log that is durable per transaction",
               ))  # fmt: skip
    sc.add(Row("pycrdt+sqlite-insert", "transact, memory store", "s", sqlite_floor,
               vs=["pycrdt"], note="bare pycrdt + each update one autocommitted INSERT into "
               "a one-table in-memory SQLite: the floor of any per-transaction log here",
               ))  # fmt: skip
    for tool, samples in cpu.items():
        sc.add(Row(tool, "transact, memory store, CPU time", "s", samples,
                   vs=["pycrdt"] if tool != "pycrdt" else [],
                   note="process CPU seconds of the same runs"))  # fmt: skip

    updates = _p6_updates(patches)
    a_tack = []
    a_bare = []
    for _ in range(s.p6_reps):
        a_bare.append(_p6_apply_bare(updates))
        a_tack.append(_p6_apply_tack(updates))
    sc.add(Row("tack", "apply_update", "s", a_tack, vs=["pycrdt"],
               note="Replica.apply_update of pre-recorded per-patch updates"))  # fmt: skip
    sc.add(Row("pycrdt", "apply_update", "s", a_bare, note="Doc.apply_update of the same updates"))

    head = patches[: s.p6_file_limit]
    f_tack = []
    f_bare = []
    for rep in range(s.p6_reps):
        store_dir = ctx.work / "p6-store"
        shutil.rmtree(store_dir, ignore_errors=True)
        f_bare.append(_p6_bare(head)[0])
        f_tack.append(_p6_tack(head, store_dir / f"store{rep}.sqlite")[0])
    sc.add(Row("tack", f"transact, file store ({len(head)} patches)", "s", f_tack, vs=["pycrdt"],
               note="SQLite WAL, synchronous=NORMAL: each commit reaches the WAL (kill -9 "
               "safe), no fsync"))  # fmt: skip
    sc.add(Row("pycrdt", f"transact, file store ({len(head)} patches)", "s", f_bare))
    sc.finish()
    row = sc.row("tack", "transact, memory store")
    assert row is not None
    r = row.ratios.get("pycrdt")
    over = None if r is None else 1 / r
    goal(sc, "overhead ≤ 1.5× bare pycrdt", over is not None and over <= 1.5, fmt(over, "×"),
         "tack transact, memory store")  # fmt: skip
    if over is not None and over > 1.5:
        sc.profiles["transact"] = cprofile(
            lambda: _p6_tack(patches[:60_000]), ctx.out / "profiles" / "P6-transact.pstats"
        )


# -- P7 -----------------------------------------------------------------------------------------


def p7(ctx: Context, sc: Scenario) -> None:
    s = ctx.sizes
    n = s.p7_devices
    rel = "card.md"
    first = {rel: workload.text_card(7)}
    sc.params = {"devices": n, "reps": s.p7_reps, "topology": "full mesh (each device --peer "
                 "every device started before it)"}  # fmt: skip
    worst: list[float] = []
    each: list[float] = []
    with Fleet(ctx.work / "p7") as fleet, contextlib.ExitStack() as stack:
        a = fleet.founder("D0")
        workload.write_tree(a.space, first)
        a.init()
        link = a.share()
        a.up()
        devices = [a]
        for k in range(1, n):
            d = fleet.device(f"D{k}")
            d.space.mkdir(parents=True)
            d.join(link)
            d.up(peers=[x.address for x in devices])
            devices.append(d)
        probes = [stack.enter_context(FolderProbe(d.space)) for d in devices]
        exps = [p.expect(first) for p in probes]
        for e in exps:
            e.wait(s.timeout_s)
        for r in range(s.p7_reps):
            editor = r % n
            data = workload.edited_card(7, r + 1)
            exps = [p.expect({rel: data}) for i, p in enumerate(probes) if i != editor]
            t0 = time.perf_counter()
            save(devices[editor].space / rel, data)
            try:
                arrivals = [e.wait(30, poll_every=0.25) for e in exps]
            except ProbeTimeout as exc:
                sc.notes.append(f"edit {r} on D{editor}: {exc}")
                continue
            worst.append((max(arrivals) - t0) * 1000)
            each += [(t - t0) * 1000 for t in arrivals]
            time.sleep(0.1)
        sc.notes += fleet.troubles()
    sc.add(Row("tack", "edit→all devices", "ms", worst, vs=[ST1]))
    sc.add(Row("tack", "edit→each device", "ms", each))
    p1 = ctx.results.get("P1")
    p1_row = p1.row("tack") if p1 is not None else None
    if p1_row is not None and p1_row.values:
        sc.add(Row("tack-2-devices", "edit→all devices", "ms", p1_row.values,
                   note="P1's samples from this run: the same save with one peer"))  # fmt: skip
        sc.rows[0].vs.append("tack-2-devices")
    if ctx.use_syncthing:
        names = [f"D{k}" for k in range(n)]
        st_worst: list[float] = []
        with (
            st_cluster(ctx, ctx.work / "p7-st1", names, 1) as cluster,
            contextlib.ExitStack() as st,
        ):
            workload.write_tree(cluster.nodes[0].folder, first)
            cluster.start()
            probes = [st.enter_context(FolderProbe(node.folder)) for node in cluster.nodes]
            for p in probes[1:]:
                p.expect(first).wait(s.timeout_s)
            for r in range(min(s.p7_reps, 10)):
                editor = r % n
                data = workload.edited_card(7, r + 1)
                exps = [p.expect({rel: data}) for i, p in enumerate(probes) if i != editor]
                t0 = time.perf_counter()
                save(cluster.nodes[editor].folder / rel, data)
                try:
                    st_worst.append((max(e.wait(60) for e in exps) - t0) * 1000)
                except ProbeTimeout as exc:
                    sc.notes.append(f"syncthing edit {r}: {exc}")
                time.sleep(0.3)
        sc.add(Row(ST1, "edit→all devices", "ms", st_worst, note="fsWatcherDelayS=1, full mesh"))
    sc.finish()
    row = sc.rows[0]
    goal(sc, f"all {n} folders updated, median ≤ 100 ms", row.median is not None
         and row.median <= 100, fmt(row.median, " ms"))  # fmt: skip


SCENARIOS: dict[str, tuple[str, Callable[[Context, Scenario], None]]] = {
    "P1": ("one 2 KB card saved on A → on B", p1),
    "P2": ("join a 10,000-card space → B complete", p2),
    "P3": ("automerge-paper replayed as saves", p3),
    "P4": ("git checkout of 1,000 cards → all on B", p4),
    "P5": ("10,000-card space: start, memory, idle CPU", p5),
    "P6": ("259,778 trace patches through the engine", p6),
    "P7": ("8 devices, one edit → all folders", p7),
}


def tree_version() -> str:
    """The commit of the code under test, "+dirty" when engine/ or fsbridge/ differ from it
    (``tack up`` runs from the working tree, so an edit mid-run changes what is measured)."""
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "engine", "fsbridge"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (head or "?") + ("+dirty" if dirty else "")  # fmt: skip


def run_one(ctx: Context, sid: str) -> Scenario:
    title, fn = SCENARIOS[sid]
    sc = Scenario(sid, title)
    version = tree_version()
    t0 = time.monotonic()
    ctx.say(f"{sid}: {title}")
    try:
        fn(ctx, sc)
    except Exception as exc:  # a failed scenario is reported, the run goes on
        import traceback

        sc.error = f"{type(exc).__name__}: {exc}"
        sc.notes.append(traceback.format_exc(limit=6))
        with contextlib.suppress(Exception):
            sc.finish()
    sc.seconds = time.monotonic() - t0
    sc.params["tack_tree"] = version
    after = tree_version()
    if after != version:
        sc.notes.append(f"the code under test changed during this scenario ({version} → {after})")
    ctx.results[sid] = sc
    ctx.say(f"{sid} done in {sc.seconds:.1f} s" + (f" — ERROR {sc.error}" if sc.error else ""))
    return sc


def disk_note(path: Path) -> str:
    st = os.statvfs(path)
    return f"{st.f_bavail * st.f_frsize / 2**30:.0f} GiB free"
