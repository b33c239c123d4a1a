"""The bridge's reactive timing operators, in virtual time."""

from __future__ import annotations

from collections.abc import Callable

from reactivex import Observable
from reactivex.abc import SchedulerBase
from reactivex.subject import Subject
from reactivex.testing import TestScheduler

from fsbridge.pipeline import debounce_per_key, first_then_last_per_key

Operator = Callable[[Observable[str], float, SchedulerBase], Observable[str]]


def collect(
    operator: Operator, window: float
) -> tuple[Subject[str], TestScheduler, list[tuple[float, str]]]:
    scheduler = TestScheduler()
    source: Subject[str] = Subject()
    seen: list[tuple[float, str]] = []
    operator(source, window, scheduler).subscribe(
        lambda key: seen.append((round(scheduler.to_seconds(scheduler.clock), 3), key))
    )
    return source, scheduler, seen


def test_a_lone_key_is_emitted_without_waiting_for_the_window() -> None:
    source, scheduler, seen = collect(first_then_last_per_key, 0.005)
    source.on_next("a")
    scheduler.advance_by(0.0001)
    assert seen == [(0.0, "a")]
    scheduler.advance_by(1.0)
    assert seen == [(0.0, "a")]  # no trailing emission without a second change


def test_a_burst_is_one_emission_now_and_one_when_the_window_ends() -> None:
    source, scheduler, seen = collect(first_then_last_per_key, 0.005)
    source.on_next("a")
    for _ in range(10):
        scheduler.advance_by(0.0001)
        source.on_next("a")
    source.on_next("b")
    scheduler.advance_by(1.0)
    assert [k for _, k in seen] == ["a", "b", "a"]
    assert seen[-1][0] == 0.005  # the burst's trailing write, one window after the first


def test_many_keys_at_once_each_get_their_own_window() -> None:
    source, scheduler, seen = collect(first_then_last_per_key, 0.005)
    for key in "abcde":
        source.on_next(key)
    scheduler.advance_by(0.001)
    source.on_next("b")
    source.on_next("d")
    source.on_next("f")  # a new key, in a later turn: its own window
    scheduler.advance_by(0.003)
    source.on_next("f")
    scheduler.advance_by(1.0)
    assert seen == [
        *[(0.0, k) for k in "abcde"],
        (0.001, "f"),
        (0.005, "b"),
        (0.005, "d"),
        (0.006, "f"),
    ]


def test_the_debounce_waits_for_quiet() -> None:
    source, scheduler, seen = collect(debounce_per_key, 0.02)
    source.on_next("a")
    scheduler.advance_by(0.01)
    source.on_next("a")
    scheduler.advance_by(0.015)
    assert seen == []
    scheduler.advance_by(0.01)
    assert seen == [(0.03, "a")]


def test_each_key_has_its_own_quiet_time() -> None:
    source, scheduler, seen = collect(debounce_per_key, 0.02)
    source.on_next("a")
    scheduler.advance_by(0.01)
    source.on_next("b")
    scheduler.advance_by(0.005)
    source.on_next("a")  # "a" waits again; "b" does not wait for it
    scheduler.advance_by(1.0)
    assert seen == [(0.03, "b"), (0.035, "a")]


def test_keys_that_fall_due_together_come_out_together_oldest_first() -> None:
    source, scheduler, seen = collect(debounce_per_key, 0.02)
    keys = [f"card-{i}" for i in range(1000)]
    for key in keys:
        source.on_next(key)
    source.on_next("card-0")  # seen again: it falls due last
    scheduler.advance_by(1.0)
    assert seen == [(0.02, key) for key in [*keys[1:], "card-0"]]


def test_a_key_seen_again_while_its_turn_is_running_is_debounced_again() -> None:
    scheduler = TestScheduler()
    source: Subject[str] = Subject()
    seen: list[tuple[float, str]] = []

    def on_key(key: str) -> None:
        seen.append((round(scheduler.to_seconds(scheduler.clock), 3), key))
        if len(seen) == 1:
            source.on_next(key)  # the consumer hints the same key again (a child path)

    debounce_per_key(source, 0.02, scheduler).subscribe(on_key)
    source.on_next("a")
    scheduler.advance_by(1.0)
    assert seen == [(0.02, "a"), (0.04, "a")]


def test_disposing_the_subscription_cancels_the_pending_keys() -> None:
    scheduler = TestScheduler()
    source: Subject[str] = Subject()
    seen: list[str] = []
    subscription = debounce_per_key(source, 0.02, scheduler).subscribe(seen.append)
    source.on_next("a")
    subscription.dispose()
    scheduler.advance_by(1.0)
    assert seen == []
