"""What makes the console live: one change watcher per process, and server-sent events.

The watcher asks memory.db the pollers' cheap question (`Memory.data_version_now`: SQLite's
`PRAGMA data_version` read on the event loop in microseconds, PostgreSQL's LISTEN counter)
every `interval_s`; when another process (or this one) commits,
every open page's event stream sends one `changed` event (and `messages` when the newest
message id moved too: heartbeats do not redraw the timeline), and the page's htmx
fragments marked `hx-trigger="changed from:body"` (or `messages from:body`) fetch
themselves again. One watcher serves any number of pages: pages never poll memory.db
themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING

from bot.timeouts import wait_event

if TYPE_CHECKING:
    from bot.memory import Memory

log = logging.getLogger(__name__)

KEEPALIVE_S = 15.0


class ChangeFeed:
    """Counts memory.db changes and wakes whoever waits for the next one."""

    def __init__(self, memory: Memory, *, interval_s: float = 0.05) -> None:
        self.memory = memory
        self.interval_s = interval_s
        self.generation = 0
        self.newest_message = 0  # the generation in which the newest message id last moved
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.stopping = False

    async def start(self) -> None:
        # The baseline is read now, not when the task first runs: a commit in between counts.
        seen = self.memory.data_version_now()
        newest = await self.memory.newest_message_id()
        self._task = asyncio.create_task(self._watch(seen, newest), name="console:change-feed")

    def end_streams(self) -> None:
        """Let every open event stream finish now (the server is stopping: it waits for
        open responses to end)."""
        self.stopping = True
        self._wake()

    async def stop(self) -> None:
        self.end_streams()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _wake(self, messages: bool = False) -> None:
        self.generation += 1
        if messages:
            self.newest_message = self.generation
        event, self._changed = self._changed, asyncio.Event()
        event.set()

    async def _watch(self, seen: int | None, newest: int | None) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                now = self.memory.data_version_now()
                if now is None or now == seen:
                    continue
                seen = now
                latest = await self.memory.newest_message_id()  # one read per change only
            except Exception:
                log.exception("change check failed")
                continue
            moved = latest is not None and latest != newest
            if moved:
                newest = latest
            self._wake(messages=moved)

    async def wait(self, generation: int, within_s: float) -> int:
        """Wait until the generation passes `generation` (or `within_s`); the current one."""
        if self.generation == generation and not self.stopping:
            await wait_event(self._changed, within_s)
        return self.generation

    async def events(self, gone: Callable[[], Awaitable[bool]]) -> AsyncIterator[str]:
        """One page's event stream: `changed` after each change, a comment to keep the
        connection open, until the page goes away (`gone()`) or the console stops."""
        generation = self.generation
        yield "retry: 1000\nevent: ready\ndata: {}\n\n"
        while not self.stopping:
            current = await self.wait(generation, KEEPALIVE_S)
            if self.stopping or await gone():
                return
            if current == generation:
                yield ": still here\n\n"
                continue
            if self.newest_message > generation:
                yield f"event: messages\ndata: {current}\n\n"
            generation = current
            yield f"event: changed\ndata: {current}\n\n"
