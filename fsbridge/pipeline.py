"""Reactive plumbing of the folder bridge: per-key debouncing on an injected scheduler.

A burst of events for one path (an editor's save is often create + several modifies + a
rename) becomes one reconcile of that path once the path has been quiet for ``due`` seconds;
different paths never delay each other.  Time comes only from the scheduler, so tests drive
it with ``reactivex.testing.TestScheduler`` in virtual time.
"""

from __future__ import annotations

from typing import TypeVar

import reactivex
from reactivex import Observable
from reactivex.abc import SchedulerBase
from reactivex.disposable import CompositeDisposable, SerialDisposable

K = TypeVar("K")


def debounce_per_key(source: Observable[K], due: float, scheduler: SchedulerBase) -> Observable[K]:
    """Emit each key once it has not been seen again for ``due`` seconds.

    One timer serves every key (not a group and a debounce subscription per key, which cost
    a third of a millisecond per new key: a ``git checkout`` of 1,000 files paid it for every
    one).  Keys are kept in the order they fall due — every key is due ``due`` after it was
    last seen, so re-seeing a key moves it to the back — and the keys that fall due together
    are emitted in one scheduler turn, oldest first.  A wall clock stepping back delays a key
    by at most ``due`` more; one stepping forward emits it early (it is only a hint).
    """
    if due <= 0:
        return source

    def subscribe(
        observer: reactivex.abc.ObserverBase[K], _: SchedulerBase | None = None
    ) -> reactivex.abc.DisposableBase:
        pending: dict[K, float] = {}  # key -> when it falls due, soonest first
        timer = SerialDisposable()
        armed_for: float | None = None  # the due time the timer was set for, None if unset
        firing = False

        def now() -> float:
            return scheduler.to_seconds(scheduler.now)

        def arm() -> None:
            nonlocal armed_for
            first = next(iter(pending.values()))
            armed_for = first
            delay = min(max(first - now(), 0.0), due)
            timer.disposable = scheduler.schedule_relative(delay, fire)

        def fire(*_: object) -> None:
            nonlocal armed_for, firing
            limit = max(now(), armed_for if armed_for is not None else 0.0)
            armed_for = None
            ready = []
            for key, when in pending.items():
                if when > limit:
                    break
                ready.append(key)
            for key in ready:
                del pending[key]
            firing = True
            try:
                for key in ready:
                    observer.on_next(key)
            finally:
                firing = False
                if pending and armed_for is None:
                    arm()

        def on_next(key: K) -> None:
            pending.pop(key, None)
            pending[key] = now() + due
            if armed_for is None and not firing:
                arm()

        subscription = source.subscribe(on_next, observer.on_error, observer.on_completed)
        return CompositeDisposable(subscription, timer)

    return reactivex.create(subscribe)


def first_then_last_per_key(
    source: Observable[K], window: float, scheduler: SchedulerBase
) -> Observable[K]:
    """Emit a key at once (on the scheduler's next turn) if it was not emitted in the last
    ``window`` seconds; keys seen during a window are emitted once when it ends.

    For renders: a lone change is written without waiting, a burst of changes to one card
    still costs one write per window rather than one per change.
    """
    if window <= 0:
        return source

    def subscribe(
        observer: reactivex.abc.ObserverBase[K], _: SchedulerBase | None = None
    ) -> reactivex.abc.DisposableBase:
        pending: dict[K, bool] = {}  # key -> seen again since its window opened
        # Keys whose windows opened in this turn share one timer, and keys to emit in this
        # turn one scheduled emission (a join opens thousands of windows at once).
        opening: list[K] = []
        emitting: list[K] = []

        def open_window(key: K) -> None:
            pending[key] = False
            if not opening:
                scheduler.schedule(lambda *_: close_together(opening))
            opening.append(key)

        def close_together(keys: list[K]) -> None:
            batch = list(keys)
            keys.clear()
            scheduler.schedule_relative(window, lambda *_: close_windows(batch))

        def close_windows(keys: list[K]) -> None:
            for key in keys:
                if pending.pop(key, False):
                    open_window(key)
                    observer.on_next(key)

        def emit(*_: object) -> None:
            keys = list(emitting)
            emitting.clear()
            for key in keys:
                observer.on_next(key)

        def on_next(key: K) -> None:
            if key in pending:
                pending[key] = True
                return
            open_window(key)
            if not emitting:
                scheduler.schedule(emit)
            emitting.append(key)

        return source.subscribe(on_next, observer.on_error, observer.on_completed)

    return reactivex.create(subscribe)


def batch_per_turn(source: Observable[K], scheduler: SchedulerBase) -> Observable[list[K]]:
    """The keys that arrive before the scheduler's next turn, as one list (in first-seen
    order, each once).  Work that shares a cost (an fsync) is done once per list."""

    def subscribe(
        observer: reactivex.abc.ObserverBase[list[K]], _: SchedulerBase | None = None
    ) -> reactivex.abc.DisposableBase:
        pending: dict[K, None] = {}

        def flush(*_: object) -> None:
            batch = list(pending)
            pending.clear()
            if batch:
                observer.on_next(batch)

        def on_next(key: K) -> None:
            if not pending:
                scheduler.schedule(flush)
            pending[key] = None

        return source.subscribe(on_next, observer.on_error, observer.on_completed)

    return reactivex.create(subscribe)
