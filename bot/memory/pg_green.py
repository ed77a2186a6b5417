"""Memory calls on PostgreSQL run on the event loop's own thread, each in a greenlet.

The stores are synchronous functions holding a transaction (`fn(conn)`), shared with SQLite,
so on PostgreSQL each one used to run in its connection's worker thread. A turn makes three
such calls, and each paid two hand-offs between threads: the worker woken from its queue,
then the event loop woken from its selector by the result: 0.25 ms a call on a busy
2-core host. Measured at 1M messages in alternating blocks against those threads, a turn
here is 0.13-0.76 ms shorter at p50 and 1.9-2.7 ms at p90, with 0.3-0.55 ms less CPU.

Here a call runs in a greenlet on the loop's thread (`run`), as SQLAlchemy's asyncio layer
runs its synchronous ORM over asynchronous drivers. The connection is psycopg's own, with
one change (`GreenConnection.wait`): where psycopg would block its thread until the server
answers, the greenlet first waits in `poll` for up to `SPIN_S` (a loopback answer comes
in 0.1-3 ms), then hands the rest of the wait to the event loop and switches back to it
(`wait_for`): the loop serves everything else meanwhile, and the greenlet resumes when the
socket is ready. So the loop is never blocked for longer than `SPIN_S` at a time (and
the GIL is free meanwhile); a
connection whose answers keep coming later than that (a distant server) stops waiting in
`poll` at all (`Spin`). What cannot wait this way (connecting, a side line's search, a
pause between retries) goes to a thread or to the loop (`blocking`, `result_of`,
`pause`).

One call at a time per connection (`Worker` in bot/memory/pg_engine.py holds a lock): a
greenlet switched out in the middle of a statement holds psycopg's connection lock, which
another greenlet of the same thread must never ask for. A call whose caller is cancelled
runs to its end all the same, as it did in its thread (a connection left in the middle of
a statement could not be used again), and then the caller gets its CancelledError. It
runs in the caller's task: a task of its own, shielded, cost 0.4 ms of CPU a turn (two
more rounds of the loop a call; measured).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import select
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import greenlet
import psycopg
from psycopg.waiting import Ready, Wait

T = TypeVar("T")

SPIN_S = 0.003  # the longest a greenlet waits for an answer in `poll`, the loop blocked
_POLL_IN = select.POLLIN | select.POLLERR | select.POLLHUP
_POLL_OUT = select.POLLOUT | select.POLLERR | select.POLLHUP


class _Call(greenlet.greenlet):
    """A memory call's greenlet (`run`): what `wait_for` may switch out of."""


def in_green() -> bool:
    """Whether this code runs in a memory call's greenlet (`run`)."""
    return isinstance(greenlet.getcurrent(), _Call)


async def run(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args) in a greenlet of this thread; each `wait_for` in it is awaited here. If
    this task is cancelled meanwhile, the call still runs to its end (see the module)."""
    call = _Call(fn, greenlet.getcurrent())
    asked = call.switch(*args)
    stopped: asyncio.CancelledError | None = None
    while not call.dead:
        future: asyncio.Future[Any] = asked
        try:
            answer = await asyncio.shield(future)
        except asyncio.CancelledError as exc:
            if not future.done():  # the caller stopped waiting: the call goes on
                stopped = exc
                continue
            asked = call.throw(exc)
        except BaseException as exc:  # thrown into the call, which decides
            asked = call.throw(exc)
        else:
            asked = call.switch(answer)
    if stopped is not None:
        raise stopped
    result: T = asked
    return result


def wait_for(awaitable: Awaitable[T]) -> T:
    """Inside `run`: the loop awaits `awaitable` (this greenlet switched out meanwhile)."""
    current = greenlet.getcurrent()
    if not isinstance(current, _Call):
        raise RuntimeError("wait_for outside a memory call's greenlet")
    result: T = current.parent.switch(asyncio.ensure_future(awaitable))
    return result


def blocking(fn: Callable[..., T], *args: Any) -> T:
    """fn(*args), which may block: in a thread, the loop free meanwhile, when called in a
    greenlet; here otherwise."""
    if not in_green():
        return fn(*args)
    return wait_for(asyncio.get_running_loop().run_in_executor(None, fn, *args))


def pause(seconds: float) -> None:
    """Sleep, the loop free meanwhile when called in a greenlet."""
    if in_green():
        wait_for(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def result_of(future: concurrent.futures.Future[T]) -> T:
    """A thread's result (a side line's search): waited for in `poll`'s way (up to
    `SPIN_S`, the loop blocked), then by the loop."""
    if in_green():
        concurrent.futures.wait([future], timeout=SPIN_S)
        if not future.done():
            return wait_for(asyncio.wrap_future(future))
    return future.result()


class Spin:
    """How long a connection's greenlet waits in `poll` before it hands the wait to the
    loop: `SPIN_S` while its answers come within it; none for the next `REST` waits after
    `MISSES` waits in a row found no answer by then (a server far away, a long search)."""

    MISSES = 3
    REST = 100

    def __init__(self) -> None:
        self.missed = 0
        self.resting = 0

    def budget(self) -> float:
        if self.resting:
            self.resting -= 1
            return 0.0
        return SPIN_S

    def answered(self, in_time: bool) -> None:
        if in_time:
            self.missed = 0
            return
        self.missed += 1
        if self.missed >= self.MISSES:
            self.missed = 0
            self.resting = self.REST


class GreenConnection(psycopg.Connection[Any]):
    """psycopg's connection, waiting for the server as a greenlet should (see the module);
    outside a memory call's greenlet, exactly as psycopg waits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spin = Spin()

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        if not in_green() or not _loop_running():  # (no loop: a greenlet ended at exit)
            return super().wait(gen, *args, **kwargs)
        spin, fileno = self.spin, self.pgconn.socket
        try:
            state = next(gen)
            while True:
                budget = spin.budget()
                ready = _ready_within(fileno, state, budget) if budget else 0
                if budget:
                    spin.answered(bool(ready))
                state = gen.send(ready or _ready_later(fileno, state))
        except StopIteration as done:
            return done.value


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _ready_within(fileno: int, state: int, seconds: float) -> int:
    """Readiness for `state` within `seconds` (0: not yet), read as psycopg's own
    `wait_poll` reads it (poll, not select: no limit on the descriptor's number)."""
    poller = select.poll()
    poller.register(
        fileno, (_POLL_IN if state & Wait.R else 0) | (_POLL_OUT if state & Wait.W else 0)
    )
    events = poller.poll(seconds * 1000)
    if not events:
        return 0
    event = events[0][1]
    return (Ready.R if event & ~select.POLLOUT else 0) | (Ready.W if event & ~select.POLLIN else 0)


def _ready_later(fileno: int, state: int) -> int:
    """Readiness for `state`, awaited by the loop (this greenlet switched out meanwhile)."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[int] = loop.create_future()

    def ready(how: int) -> None:
        if not future.done():
            future.set_result(how)

    if state & Wait.R:
        loop.add_reader(fileno, ready, Ready.R)
    if state & Wait.W:
        loop.add_writer(fileno, ready, Ready.W)
    try:
        return wait_for(future)
    finally:
        if state & Wait.R:
            loop.remove_reader(fileno)
        if state & Wait.W:
            loop.remove_writer(fileno)
