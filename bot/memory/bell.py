"""The outbox bell: a courier wakes when a row it may deliver was committed, not at every
commit.

The outbox couriers (bot/outbox.py) used to wake at every commit to memory, by any process:
on SQLite an inotify watch on the write-ahead log, on PostgreSQL every NOTIFY. Each wake
cost an entrance about 0.5 ms of CPU on a small VM (an inotify read or two, epoll
changes, the looks at `PRAGMA data_version` while the commit became visible, then the
outbox's own look), and a busy `mirror up` commits a hundred times a second: measured
(2026-12-04), 8.6-11.9 ms of CPU a second in one courier while another process committed
15 times a second, 19 ms at 100; each entrance paid it for every commit of the others.
Almost none of those commits queue anything for a courier: a turn's own reply is stored
claimed by the turn, which sends it. With the bell, the same courier: 0.35-0.40 ms a
second at 15 and at 100 commits.

So a transaction that queues rows due now (`outbox_store.enqueue_in`, released claims)
asks to ring the bell once it has committed (`ring_after_commit`, read by the write
wrapper with `take_ring`, in the same thread, or on PostgreSQL the same greenlet), and
couriers wait for the bell alone:
- SQLite: a write to the file `<memory.db>-bell`, heard through inotify (`Bell`, Linux;
  `FileWatch`). The file holds one byte; the first ring or watch makes it, with
  memory.db's permissions.
- PostgreSQL: the commit's NOTIFY carries the payload 'outbox' (bot/memory/pg_engine.py).
What becomes due by time alone (a retry's backoff, a claim that ran out) is found by the
courier's look every `recheck_s` (1 s), as before; a ring lost to a crash between the
COMMIT and the ring waits for that look too. Where the bell cannot be heard (not Linux,
the file cannot be made, the LISTEN connection down) the courier looks every `poll_s`.

The kernel queues a watch's events while nobody waits (identical ones merge): a wait
first takes what came meanwhile, so a ring between a courier's look and its wait ends the
wait at once.
"""

from __future__ import annotations

import contextvars
import logging
import os
import time
from pathlib import Path

from bot.inotify import IN_DELETE_SELF, IN_MODIFY, IN_MOVE_SELF, Event, Inotify

log = logging.getLogger(__name__)

RETRY_S = 5.0  # a bell that cannot be watched (yet): tried again this often

# This write transaction asked to ring. A context variable: each thread has its own, and so
# has each greenlet (PostgreSQL's calls share the loop's thread: bot/memory/pg_green.py).
_asked: contextvars.ContextVar[bool] = contextvars.ContextVar("mirror_ring", default=False)


def ring_after_commit() -> None:
    """Inside a write transaction that queued outbox rows due now: ring the bell once it
    has committed (the write wrappers in bot/memory/database.py and pg_engine.py)."""
    _asked.set(True)


def take_ring() -> bool:
    """Whether this transaction asked to ring; forgets it (read after COMMIT, and before a
    transaction begins, so a rolled-back one's ask never rings)."""
    asked = _asked.get()
    _asked.set(False)
    return asked


class FileWatch:
    """Writes to one file, heard on this event loop (`wait`)."""

    def __init__(self, queue: Inotify) -> None:
        self.queue = queue
        self.alive = True

    @classmethod
    def open(cls, path: Path) -> FileWatch | None:
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


class Bell:
    """The outbox bell of one SQLite memory: `ring` (any thread), `heard` and `wait` (on
    the event loop)."""

    def __init__(self, path: Path, beside: Path) -> None:
        self.path = path
        self.beside = beside  # memory.db, whose permissions the bell file takes
        self._watch: FileWatch | None = None
        self._tried_at = -RETRY_S

    def ring(self) -> None:
        """One byte written (rare: a ring a queued row): opened each time, so that a bell
        file removed meanwhile is made again. A failure only delays the couriers until
        their next look."""
        try:
            fd = self._open()
            try:
                os.pwrite(fd, b"\n", 0)
            finally:
                os.close(fd)
        except OSError as exc:
            log.debug("cannot ring the outbox bell %s: %s", self.path, exc)

    def _open(self) -> int:
        """The bell file for writing, made if missing with memory.db's permissions (as
        SQLite makes its -wal and -shm files: processes of other users that may write
        memory.db may ring and hear it too)."""
        flags = os.O_WRONLY | os.O_CLOEXEC
        try:
            return os.open(self.path, flags)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(self.path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile
            return os.open(self.path, flags)
        try:
            os.fchmod(fd, os.stat(self.beside).st_mode & 0o666)
        except OSError as exc:
            log.debug("outbox bell %s keeps mode 0600: %s", self.path, exc)
        return fd

    @property
    def heard(self) -> bool:
        """Whether `wait` ends at a ring: the file is watched (a watch is made, or made
        again after its file went, at most every RETRY_S)."""
        watch = self._watch
        if watch is not None and watch.alive:
            return True
        now = time.monotonic()
        if now - self._tried_at < RETRY_S:
            return False
        self._tried_at = now
        if watch is not None:
            watch.close()
        try:
            os.close(self._open())
        except OSError as exc:
            log.debug("cannot make the outbox bell %s: %s", self.path, exc)
        self._watch = FileWatch.open(self.path)
        return self._watch is not None

    async def wait(self, timeout_s: float) -> bool:
        """Until a ring (one since the last wait ends it at once), `timeout_s` at most."""
        if self._watch is None:
            return False
        return await self._watch.wait(timeout_s)

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
