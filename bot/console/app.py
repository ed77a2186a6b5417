"""The console's Starlette app: its pages (bot/console/pages), static files, and what it
runs beside them in the same process (the change watcher, the web entrance).

`create_app(config)` builds it; its lifespan opens memory.db, starts the change feed and
the hosted entrances (manifests with `hosted=True`, e.g. adapters/web: the persona's chat
page, a full `bot.instance.Instance` of its own), and stops them on shutdown.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from bot.config import Config
from bot.console.auth import secure_cookies
from bot.console.layout import Console, NavItem
from bot.console.pages import PAGES
from bot.entrance import EntranceFailure

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"


def page_modules() -> list[Any]:
    return [importlib.import_module(f"bot.console.pages.{name}") for name in PAGES]


def hosted_entrances(config: Config) -> list[Any]:
    """The runtimes of the enabled entrances the console hosts (web chat)."""
    from bot.entrance import manifests, runtime_class

    found = []
    for manifest in manifests().values():
        if manifest.hosted and config.entrance(manifest.name).enabled:
            found.append(runtime_class(manifest.name)(config, ""))
    return found


def create_app(config: Config, *, host_entrances: bool = True) -> Starlette:
    from bot.commands import Commands
    from bot.console.live import ChangeFeed
    from bot.memory import Memory

    modules = page_modules()
    routes: list[BaseRoute] = []
    nav: list[NavItem] = []
    for module in modules:
        routes.extend(module.ROUTES)
        if getattr(module, "NAV", None) is not None:
            nav.append(module.NAV)
    nav.sort(key=lambda item: item.order)
    routes.append(Mount("/static", app=StaticFiles(directory=STATIC), name="static"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        memory = Memory(config.memory.path, busy_timeout_ms=config.memory.busy_timeout_ms)
        await memory.open()
        feed = ChangeFeed(memory)
        await feed.start()
        hosted = hosted_entrances(config) if host_entrances else []
        started = []
        problems = []
        try:
            for entrance in hosted:
                try:
                    await entrance.start()
                except EntranceFailure as exc:
                    # Another console holds it (its lease): this one serves the pages only.
                    log.warning("the console's chat is not available here: %s", exc)
                    problems.append(str(exc))
                    continue
                started.append(entrance)
            app.state.console = Console(
                config=config,
                memory=memory,
                commands=Commands(memory, config),
                feed=feed,
                secure_cookies=secure_cookies(config),
                nav=nav,
                web_chat=started[0] if started else None,
                chat_problem=problems[0] if problems else None,
            )
            yield
        finally:
            await feed.stop()
            for entrance in reversed(started):
                with contextlib.suppress(Exception):
                    await entrance.stop()
            await memory.close()

    return Starlette(routes=routes, lifespan=lifespan)
