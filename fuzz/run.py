"""Fuzz Tack's parsers on demand: ``python -m fuzz.run [--target NAME|all] [--runs N]``.

Engines.  With atheris installed (``pip install atheris``) inputs come from libFuzzer,
coverage-guided over the instrumented ``engine``, ``fsbridge``, ``fuzz`` and ``pathspec``
code and seeded with :data:`fuzz.targets.SEEDS`.  Without it (or with ``--engine
hypothesis``) they come from the target's hypothesis strategy (:func:`fuzz.targets.strategy`):
pools of structured inputs drawn by fresh, differently seeded hypothesis runs (so memory stays
flat over a million inputs), each input run as drawn and then as a score of random byte-level
mutants, because drawing costs far more than most targets do.  The default is a million
inputs per target.

Crashes.  A harness around the target catches what escapes it, so one crash does not end the
run: each distinct crash (exception type and the innermost line of Tack's code it came from)
is saved once, the input as ``<crash-dir>/<target>-<sha1>.bin`` and the traceback beside it
as ``.txt``.  An input slower than ``--slow`` seconds counts as a crash.  Each target runs in
a child process watched by this one: a child that stops making progress for ``--hang``
seconds (a regex that never ends, say) is killed, and one that dies (a native crash, libFuzzer
giving up) is noted; either way the input it was on is saved -- the harness keeps the current
input in a small memory-mapped file -- and a new child carries on with the remaining runs.

Targets run side by side, ``--jobs`` at a time (one per CPU by default).  Output: per target,
runs, wall time and crashes; exit status 1 if any target crashed, else 0.
``--replay FILE...`` runs saved inputs through one target in this process and shows what
escapes, for debugging a crash found earlier.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import importlib.util
import json
import logging
import mmap
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

DEFAULT_RUNS = 1_000_000
POOL = 200  # hypothesis inputs drawn per fresh engine
MUTANTS = 20  # byte-level mutants run per drawn input
MAX_LEN = 4096  # longest input either engine makes
MAX_RESTARTS = 20  # children per target before giving up
STARTUP_GRACE = 120.0  # seconds a child may take before its first run (instrumenting imports)
HERE = Path(__file__).resolve().parent
DEFAULT_CRASH_DIR = HERE / "crashes"
INSTRUMENT = ["engine", "fsbridge", "fuzz", "pathspec"]
STOP = threading.Event()  # set on Ctrl-C: every watcher kills its child and reports


@dataclass
class Report:
    """What happened to one target (in one child, or all of them added up)."""

    target: str
    engine: str
    runs: int = 0
    seconds: float = 0.0
    crashing_inputs: int = 0
    crashes: dict[str, str] = field(default_factory=dict)  # signature -> saved input
    error: str = ""

    def line(self) -> str:
        rate = self.runs / self.seconds if self.seconds else 0.0
        text = (
            f"{self.target:<10} {self.engine:<10} runs {self.runs:>9,}  "
            f"time {self.seconds:8.1f} s ({rate:,.0f}/s)  crashes {len(self.crashes)}"
        )
        if self.crashing_inputs:
            text += f" ({self.crashing_inputs} crashing inputs)"
        if self.error:
            text += f"  ERROR: {self.error}"
        return text


# -- the harness (in the child) ---------------------------------------------------------------


class Beacon:
    """The child's current input and run count in a shared file, for the watching parent.

    Layout: run count (8 bytes), input length (4 bytes), input (at most :data:`MAX_LEN`).
    """

    HEADER = struct.Struct("<QI")

    def __init__(self, path: Path) -> None:
        size = self.HEADER.size + MAX_LEN
        with open(path, "a+b") as f:
            f.truncate(size)
            self._map = mmap.mmap(f.fileno(), size)

    def mark(self, runs: int, data: bytes) -> None:
        data = data[:MAX_LEN]
        self._map[self.HEADER.size : self.HEADER.size + len(data)] = data
        self._map[: self.HEADER.size] = self.HEADER.pack(runs, len(data))

    def read(self) -> tuple[int, bytes]:
        runs, length = self.HEADER.unpack(self._map[: self.HEADER.size])
        return runs, bytes(self._map[self.HEADER.size : self.HEADER.size + length])

    def close(self) -> None:
        self._map.close()


def save_crash(crash_dir: Path, target: str, data: bytes, signature: str, text: str) -> str:
    crash_dir.mkdir(parents=True, exist_ok=True)
    name = f"{target}-{hashlib.sha1(data).hexdigest()[:16]}"
    path = crash_dir / f"{name}.bin"
    path.write_bytes(data)
    (crash_dir / f"{name}.txt").write_text(
        f"target: {target}\nsignature: {signature}\ninput: {data!r}\n\n{text}",
        encoding="utf-8",
        errors="backslashreplace",
    )
    print(f"  crash in {target}: {signature} -> {path}", file=sys.stderr, flush=True)
    return str(path)


def signature_of(exc: BaseException) -> str:
    """Exception type and the innermost frame of Tack's (or the harness's) own code."""
    where = "?"
    for frame in traceback.extract_tb(exc.__traceback__):
        if any(f"/{part}/" in frame.filename for part in ("engine", "fsbridge", "fuzz")):
            where = f"{Path(frame.filename).name}:{frame.lineno}"
    return f"{type(exc).__name__} at {where}"


class Harness:
    """Wraps a target: counts runs, catches crashes, saves the first input of each kind."""

    def __init__(
        self,
        report: Report,
        run: Callable[[bytes], None],
        crash_dir: Path,
        slow: float,
        beacon: Beacon | None = None,
    ) -> None:
        self.report = report
        self._run = run
        self._crash_dir = crash_dir
        self._slow = slow
        self._beacon = beacon
        self._started = time.monotonic()
        self.on_progress: Callable[[], None] | None = None
        self._last_progress = 0.0

    def __call__(self, data: bytes) -> None:
        if self._beacon is not None:
            self._beacon.mark(self.report.runs, data)
        started = time.monotonic()
        try:
            self._run(data)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # a crash: anything the target did not swallow
            self._crash(data, signature_of(exc), traceback.format_exc())
        else:
            took = time.monotonic() - started
            if took > self._slow:
                self._crash(data, "slow input", f"took {took:.2f} s (limit {self._slow} s)\n")
        self.report.runs += 1
        now = time.monotonic()
        self.report.seconds = now - self._started
        if self.on_progress is not None and now - self._last_progress > 1.0:
            self._last_progress = now
            self.on_progress()

    def _crash(self, data: bytes, signature: str, text: str) -> None:
        self.report.crashing_inputs += 1
        if signature not in self.report.crashes:
            self.report.crashes[signature] = save_crash(
                self._crash_dir, self.report.target, data, signature, text
            )


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Targets log refusals and pathspec warns about odd globs: keep the output readable."""
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


# -- hypothesis engine ----------------------------------------------------------------------------


def _draw(data: SearchStrategy[bytes], count: int, seed_value: int) -> list[bytes]:
    """``count`` inputs from a fresh hypothesis run of ``data`` (generation phase only)."""
    from hypothesis import HealthCheck, Phase, given, seed, settings

    pool: list[bytes] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(data)
    def collect(example: bytes) -> None:
        pool.append(example)

    collect()
    return pool


_INTERESTING = (0, 1, 0x7F, 0x80, 0xFF)


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    """A few random byte-level edits of ``data`` (flip, set, insert, delete, copy, splice)."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        how = rng.randrange(8)
        at = rng.randint(0, len(out))
        if how <= 1 and out:
            out[min(at, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif how == 2 and out:
            out[min(at, len(out) - 1)] = rng.choice(_INTERESTING)
        elif how == 3:
            out[at:at] = rng.randbytes(rng.randint(1, 8))
        elif how == 4 and out:
            del out[at : at + rng.randint(1, 16)]
        elif how == 5 and out:
            start = rng.randrange(len(out))
            out[at:at] = out[start : start + rng.randint(1, 32)]
        elif how == 6:
            other = rng.choice(pool)
            start = rng.randint(0, len(other))
            out[at:] = other[start:]
        else:
            del out[at:]
    return bytes(out[:MAX_LEN])


def fuzz_with_hypothesis(harness: Harness, target: str, runs: int) -> None:
    from fuzz.targets import strategy

    data = strategy(target)
    rng = random.Random()
    report = harness.report
    while report.runs < runs:
        pool = _draw(data, min(POOL, runs - report.runs), rng.getrandbits(64)) or [b""]
        for example in pool:
            if report.runs >= runs:
                break
            harness(example)
        for _ in range(min(MUTANTS * len(pool), runs - report.runs)):
            harness(mutate(rng, rng.choice(pool), pool))


# -- atheris engine -------------------------------------------------------------------------------


def atheris_available() -> bool:
    return importlib.util.find_spec("atheris") is not None


def fuzz_with_atheris(harness: Harness, target: str, runs: int, work: Path, slow: float) -> None:
    """Hand the harness to libFuzzer; libFuzzer ends the process after ``runs`` inputs."""
    atheris: Any = importlib.import_module("atheris")  # optional and untyped
    from fuzz import targets

    corpus = work / "corpus"
    corpus.mkdir(exist_ok=True)
    for i, data in enumerate(targets.SEEDS[target]):
        (corpus / f"seed-{i}").write_bytes(data)
    artifacts = work / "artifacts"
    artifacts.mkdir(exist_ok=True)
    save = harness.on_progress

    def one(data: bytes) -> None:
        harness(data)
        if harness.report.runs >= runs and save is not None:
            save()

    atheris.Setup(
        [
            sys.argv[0],
            f"-runs={runs}",
            f"-max_len={MAX_LEN}",
            f"-timeout={int(max(30, slow * 10))}",  # the parent's --hang watchdog acts first
            "-rss_limit_mb=4096",
            f"-artifact_prefix={artifacts}/",
            "-print_final_stats=1",
            "-handle_int=0",  # Ctrl-C is the parent's business
            str(corpus),
        ],
        one,
    )
    atheris.Fuzz()


# -- the child ------------------------------------------------------------------------------------


def child(status: Path, engine: str, target: str, runs: int, crash_dir: Path, slow: float) -> None:
    """Run ``runs`` inputs through ``target``, keeping ``status`` (JSON) and a beacon."""
    if engine == "atheris":
        atheris: Any = importlib.import_module("atheris")
        with atheris.instrument_imports(include=INSTRUMENT):
            from fuzz import targets
    else:
        from fuzz import targets

    report = Report(target, engine)
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
        report.crashes = dict(json.loads(status.read_text(encoding="utf-8"))["crashes"])
    beacon = Beacon(status.with_suffix(".beacon"))
    harness = Harness(report, targets.TARGETS[target].run, crash_dir, slow, beacon)

    def save() -> None:
        tmp = status.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(report)), encoding="utf-8")
        tmp.replace(status)

    harness.on_progress = save
    with quiet():
        if engine == "atheris":
            fuzz_with_atheris(harness, target, runs, status.parent, slow)
        else:
            fuzz_with_hypothesis(harness, target, runs)
    save()


# -- the parent -----------------------------------------------------------------------------------


def run_target(
    target: str, engine: str, runs: int, crash_dir: Path, slow: float, hang: float
) -> Report:
    """Run ``target`` in children until ``runs`` inputs are done; returns the whole report."""
    total = Report(target, engine)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f"tack-fuzz-{target}-") as tmp:
        status = Path(tmp) / "status.json"
        restarts = 0
        while total.runs < runs:
            if STOP.is_set():
                total.error = "interrupted"
                break
            # The child starts from the crashes seen so far (each is saved once), at 0 runs.
            seed = Report(target, engine, crashes=dict(total.crashes))
            status.write_text(json.dumps(asdict(seed)), encoding="utf-8")
            left = runs - total.runs
            done, outcome = _one_child(status, engine, target, left, crash_dir, slow, hang)
            total.runs += done.runs
            total.crashing_inputs += done.crashing_inputs
            for signature, path in done.crashes.items():
                total.crashes.setdefault(signature, path)
            if outcome == "done":
                break
            if outcome == "interrupted":
                total.error = "interrupted"
                break
            restarts += 1
            if restarts > MAX_RESTARTS or done.runs == 0:
                total.error = f"gave up after {restarts} children: last {outcome}"
                break
    total.seconds = time.monotonic() - started
    return total


def _one_child(
    status: Path,
    engine: str,
    target: str,
    runs: int,
    crash_dir: Path,
    slow: float,
    hang: float,
) -> tuple[Report, str]:
    """One child for at most ``runs`` inputs: ("done" | "hang" | "died (...)", its report)."""
    beacon_path = status.with_suffix(".beacon")
    beacon_path.unlink(missing_ok=True)
    log_path = status.with_suffix(".log")
    cmd = [
        sys.executable, "-m", "fuzz.run", "--child", str(status), "--engine", engine,
        "--target", target, "--runs", str(runs), "--crash-dir", str(crash_dir.resolve()),
        "--slow", str(slow),
    ]  # fmt: skip
    with open(log_path, "w+b") as log:
        proc = subprocess.Popen(cmd, cwd=HERE.parent, stdout=log, stderr=subprocess.STDOUT)
        beacon: Beacon | None = None
        last_runs, last_change = -1, time.monotonic()
        outcome = "done"
        try:
            while proc.poll() is None:
                time.sleep(0.2)
                if beacon is None and beacon_path.exists():
                    with contextlib.suppress(OSError, ValueError):
                        beacon = Beacon(beacon_path)
                now_runs = beacon.read()[0] if beacon is not None else -1
                if now_runs != last_runs:
                    last_runs, last_change = now_runs, time.monotonic()
                limit = hang if now_runs >= 0 else STARTUP_GRACE
                if STOP.is_set() or time.monotonic() - last_change > limit:
                    proc.kill()
                    proc.wait()
                    outcome = "interrupted" if STOP.is_set() else "hang"
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if outcome == "done" and proc.returncode != 0:
            outcome = f"died (exit {proc.returncode})"
        log.seek(0)
        output = log.read().decode("utf-8", "replace")
    for line in output.splitlines():
        if line.startswith("  crash in "):
            print(line, file=sys.stderr, flush=True)
    report = Report(target, engine)
    with contextlib.suppress(FileNotFoundError, ValueError, TypeError):
        report = Report(**json.loads(status.read_text(encoding="utf-8")))
    if beacon is not None:
        runs_done, current = beacon.read()
        report.runs = max(report.runs, runs_done)
        beacon.close()
        if outcome not in ("done", "interrupted"):
            report.runs = runs_done + 1  # the input it was on counts
            report.crashing_inputs += 1
            signature = f"hang (no progress for {hang:g} s)" if outcome == "hang" else outcome
            if signature not in report.crashes:
                tail = "\n".join(output.splitlines()[-40:])
                report.crashes[signature] = save_crash(crash_dir, target, current, signature, tail)
    elif outcome not in ("done", "interrupted"):
        tail = "\n".join(output.splitlines()[-20:])
        print(f"--- {target}: the child {outcome} before its first input ---\n{tail}",
              file=sys.stderr)  # fmt: skip
    return report, outcome


# -- replay and main ------------------------------------------------------------------------------


def replay(target: str, files: list[Path]) -> int:
    from fuzz.targets import TARGETS

    failed = 0
    for path in files:
        started = time.monotonic()
        try:
            TARGETS[target].run(path.read_bytes())
        except Exception:
            failed += 1
            print(f"{path}: CRASH", file=sys.stderr)
            traceback.print_exc()
        else:
            print(f"{path}: ok ({time.monotonic() - started:.3f} s)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    # fuzz.targets (and with it engine/fsbridge) is imported only after the arguments are
    # read: a libFuzzer child must import it inside atheris.instrument_imports.
    parser = argparse.ArgumentParser(prog="python -m fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("--target", default="all", help="a target's name, or all (the default)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="inputs per target")
    parser.add_argument(
        "--engine",
        choices=["auto", "atheris", "hypothesis"],
        default="auto",
        help="auto (the default): atheris if it is installed, else hypothesis",
    )
    parser.add_argument("--crash-dir", type=Path, default=DEFAULT_CRASH_DIR)
    parser.add_argument("--slow", type=float, default=5.0, help="seconds that make a slow input")
    parser.add_argument("--hang", type=float, default=30.0, help="seconds that make a hang")
    parser.add_argument(
        "--jobs",
        type=int,
        default=os.cpu_count() or 1,
        help="targets fuzzed at once, each in its own child (default: one per CPU)",
    )
    parser.add_argument("--replay", type=Path, nargs="+", metavar="FILE")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    engine = args.engine
    if engine == "auto":
        engine = "atheris" if atheris_available() else "hypothesis"
    elif engine == "atheris" and not atheris_available():
        parser.error("atheris is not installed (pip install atheris)")
    if args.child is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the watching parent decides when to stop
        child(args.child, engine, args.target, args.runs, args.crash_dir, args.slow)
        return 0

    from fuzz.targets import NAMES

    if args.target not in (*NAMES, "all"):
        parser.error(f"unknown target {args.target!r}; choose from {', '.join(NAMES)} or all")
    if args.replay:
        if args.target == "all":
            parser.error("--replay needs one --target")
        with quiet():
            return replay(args.target, args.replay)

    # Ctrl-C and SIGTERM stop the run cleanly (children killed, partial reports printed),
    # even when started from a shell that ignores SIGINT in background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    names = list(NAMES) if args.target == "all" else [args.target]
    print(f"fuzzing {', '.join(names)} with {engine}, {args.runs:,} inputs each", flush=True)
    reports: list[Report] = []
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [
            pool.submit(run_target, name, engine, args.runs, args.crash_dir, args.slow, args.hang)
            for name in names
        ]
        for future in futures:  # reported in target order
            while True:
                try:
                    report = future.result()
                    break
                except KeyboardInterrupt:
                    STOP.set()  # the children are killed; what they did is still reported
            print(report.line(), flush=True)
            for signature, path in report.crashes.items():
                print(f"    {signature}: {path}", flush=True)
            reports.append(report)
    if STOP.is_set():
        print("interrupted", flush=True)
        return 130
    bad = [r for r in reports if r.crashes or r.error]
    print(f"{len(bad)} of {len(reports)} targets crashed" if bad else "no crashes", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
