"""A/B of a join (P2's Tack row) between two code trees, alternated in one process.

``python -m bench.experiments.join_ab --old /tmp/wt-old [--reps 6] [--cards 10000]
[--founders each]``

One founder A (running this checkout) serves a space of ``--cards`` 2 KB text cards and 20
1 MB binary cards; joining devices B run, in turn, this checkout and the tree at ``--old``
(its ``tack`` code is put first on their ``PYTHONPATH``, which the daemons inherit).  Both
variants join the same A, one after the other, under the same conditions, so their ratio
means something on a shared machine where absolute times drift.  ``--fresh-ext4 12G`` runs
it all on a newly made ext4, as ``bench.run`` does (root only).  With ``--founders each``
each variant's joiners join a founder running that variant's code (two founders, the same
files), for a change to what the founder sends.  Each join's folder is kept
until the end (deleting 10,000 files slows the next 10,000 creations: see ``KEEP_COPIES``
in ``bench/scenarios.py``).  For each join it prints the time until B's folder is complete,
the CPU seconds of B's process tree (daemon and watcher; the daemon's main thread apart), of
A, and of the harness itself (mostly its inotify probe), and when B's first, middle and last
files arrived; then the median of each variant and their ratio.  ``--old`` may name this
checkout, for the CPU figures of one tree alone.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import workload
from bench.freshfs import environ_set, fresh_ext4, temp_dir_in
from bench.probe import FolderProbe
from bench.tackdev import (
    Fleet,
    TackDevice,
    compile_code,
    main_thread_cpu_seconds,
    proc_cpu_seconds,
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--old", required=True, type=Path, help="the other code tree (B variant)")
    p.add_argument("--reps", type=int, default=6, help="joins in all, alternating (even)")
    p.add_argument("--cards", type=int, default=10_000)
    p.add_argument(
        "--fresh-ext4",
        metavar="SIZE",
        default=None,
        help="run on a newly made ext4 of SIZE (root; see bench/freshfs.py)",
    )
    p.add_argument(
        "--founders",
        choices=["one", "each"],
        default="one",
        help="one founder (this checkout) for both variants, or one running each variant",
    )
    args = p.parse_args()
    compile_code(args.old.resolve())
    with contextlib.ExitStack() as scratch:
        if args.fresh_ext4:
            scratch.enter_context(temp_dir_in(scratch.enter_context(fresh_ext4(args.fresh_ext4))))
        _alternate(args)


def _alternate(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="tack-bench-join-ab-"))
    tree = workload.make_tree(args.cards, 20, 100)
    src = work / "src"
    workload.write_tree(src, tree)
    times: dict[str, list[float]] = {"this": [], "old": []}
    try:
        with Fleet(work / "tack") as fleet:
            founders: dict[str, tuple[TackDevice, str]] = {"this": _founder(fleet, "A", src)}
            if args.founders == "each":
                with _code_of("old", args.old):
                    founders["old"] = _founder(fleet, "A-old", src)
            else:
                founders["old"] = founders["this"]
            for k in range(args.reps):
                variant = "old" if k % 2 else "this"
                a, link = founders[variant]
                b = fleet.device(f"B{k}")
                b.space.mkdir(parents=True)
                with _code_of(variant, args.old), FolderProbe(b.space) as probe:
                    exp = probe.expect(tree)
                    cpu_a = proc_cpu_seconds(a.pid)
                    cpu_here = time.process_time()  # the probe's threads run in this process
                    t0 = time.perf_counter()
                    b.join(link)
                    b.up(peers=[a.address], wait=False)
                    done = exp.wait(600)
                    cpu_b = proc_cpu_seconds(b.pid)
                    cpu_b_main = main_thread_cpu_seconds(b.pid)
                    cpu_a = proc_cpu_seconds(a.pid) - cpu_a
                    cpu_here = time.process_time() - cpu_here
                    arrived = sorted(
                        t for t in (exp.arrival(rel) for rel in tree) if t is not None
                    )
                b.stop()
                times[variant].append(done - t0)
                marks = ", ".join(
                    f"{name} {arrived[i] - t0:.2f} s"
                    for name, i in (("first", 0), ("half", len(arrived) // 2), ("last", -1))
                ) if arrived else "no arrival seen by inotify"  # fmt: skip
                print(
                    f"join {k} ({variant}): {done - t0:.2f} s; CPU B {cpu_b:.2f} s (main thread "
                    f"{cpu_b_main:.2f} s, the rest {cpu_b - cpu_b_main:.2f} s), A {cpu_a:.2f} s, "
                    f"the harness {cpu_here:.2f} s; files: {marks}; "
                    f"troubles: {b.troubles() or 'none'}",
                    flush=True,
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    this, old = statistics.median(times["this"]), statistics.median(times["old"])
    print(f"this checkout: {[round(t, 2) for t in times['this']]}, median {this:.2f} s")
    print(f"{args.old}: {[round(t, 2) for t in times['old']]}, median {old:.2f} s")
    print(f"ratio old / this: {old / this:.2f}")


def _founder(fleet: Fleet, name: str, src: Path) -> tuple[TackDevice, str]:
    """A device that indexed a copy of ``src`` and is up: the space's founder, its link."""
    a = fleet.device(name)
    subprocess.run(["cp", "-r", str(src), str(a.space)], check=True)
    a.init()
    link = a.share()
    a.up(timeout=600)
    return a, link


def _code_of(variant: str, old: Path) -> contextlib.AbstractContextManager[None]:
    """Devices started inside run ``old``'s code when ``variant`` is "old"."""
    if variant == "old":
        return environ_set("PYTHONPATH", str(old.resolve()))
    return contextlib.nullcontext()


if __name__ == "__main__":
    main()
