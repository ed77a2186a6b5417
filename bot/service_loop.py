"""Run one long-lived `mirror` process (an entrance, the scheduler, the console, the
supervisor of `mirror up`) until it ends or a signal asks it to stop.

Free of typer and pydantic, so that `mirror up`'s lean supervisor (bot/supervisor.py
`main`) runs with the same signal handling as every other process.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Protocol


class Service(Protocol):
    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


async def serve_until_stopped(service: Service) -> None:
    """`service.run()` until it returns. A stop request (SIGINT, SIGTERM, SIGHUP) lets the
    current turn finish; a second SIGINT/SIGTERM cancels at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    requested = False

    def on_signal() -> None:
        nonlocal requested
        if requested and task is not None:
            task.cancel()
        requested = True
        service.request_stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    # Closing the terminal (SIGHUP) stops like a first SIGTERM: the turn finishes, children
    # and leases are let go. It never hurries the stop: a supervised child gets it once per
    # reparenting after its supervisor died (bot/supervisor.py). Under nohup, SIGHUP stays
    # ignored.
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        loop.add_signal_handler(signal.SIGHUP, service.request_stop)
    try:
        await service.run()
    except asyncio.CancelledError:
        if not requested:
            raise
