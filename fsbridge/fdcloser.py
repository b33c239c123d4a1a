"""Closing descriptors of replaced files off the event loop.

When Tack replaces a card file it holds the old file open (to catch a save racing the
replace).  Closing that last descriptor frees the old, now nameless, inode, which the file
system does synchronously in ``close(2)``: on ext4 under a stream of renders this was a
quarter of a receiving device's time (see BENCHMARKS.md, P4).  Nothing waits for those
closes, so a background thread does them; ``os.close`` releases the GIL while it runs.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading


class DescriptorCloser:
    """Closes descriptors handed to :meth:`close` on its own daemon thread, in order."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def close(self, fd: int) -> None:
        """Close ``fd`` soon; the caller must not use it after this call."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="tack-fd-closer", daemon=True
                )
                self._thread.start()
        self._queue.put(fd)

    def drain(self) -> None:
        """Close everything handed over so far, then stop the thread (it restarts on use)."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()

    def _run(self) -> None:
        while (fd := self._queue.get()) is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
