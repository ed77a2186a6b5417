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

Linux only (inotify through libc). `WalWatch.open` returns None elsewhere, or when the
file cannot be watched, and the pollers keep their fixed pause. A watch whose file is
deleted or moved (the log is removed only when no connection holds memory.db, which a
running process always does) says so (`alive`), and the caller opens a new one.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import struct
from pathlib import Path

log = logging.getLogger(__name__)

IN_MODIFY = 0x002
IN_MOVE_SELF = 0x800
IN_DELETE_SELF = 0x400
IN_IGNORED = 0x8000
_GONE = IN_MOVE_SELF | IN_DELETE_SELF | IN_IGNORED
_EVENT = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then the name)

_libc: ctypes.CDLL | None = None


def _inotify() -> ctypes.CDLL | None:
    """libc, if it has inotify (Linux)."""
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(None, use_errno=True)
        except OSError:
            return None
    return _libc if hasattr(_libc, "inotify_init1") else None


class WalWatch:
    """Writes to one file, heard on this event loop (`wait`)."""

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop) -> None:
        self.fd = fd
        self.loop = loop
        self.alive = True
        self._written = asyncio.Event()
        self._reading = False

    @classmethod
    def open(cls, path: Path) -> WalWatch | None:
        """A watch of `path` on the running loop, or None where there can be none."""
        libc = _inotify()
        if libc is None:
            return None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.debug("no inotify for %s: %s", path, os.strerror(ctypes.get_errno()))
            return None
        mask = IN_MODIFY | IN_MOVE_SELF | IN_DELETE_SELF
        if libc.inotify_add_watch(fd, os.fsencode(path), mask) < 0:
            log.debug("cannot watch %s: %s", path, os.strerror(ctypes.get_errno()))
            os.close(fd)
            return None
        return cls(fd, asyncio.get_running_loop())

    def discard(self) -> bool:
        """Forget the writes heard while nobody waited: True if there were any."""
        return self._drain()

    async def wait(self, timeout_s: float) -> bool:
        """True once the file is written (or was, since the last `discard` or `wait`);
        False after `timeout_s` without a write, or when the watch is closed."""
        if self._drain():
            return True
        if not self.alive or timeout_s <= 0:
            return False
        self._written.clear()
        self.loop.add_reader(self.fd, self._readable)
        self._reading = True
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
        # that comes as the event is set, and the courier it serves would never stop.
        try:
            async with asyncio.timeout(timeout_s):
                await self._written.wait()
        except TimeoutError:
            return False
        finally:
            self._stop_reading()
        return self.fd >= 0  # closed meanwhile: no write

    def close(self) -> None:
        if self.fd >= 0:
            self._stop_reading()
            os.close(self.fd)
            self.fd = -1
        self.alive = False
        self._written.set()  # a waiter returns now

    def _readable(self) -> None:
        if self._drain():  # a deletion or a move is an event too: the waiter sees `alive`
            self._written.set()

    def _stop_reading(self) -> None:
        if self._reading:
            self._reading = False
            self.loop.remove_reader(self.fd)

    def _drain(self) -> bool:
        """Read every queued event: True if there was any (an overflow, events lost, is
        one too)."""
        heard = False
        while self.fd >= 0:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                break
            if not data:
                break
            heard = True
            at = 0
            while at + _EVENT.size <= len(data):
                _, mask, _, length = _EVENT.unpack_from(data, at)
                at += _EVENT.size + length
                if mask & _GONE:
                    self.alive = False
        return heard
