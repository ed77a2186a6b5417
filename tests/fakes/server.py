"""What every fake server of the suite shares: starting and stopping, the port, the URL.

:class:`Served` makes anything with ``start()`` / ``stop()`` an async context manager (the mail
servers use it). :class:`FakeServer` is the base of the aiohttp fakes (Telegram, Discord, the
OpenAI-compatible model API): it binds ``127.0.0.1`` on a free port (or the one given), serves
the application the subclass builds in :meth:`FakeServer.make_app`, lets the fake wake its
waiters when its state changes (:meth:`FakeServer._notify` / :meth:`FakeServer._wait`), and
runs it as its own process for ``python -m tests.fakes.<fake>``. It never holds protocol
behaviour: what a fake answers stays in the fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Callable
from typing import Self, TypeVar

from aiohttp import web

T = TypeVar("T")

LOCALHOST = "127.0.0.1"


def free_port(host: str = LOCALHOST) -> int:
    """A TCP port on ``host`` that nothing listens on right now (for servers that must be
    told a port number rather than handed a bound socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class Served:
    """``async with server:`` starts it and stops it on the way out."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


class FakeServer(Served):
    """An aiohttp application served on ``host``; subclasses build it in :meth:`make_app`.

    Use ``await start()`` / ``await stop()`` or ``async with Fake(...) as fake:``. A server
    stopped and started again serves on the same port. All state lives on the instance and is
    only touched from the event loop that serves it.
    """

    def __init__(self, *, host: str = LOCALHOST, port: int = 0) -> None:
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    def make_app(self) -> web.Application:
        """The application to serve, with its routes (called by each :meth:`start`)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Bind ``host`` (a free port unless one was given) and start serving."""
        if self._runner is not None:
            raise RuntimeError(f"{type(self).__name__} already started")
        app = self.make_app()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self._port))
        except OSError:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def stop(self) -> None:
        """Shut the server down. Safe to call twice, or before :meth:`start`."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    @property
    def running(self) -> bool:
        return self._runner is not None

    @property
    def port(self) -> int:
        """The port served on (the free one picked, once started)."""
        return self._port

    @property
    def url(self) -> str:
        """Root URL of the server, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self._port}"

    # ------------------------------------------------------------------ waiting on changes

    def _notify(self) -> None:
        """Wake every waiter; each re-checks its condition and waits on the next change."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait(self, check: Callable[[], T | None], seconds: float) -> T | None:
        """Return ``check()`` once it is not None (re-checked on every :meth:`_notify`), or
        None after ``seconds``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            result = check()
            if result is not None:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                return None
            changed = self._changed  # captured before awaiting: no lost wake-ups
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), remaining)

    # ------------------------------------------------------------------ as its own process

    async def serve_until_signalled(self, path: str = "") -> None:
        """Serve until SIGTERM or SIGINT; once serving, print ``READY <url><path>`` (the line
        a test starting the fake as a process waits for)."""
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print(f"READY {self.url}{path}", flush=True)
        try:
            await stop.wait()
        finally:
            await self.stop()
