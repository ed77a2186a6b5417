"""Hearing changes to files and folders without polling: Linux's inotify, through libc.

One `Inotify` is one kernel queue with any number of watches, read on the running event
loop: the kernel queues events while nobody waits (identical ones merge), and the loop is
woken only while someone waits for them. Two users:
- memory.db's outbox bell (bot/memory/bell.py): a commit that queues outbox rows writes
  to it, so the outbox couriers sleep until there is something to deliver;
- the soul's folders (bot/soul.py): a save of SOUL.md, or a folder on its path replaced.

Linux only (`Inotify.open` returns None elsewhere, or when the user's inotify instances
are used up); callers then poll. Nothing to install: ctypes on the C library, which is
why this replaced watchfiles for the soul, whose Rust watcher woke every 100 ms to look
at its stop flag and brought anyio along (bench/lean.py: about 1.5 MiB and 1 ms of CPU a
second in every idle entrance).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import struct
from dataclasses import dataclass

from bot.timeouts import wait_event

log = logging.getLogger(__name__)

# Event bits (linux/inotify.h).
IN_MODIFY = 0x002
IN_ATTRIB = 0x004
IN_CLOSE_WRITE = 0x008
IN_MOVED_FROM = 0x040
IN_MOVED_TO = 0x080
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_MOVE_SELF = 0x800
IN_Q_OVERFLOW = 0x4000  # events were lost: whoever reads must look for themselves
IN_IGNORED = 0x8000  # the watch is gone (its file deleted, its file system unmounted)
IN_ONLYDIR = 0x01000000
GONE = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED  # the watched path is no longer there
# Everything that may change what a path inside a watched folder names, or the folder.
FOLDER_CHANGES = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
)

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


@dataclass(frozen=True, slots=True)
class Event:
    """One change: `path` is the watched path itself, or a name inside a watched folder
    (`overflow`: events were lost, `path` is empty)."""

    path: str
    mask: int

    @property
    def gone(self) -> bool:
        """The watched path itself was deleted or moved away (its watch ended)."""
        return bool(self.mask & GONE)

    @property
    def overflow(self) -> bool:
        return bool(self.mask & IN_Q_OVERFLOW)


class Inotify:
    """A kernel queue of changes to the paths `add`ed, read on the loop of whoever waits
    (one waiter at a time)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._loop: asyncio.AbstractEventLoop | None = None  # the one a waiter reads on
        self._paths: dict[int, str] = {}  # watch descriptor -> the path it watches
        self._pending: list[Event] = []
        self._heard = asyncio.Event()

    @classmethod
    def open(cls) -> Inotify | None:
        """A queue, or None where there can be none."""
        libc = _inotify()
        if libc is None:
            return None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            log.debug("no inotify: %s", os.strerror(ctypes.get_errno()))
            return None
        return cls(fd)

    def add(self, path: str, mask: int) -> None:
        """Watch `path` for the events of `mask`. Raises OSError (FileNotFoundError when the
        path is gone; ENOSPC when the user's watches are used up)."""
        libc = _inotify()
        assert libc is not None  # an open queue has libc
        wd = libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"cannot watch {path}: {os.strerror(code)}", path)
        self._paths[wd] = path

    def drain(self) -> list[Event]:
        """The events that came since the last look (read now, without waiting)."""
        self._read()
        events, self._pending = self._pending, []
        return events

    async def wait(self, timeout_s: float) -> list[Event]:
        """The events that came since the last look; if none, the first ones to come within
        `timeout_s` (an empty list after it, or once the queue is closed)."""
        events = self.drain()
        if events or self.fd < 0 or timeout_s <= 0:
            return events
        self._heard.clear()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self.fd, self._readable)
        try:
            await wait_event(self._heard, timeout_s)
        finally:
            self._stop_reading()
        return self.drain()

    @property
    def closed(self) -> bool:
        return self.fd < 0

    def close(self) -> None:
        """Stop watching (every watch ends with the queue); a waiter returns now."""
        if self.fd >= 0:
            self._stop_reading()
            os.close(self.fd)
            self.fd = -1
        self._heard.set()

    def _readable(self) -> None:
        self._read()
        if self._pending:
            self._heard.set()

    def _stop_reading(self) -> None:
        if self._loop is not None:
            self._loop.remove_reader(self.fd)
            self._loop = None

    def _read(self) -> None:
        while self.fd >= 0:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError as exc:  # never seen: the queue is closed, its users notice
                log.warning("inotify read failed, watches closed: %s", exc)
                self.close()
                return
            if not data:
                return
            at = 0
            while at + _EVENT.size <= len(data):
                wd, mask, _, length = _EVENT.unpack_from(data, at)
                name = data[at + _EVENT.size : at + _EVENT.size + length].rstrip(b"\0")
                at += _EVENT.size + length
                watched = self._paths.get(wd, "")
                if mask & IN_IGNORED:
                    self._paths.pop(wd, None)
                path = os.path.join(watched, os.fsdecode(name)) if name else watched
                self._pending.append(Event(path, mask))
