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
from reactivex import operators as ops
from reactivex.abc import SchedulerBase

K = TypeVar("K")


def debounce_per_key(source: Observable[K], due: float, scheduler: SchedulerBase) -> Observable[K]:
    """Emit each key once it has not been seen again for ``due`` seconds."""
    if due <= 0:
        return source

    def debounced(group: reactivex.GroupedObservable[K, K]) -> Observable[K]:
        return group.pipe(ops.debounce(due, scheduler=scheduler))

    return source.pipe(ops.group_by(lambda key: key), ops.flat_map(debounced))
