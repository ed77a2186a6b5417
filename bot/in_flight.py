"""Work in flight (turns being answered, outbox rows being sent), counted so that a stop can
wait until none is half done."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from bot.timeouts import wait_event


class InFlight:
    """How many pieces of one kind of work are running now; `settled` waits for none."""

    def __init__(self) -> None:
        self.count = 0
        self._none = asyncio.Event()
        self._none.set()

    @contextlib.asynccontextmanager
    async def track(self) -> AsyncIterator[None]:
        self.count += 1
        self._none.clear()
        try:
            yield
        finally:
            self.count -= 1
            if not self.count:
                self._none.set()

    async def settled(self, timeout_s: float) -> bool:
        """Wait until nothing is in flight, `timeout_s` at most: whether that happened."""
        return await wait_event(self._none, timeout_s)
