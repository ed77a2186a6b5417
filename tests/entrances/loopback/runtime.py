"""The loopback runtime: `Incoming` put on `inbox` is answered into `said`, in order."""

from __future__ import annotations

import asyncio

from bot.config import Config
from bot.instance import Instance
from bot.models import Incoming
from tests.entrances.loopback.manifest import MANIFEST


class LoopbackEntrance:
    def __init__(self, config: Config, secret: str) -> None:
        self.settings = MANIFEST.settings_of(config)
        self.secret = secret
        self.instance = Instance(config, instance_id=MANIFEST.name, entrance=MANIFEST.name)
        self.inbox: asyncio.Queue[Incoming | None] = asyncio.Queue()
        self.said: list[str] = []

    async def run(self) -> None:
        await self.instance.start()
        try:
            while (incoming := await self.inbox.get()) is not None:
                reply = await self.instance.handle(incoming)
                if reply is not None:
                    self.said.extend(MANIFEST.chunks(reply.text))
        finally:
            await self.instance.stop()

    def request_stop(self) -> None:
        self.inbox.put_nowait(None)
