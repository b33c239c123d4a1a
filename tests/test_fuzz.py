"""Fuzzing in CI: every target of ``fuzz/targets.py`` through hypothesis, bounded; a smoke run
of the on-demand command ``python -m fuzz.run``; and minimal, deterministic repros of what
fuzzing found, kept as strict xfails until the core modules are fixed.

A target is the one place that says what "only clean errors escape" means for one parser (see
:mod:`fuzz.targets`).  Crashes that are known bugs with a strict-xfail repro below are
recognised by where they come from (:data:`KNOWN_BUGS`) and let through here, so that this
bounded run stays green and still fails on anything new; once a bug is fixed its repro
XPASSes, strictly, and its entry goes.
"""

from __future__ import annotations

import contextlib
import logging
import re
import secrets
import subprocess
import sys
import traceback
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from pycrdt import Doc, Map

from engine import SPACE_DOC, MemoryBlobs, Replica, Store
from engine.session import PeerSession, Phase, Role, SessionClosed
from engine.sharelink import SpaceKeys, new_space_keys
from engine.spacedoc import cards_map
from engine.wire import SYNC_UPDATE, Sync, encode, encode_frame, ysync

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # plain `pytest` (unlike `python -m pytest`) leaves it off
    sys.path.insert(0, str(ROOT))

from fuzz.targets import NAMES, SEEDS, TARGETS, strategy  # noqa: E402

EXAMPLES = {"frame": 600, "codec": 600, "sharelink": 500, "canvas": 300, "ignore": 300}
EXAMPLES["session"] = 250

KNOWN_BUGS = {
    "_wanted_blobs": "PeerSession._wanted_blobs trusts a card's blob digest",
}
"""Function names whose presence in a crash's traceback marks a known bug (repros below)."""

_STAR_RUN = re.compile(rb"\*{5,}")


def known_bug(name: str, data: bytes, trace: str) -> str | None:
    """The known bug that a crash of target ``name`` on ``data`` is, if any."""
    for function, what in KNOWN_BUGS.items():
        if f"in {function}\n" in trace:
            return what
    if name == "ignore" and "re.error: " in trace and "in from_lines\n" in trace:
        return "IgnoreRules.from_lines lets re.error through"
    if name == "ignore" and ("slow input" in trace or "hang" in trace):
        rules = data.partition(b"\x00")[0]
        if _STAR_RUN.search(rules):
            return "pathspec's regex backtracks exponentially on runs of '*'"
    return None


def runs_clean_or_known(name: str, data: bytes) -> None:
    try:
        TARGETS[name].run(data)
    except Exception:
        trace = traceback.format_exc()
        if known_bug(name, data, trace) is None:
            raise


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    logging.disable(logging.CRITICAL)  # refusals are logged at WARNING by design
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # re on odd gitignore globs
            yield
    finally:
        logging.disable(logging.NOTSET)


# == bounded fuzzing ==============================================================================


@pytest.mark.parametrize("name", NAMES)
def test_seeds_run_clean(name: str) -> None:
    for data in SEEDS[name]:
        TARGETS[name].run(data)


@pytest.mark.parametrize("name", NAMES)
def test_target_under_hypothesis(name: str) -> None:
    @settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(strategy(name))
    def check(data: bytes) -> None:
        if name == "ignore" and any(
            line.count(b"*") > 6 for line in data.partition(b"\x00")[0].splitlines()
        ):
            return  # the known ReDoS (see the repro below) would stall this bounded run
        runs_clean_or_known(name, data)

    check()


def test_every_target_is_covered() -> None:
    assert set(NAMES) == set(EXAMPLES) == set(SEEDS)
    assert set(NAMES) == {"frame", "codec", "sharelink", "canvas", "ignore", "session"}


@pytest.mark.timeout(120)
def test_the_fuzz_command_runs_every_target(tmp_path: Path) -> None:
    crash_dir = tmp_path / "crashes"
    proc = subprocess.run(
        [sys.executable, "-m", "fuzz.run", "--target", "all", "--runs", "2000",
         "--crash-dir", str(crash_dir), "--slow", "2", "--hang", "10"],
        cwd=ROOT, capture_output=True, text=True, timeout=110, check=False,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    for name in NAMES:
        assert re.search(rf"^{name}\s+\S+\s+runs\s+2,000\b", proc.stdout, re.M), out
    assert "ERROR" not in proc.stdout, out
    if proc.returncode == 0:
        assert "no crashes" in proc.stdout
        return
    # Exit 1 means crashes: each saved one must be a known bug, or the run found a new one.
    assert proc.returncode == 1, out
    for report in sorted(crash_dir.glob("*.txt")):
        name = report.name.split("-", 1)[0]
        data = report.with_suffix(".bin").read_bytes()
        trace = report.read_text(encoding="utf-8")
        assert known_bug(name, data, trace), f"new crash:\n{trace}"


# == what fuzzing found ===========================================================================

_CERT_D, _CERT_L = b"dialer cert", b"listener cert"


def _session(role: Role, replica: Replica, keys: SpaceKeys) -> PeerSession:
    mine, theirs = (_CERT_D, _CERT_L) if role is Role.DIALER else (_CERT_L, _CERT_D)
    return PeerSession(
        role,
        replica,
        MemoryBlobs(),
        keys,
        my_cert=mine,
        peer_cert=theirs,
        peer_id=f"peer-of-{role.value}",
        nonce=secrets.token_bytes(32),
        name=role.value,
    )


def _handshake(dialer: PeerSession, listener: PeerSession) -> None:
    """Pump bytes between two sessions until neither has anything to say."""
    queue = [(listener, dialer.start()), (dialer, listener.start())]
    while queue:
        to, data = queue.pop(0)
        if data and to.phase is not Phase.CLOSED:
            other = dialer if to is listener else listener
            queue.append((other, to.receive(data)))


POISON = [
    pytest.param({"kind": "text", "path": "evil.md", "n:x": "not json"}, id="node-field-not-json"),
    pytest.param({"kind": "text", "path": "evil.md", "n:x": "[" * 5000}, id="node-field-too-deep"),
    pytest.param({"kind": "binary", "path": "evil.png", "size": "big"}, id="size-not-a-number"),
    pytest.param({"kind": "text", "path": "evil.md", "z": "top"}, id="z-not-a-number"),
    pytest.param({"kind": ["text"], "path": 5, "board": {"a": 1}}, id="fields-of-wrong-types"),
    pytest.param(
        {"kind": "binary", "path": "evil.png", "blob": "zz", "size": 1},
        id="blob-not-hex",
    ),
    pytest.param(
        {"kind": "binary", "path": "evil.png", "blob": "AB" * 32, "size": 1},
        id="blob-upper-case-hex",
    ),
]


@pytest.mark.parametrize("poison", POISON)
def test_a_hostile_card_entry_from_a_writer_leaves_the_replica_usable(
    poison: dict[str, Any],
) -> None:
    """A writer can put anything into a card entry: the replica keeps working for everyone."""
    keys = new_space_keys()
    victim = Replica(Store.memory(), device="victim")
    mallory = _session(Role.DIALER, Replica(Store.memory(), device="mallory"), keys)
    listener = _session(Role.LISTENER, victim, keys)
    _handshake(mallory, listener)
    assert listener.synced and mallory.synced
    doc: Doc[Any] = Doc()
    doc.apply_update(victim.encode_state(SPACE_DOC))
    base = doc.get_state()
    cards_map(doc)["e0e0e0e0e0e0e0e0"] = Map({"board": "", **poison})
    update = doc.get_update(base)
    with contextlib.suppress(SessionClosed):  # refusing it is fine; raising anything else not
        listener.receive(encode_frame(encode(Sync(SPACE_DOC, ysync(SYNC_UPDATE, update)))))
    victim.cards()  # the bridge, status and every session read this
    honest = _session(Role.DIALER, Replica(Store.memory(), device="honest"), keys)
    again = _session(Role.LISTENER, victim, keys)
    _handshake(honest, again)
    assert honest.synced, "an honest peer can no longer sync with the victim"


def test_an_ignore_line_of_stars_is_matched_quickly() -> None:
    code = (
        "from fsbridge.ignore import IgnoreRules\n"
        "rules = IgnoreRules.from_lines(['*' * 16 + 'x'])\n"
        "assert not rules.is_ignored('a' * 24 + '.md')\n"
    )
    try:
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, timeout=6, check=True)
    except subprocess.TimeoutExpired:
        pytest.fail("matching one path against one line of 16 stars took over 6 s")


@pytest.mark.parametrize("line", ["[z-a]", "notes-[9-0].md"])
def test_an_ignore_line_with_a_reversed_range_is_skipped(tmp_path: Path, line: str) -> None:
    from fsbridge.ignore import IgnoreRules

    rules = IgnoreRules.from_lines(["*.log", line])
    assert rules.problem is not None and "line 2" in rules.problem
    assert rules.is_ignored("x.log")
    (tmp_path / ".tackignore").write_text(f"*.log\n{line}\n", encoding="utf-8")
    assert IgnoreRules.load(tmp_path).is_ignored("x.log")


# Found when `python -m fuzz.run --target session` ran out of memory: pycrdt's Doc.observe
# keeps partial(observe_callback, callback, doc) in the Rust-side subscription, a cycle the
# garbage collector cannot see, so an observed Doc lives until it is unobserved.  Replica
# observed every document it loaded and never unobserved -- not on drop, and not in _forget
# after a failed transaction -- so a dropped Replica was never freed, and every update that
# failed to apply leaked a whole copy of its document (tests/test_hostile_peers.py).


def test_a_document_forgotten_after_a_failed_update_is_freed() -> None:
    import gc
    import weakref

    from pycrdt import Text

    from engine import Origin

    replica = Replica(Store.memory(), device="victim")
    replica.transact("doc", Origin.API, lambda d: d.get("content", type=Text).insert(0, "x"))
    first = weakref.ref(replica.doc("doc"))
    with pytest.raises(ValueError):
        replica.apply_update("doc", b"\x01\x02not an update", Origin.PEER)
    assert replica.text("doc") == "x"  # reloaded from the store
    gc.collect()
    assert first() is None, "the forgotten document is still alive"


def test_a_dropped_replica_is_freed() -> None:
    import gc
    import weakref

    store = Store.memory()
    replica = Replica(store, device="gone")
    gone = weakref.ref(replica)
    del replica
    gc.collect()
    assert gone() is None, "a Replica nobody references is still alive"
