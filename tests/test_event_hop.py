"""The daemon's hop of watcher events onto the loop: a real loop, a real thread."""

from __future__ import annotations

import asyncio
import threading

from fsbridge.bridge import FsEvent
from fsbridge.daemon import EventHop


def test_events_from_another_thread_arrive_on_the_loop_in_order_in_bursts() -> None:
    async def main() -> tuple[list[str], set[int], int]:
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        threads: set[int] = set()
        wakeups = 0
        done = asyncio.Event()

        def sink(event: FsEvent) -> None:
            threads.add(threading.get_ident())
            seen.append(event.path)
            if len(seen) == 1000:
                done.set()

        hop = EventHop(loop, sink)
        real_deliver = hop._deliver

        def counting_deliver() -> None:
            nonlocal wakeups
            wakeups += 1
            real_deliver()

        hop._deliver = counting_deliver  # type: ignore[method-assign]
        gate = threading.Event()

        def watcher() -> None:
            for i in range(1000):
                hop.put(FsEvent("modified", f"card-{i}.md"))
            gate.set()

        # The loop is busy (it runs no callbacks) while the whole burst arrives.
        thread = threading.Thread(target=watcher)
        thread.start()
        gate.wait(10)
        await asyncio.wait_for(done.wait(), 10)
        thread.join()
        return seen, threads, wakeups

    seen, threads, wakeups = asyncio.run(main())
    assert seen == [f"card-{i}.md" for i in range(1000)]
    assert threads == {threading.get_ident()}  # the loop's thread (this one)
    assert wakeups == 1  # one wake-up of the loop for the whole burst


def test_one_failing_event_does_not_stop_the_others() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        seen: list[str] = []

        def sink(event: FsEvent) -> None:
            if event.path == "bad.md":
                raise ValueError("boom")
            seen.append(event.path)

        hop = EventHop(loop, sink)
        for name in ("a.md", "bad.md", "b.md"):
            hop.put(FsEvent("modified", name))
        for _ in range(3):
            await asyncio.sleep(0)
        return seen

    assert asyncio.run(main()) == ["a.md", "b.md"]
