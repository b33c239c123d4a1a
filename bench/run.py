"""``python -m bench.run [--quick] [--only P1,P3] [--out bench/results]``: run the benchmarks.

Runs the selected scenarios in order (P1…P7), each side by side with its baselines, prints
the table, and writes ``results.json`` and ``results.md`` into ``--out``.  ``--quick`` is a
smoke version (tiny sizes, a few repetitions, Syncthing off unless ``--syncthing on``) that
finishes in well under a minute.  ``--set KEY=VALUE`` changes one size (see
:class:`bench.context.Sizes`); overrides are recorded in the results.  ``--profile``
attaches py-spy to the daemons while they are measured.  ``--fresh-ext4 12G`` runs
everything on a newly made ext4 (root only, see :mod:`bench.freshfs`), as BENCHMARKS.md's
runs were made; the results name the scratch file system either way.  Exit status: 0 when
every selected scenario ran (goals met or not), 1 when one failed to run, 2 when the run
could not start.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import machine, report
from bench.context import FULL, QUICK, Context, override
from bench.freshfs import FreshFsError, describe, fresh_ext4, temp_dir_in
from bench.scenarios import SCENARIOS, run_one
from bench.tackdev import compile_code


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run (< 60 s)")
    p.add_argument("--only", default="", help="comma-separated scenarios, e.g. P1,P6")
    p.add_argument("--out", default="bench/results", help="folder for results.json/.md")
    p.add_argument("--work", default=None, help="scratch folder (default: a temp dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the scratch folder")
    p.add_argument("--syncthing", choices=("auto", "on", "off"), default="auto",
                   help="Syncthing baselines (auto: on for full runs, off for --quick)")
    p.add_argument("--profile", action="store_true", help="py-spy on daemons while measured")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one size, e.g. --set p2_text=2000 (repeatable)")
    p.add_argument("--fresh-ext4", metavar="SIZE", default=None,
                   help="run on a newly made ext4 of SIZE (e.g. 12G; root, loop device)")
    return p.parse_args(argv)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    only = [s.strip().upper() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in only if s not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}", file=sys.stderr)
        return 2
    if args.fresh_ext4 and (args.work or args.keep):
        print("--fresh-ext4 makes its own scratch folder, and deletes it", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as scratch:
        if args.fresh_ext4:
            try:
                mounted = scratch.enter_context(fresh_ext4(args.fresh_ext4))
            except FreshFsError as exc:
                print(f"cannot make a fresh file system: {exc}", file=sys.stderr)
                return 2
            scratch.enter_context(temp_dir_in(mounted))
        return _run(args, only)


def _run(args: argparse.Namespace, only: list[str]) -> int:
    sizes, overrides = override(QUICK if args.quick else FULL, args.sets)
    use_st = args.syncthing == "on" or (args.syncthing == "auto" and not args.quick)
    compile_code()
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="tack-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    ctx = Context(args.quick, sizes, overrides, work.resolve(), out.resolve(), use_st, args.profile)
    if args.syncthing == "on" and not ctx.use_syncthing:
        print(f"Syncthing baselines unavailable: {ctx.syncthing_note}", file=sys.stderr)
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta = {
        "started": started,
        "quick": args.quick,
        "only": only,
        "overrides": overrides,
        "sizes": ctx.params(),
        "machine": machine.describe(),
        "versions": machine.versions(),
        "syncthing_note": None if ctx.use_syncthing else ctx.syncthing_note,
        "filesystem": describe(work) + (", made for this run" if args.fresh_ext4 else ""),
        "seconds": 0.0,
    }
    t0 = time.monotonic()
    try:
        scenarios = [run_one(ctx, sid) for sid in only]
    finally:
        ctx.close()
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
    meta["seconds"] = round(time.monotonic() - t0, 1)
    report.print_table(scenarios)
    js, md = report.write(out, scenarios, meta)
    print(f"wrote {js} and {md}", file=sys.stderr)
    return 1 if any(sc.error for sc in scenarios) else 0


if __name__ == "__main__":
    sys.exit(main())
