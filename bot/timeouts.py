"""Waiting for an `asyncio.Event` with a deadline, in the one way that a stop can always end.

`asyncio.wait_for(event.wait(), timeout)` on Python 3.11 swallows a cancellation that
comes just as the event is set: the waiter carries on as if nothing had asked it to stop,
and a poller's loop (the outbox courier, the recall embedder, the soul watcher, a console
page's stream) would never end. `asyncio.timeout` passes the cancellation on.
"""

from __future__ import annotations

import asyncio


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait until `event` is set, `timeout_s` at most: whether it was set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True
