"""The console's web server: uvicorn serving `create_app`, stopped the way every `mirror`
process stops (run_service's signal handlers ask it to)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

import uvicorn

from bot.console.app import create_app

if TYPE_CHECKING:
    from bot.config import Config


class ConsoleServer:
    """The console as a service `run_service` runs: uvicorn without its own signal
    handling (run_service's handlers ask it to stop, as for every `mirror` process)."""

    def __init__(self, cfg: Config) -> None:
        class Server(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                yield

        self.app = create_app(cfg)
        self.server = Server(
            uvicorn.Config(
                self.app,
                host=cfg.console.host,
                port=cfg.console.port,
                log_level="warning",
                access_log=False,
                proxy_headers=cfg.console.behind_proxy,
                timeout_graceful_shutdown=2,
                lifespan="on",
            )
        )

    async def run(self) -> None:
        await self.server.serve()
        if not self.server.started:
            raise ConsoleFailed()

    def request_stop(self) -> None:
        self.server.should_exit = True
        console = getattr(self.app.state, "console", None)
        if console is not None:
            console.feed.end_streams()  # open pages' event streams would hold the stop


class ConsoleFailed(Exception):
    pass
