"""Replay a failing run of the model test (tests/test_model.py) from hypothesis's printout.

hypothesis prints a failing state machine as ``state.rule(...)`` lines, each after the
``Draw N (label): value`` lines its rule drew.  This replays exactly those steps, without
hypothesis, so that a long failing history can be cut down::

    .venv/bin/python tests/replay_model.py failing-run.txt
    .venv/bin/python tests/replay_model.py failing-run.txt --minimise "found 3×" > short.txt

The first exits non-zero (with the model's assertion) when the replayed run still fails.
The second drops one step at a time (with the draws printed before it) for as long as the
run still fails with a message containing the given text, each try in a fresh process, and
prints what is left in the same format.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import deque
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from test_model import TackModel

STEP = re.compile(r"state\.(\w+)\((.*)\)\s*$")
DRAW = re.compile(r"Draw \d+ \(([^)]*)\): (.*)$")


class ScriptedData:
    """Stands in for hypothesis's ``data()``: answers each draw from the printout."""

    def __init__(self, draws: list[tuple[str, str]]) -> None:
        self.draws = deque(draws)

    def draw(self, strategy: Any, label: str = "") -> Any:
        want, shown = self.draws.popleft()
        assert want == label, f"the run drew {label!r} where the printout has {want!r}"
        elements = getattr(strategy, "elements", None)
        if elements is not None:
            for item in elements:
                if repr(item) == shown:
                    return item
            raise AssertionError(f"{shown} is not one of {list(elements)!r} ({label})")
        return ast.literal_eval(shown)


def steps(text: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    draws: list[tuple[str, str]] = []
    for raw in text.splitlines():
        line = raw.lstrip(" \t|E").rstrip()  # pytest prefixes: "E", " | "
        if m := DRAW.match(line):
            draws.append((m.group(1), m.group(2).split("  # ")[0]))  # "# or any other ..."
        elif m := STEP.match(line):
            name, args = m.group(1), m.group(2)
            kwargs: dict[str, Any] = {}
            if args:
                for part in args.split(", "):
                    key, value = part.split("=", 1)
                    kwargs[key] = (
                        ScriptedData(draws) if value == "data(...)" else ast.literal_eval(value)
                    )
            if name != "teardown":
                out.append((name, kwargs))
            draws = []
    return out


def blocks(text: str) -> list[list[str]]:
    """The printout as steps, each with the draw lines printed before it."""
    out: list[list[str]] = []
    current: list[str] = []
    for raw in text.splitlines():
        line = raw.lstrip(" \t|E").rstrip()  # pytest prefixes: "E", " | "
        if DRAW.match(line):
            current.append(line)
        elif STEP.match(line) and not line.startswith("state.teardown"):
            out.append([*current, line])
            current = []
    return out


def minimise(text: str, needle: str) -> str:
    def fails(steps: list[list[str]]) -> bool:
        trial = "\n".join(line for step in steps for line in step) + "\n"
        run = subprocess.run(
            [sys.executable, __file__, "-"], input=trial, capture_output=True, text=True
        )
        return needle in run.stdout + run.stderr

    steps = blocks(text)
    assert fails(steps), f"the run does not fail with {needle!r}"
    shrunk = True
    while shrunk:
        shrunk = False
        for i in range(len(steps) - 1, 0, -1):  # the first step makes the world
            trial = steps[:i] + steps[i + 1 :]
            if fails(trial):
                steps, shrunk = trial, True
                print(f"dropped step {i}: {len(steps)} left", file=sys.stderr)
    return "\n".join(line for step in steps for line in step)


def main() -> None:
    text = sys.stdin.read() if sys.argv[1] == "-" else Path(sys.argv[1]).read_text()
    if len(sys.argv) == 4 and sys.argv[2] == "--minimise":
        print(minimise(text, sys.argv[3]))
        return
    run(text, echo=True)
    print("the replayed run passed")


def run(text: str, echo: bool = False) -> None:
    """Replay ``text`` (a printout, or what ``--minimise`` printed) on a fresh model; raises
    what the run raises, the final convergence check included."""
    machine = TackModel()
    try:
        for name, kwargs in steps(text):
            if echo:
                print(name, {k: v for k, v in kwargs.items() if not isinstance(v, ScriptedData)})
            getattr(machine, name)(**kwargs)
    except BaseException:
        machine.teardown()  # with the step's exception in hand: cleans up, does not converge
        raise
    machine.teardown()  # converges and checks, as hypothesis's teardown does


if __name__ == "__main__":
    main()
