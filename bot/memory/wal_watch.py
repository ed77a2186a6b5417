"""Hearing commits to memory.db without polling: inotify on its write-ahead log.

In WAL mode every commit, by any process on this host, writes its pages to memory.db-wal,
and inotify reports each write (IN_MODIFY) to whoever watches the file. The outbox courier
used to look at `PRAGMA data_version` 20 times a second to notice another process's commit:
each look a timer wake-up, about 0.3 ms of CPU on a small VM, so 6 ms of CPU a second in
every idle entrance. With the watch it sleeps until the file is written, and its looks stay
paced (at most one per `poll_s`) when memory is busy: an idle `mirror up` spends about half
the CPU it did (bench/lean.py's idle figures, 2026-12-04: 28-37 -> 17-19 ms a second).

The kernel queues the events while nobody waits (identical ones merge), so the event loop
is woken only while a poller waits; a wait first takes what came meanwhile.

Linux only (inotify through libc: bot/inotify.py). `WalWatch.open` returns None elsewhere,
or when the file cannot be watched, and the pollers keep their fixed pause. A watch whose
file is deleted or moved (the log is removed only when no connection holds memory.db,
which a running process always does) says so (`alive`), and the caller opens a new one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from bot.inotify import IN_DELETE_SELF, IN_MODIFY, IN_MOVE_SELF, Event, Inotify

log = logging.getLogger(__name__)


class WalWatch:
    """Writes to one file, heard on this event loop (`wait`)."""

    def __init__(self, queue: Inotify) -> None:
        self.queue = queue
        self.alive = True

    @classmethod
    def open(cls, path: Path) -> WalWatch | None:
        """A watch of `path` on the running loop, or None where there can be none."""
        queue = Inotify.open()
        if queue is None:
            return None
        try:
            queue.add(str(path), IN_MODIFY | IN_MOVE_SELF | IN_DELETE_SELF)
        except OSError as exc:
            log.debug("%s", exc)
            queue.close()
            return None
        return cls(queue)

    def discard(self) -> bool:
        """Forget the writes heard while nobody waited: True if there were any."""
        return self._heard(self.queue.drain())

    async def wait(self, timeout_s: float) -> bool:
        """True once the file is written (or was, since the last `discard` or `wait`);
        False after `timeout_s` without a write, or when the watch is closed."""
        if not self.alive:
            return self.discard()
        return self._heard(await self.queue.wait(timeout_s)) and not self.queue.closed

    def close(self) -> None:
        self.queue.close()  # a waiter returns now
        self.alive = False

    def _heard(self, events: list[Event]) -> bool:
        """Any event is a write heard (an overflow, events lost, is one too); a deletion
        or a move also ends the watch (`alive`)."""
        if any(event.gone for event in events) or self.queue.closed:
            self.alive = False
        return bool(events)
