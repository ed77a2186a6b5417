"""Waiting in tests: poll a condition until it holds, with a timeout, instead of sleeping.

The one poll-until helper of the suite. A condition is a cheap check (a read of memory.db, of a
fake's records, of a Maildir) that returns something truthy once the awaited thing happened;
that value is handed back to the caller. A fake server that can announce its own changes
waits on them instead (see tests/fakes/server.py); this module never sleeps a fixed time to
let something happen.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

Description = str | Callable[[], str]
"""What is awaited, for the timeout message: text, or a function giving it at the timeout
(so the message can show the state at that moment, for example the rows found)."""


@overload
async def wait_until(
    condition: Callable[[], Awaitable[T]],
    timeout: float = ...,
    what: Description = ...,
    interval: float = ...,
) -> T: ...
@overload
async def wait_until(
    condition: Callable[[], T],
    timeout: float = ...,
    what: Description = ...,
    interval: float = ...,
) -> T: ...
async def wait_until(
    condition: Callable[[], object],
    timeout: float = 10.0,
    what: Description = "the condition",
    interval: float = 0.02,
) -> Any:
    """Call `condition` (sync or async) every `interval` s until it returns something truthy;
    return that. After `timeout` s raise AssertionError naming `what` and the last value."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            raise AssertionError(_timed_out(timeout, what, value))
        await asyncio.sleep(interval)


def _timed_out(timeout: float, what: Description, last: object) -> str:
    message = f"timed out after {timeout} s waiting for {what() if callable(what) else what}"
    if last is not None and last is not False:  # None and False tell nothing
        message += f"; last value: {last!r}"
    return message
