"""The web entrance's runtime: the persona answering in the console's chat page.

Hosted by the console process (`bot.console`), not run as a process of its own: the page
already has signed-in users, a server and the change feed, and a second web server for one
chat would need its own login. It is a full `bot.instance.Instance` with its own instance
id ("web"), its own conversations (one private chat per console user, `web:NAME`), the
same turn and guard as every entrance, its own lease and outbox courier. Outbox rows for a
web conversation (a reminder falling due, a coordinator's decision told to the person) are
kept for the page to show as notices.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from collections.abc import Mapping, Sequence
from typing import Any

from adapters.web.manifest import MANIFEST
from bot.config import Config
from bot.entrance import EntranceFailure
from bot.instance import Instance
from bot.models import Author, Incoming, Reply
from bot.outbox import Button

log = logging.getLogger(__name__)

ENTRANCE = MANIFEST.name
NOTICES_KEPT = 50


class WebChat:
    def __init__(self, config: Config, secret: str = "", *, instance_id: str = ENTRANCE) -> None:
        self.instance = Instance(
            config, instance_id=instance_id, entrance=ENTRANCE, send=self._deliver
        )
        self.notices: dict[str, deque[str]] = defaultdict(lambda: deque(maxlen=NOTICES_KEPT))

    @property
    def instance_id(self) -> str:
        return self.instance.instance_id

    async def run(self) -> None:
        raise EntranceFailure("the web entrance runs inside the console: use `mirror console`")

    def request_stop(self) -> None:
        """Nothing to do: the console stops it with `stop()`."""

    async def start(self) -> None:
        await self.instance.start()
        self.instance.deliver_outbox()

    async def stop(self) -> None:
        await self.instance.stop()

    def conversation_of(self, person: str) -> str:
        return f"{self.instance_id}:{person}"

    async def say(self, person: str, text: str) -> Reply | None:
        """A message `person` (a console user) typed in the chat page; the persona's reply,
        stored in memory like any turn (the page shows the conversation from memory)."""
        incoming = Incoming(
            entrance=ENTRANCE,
            conversation_id=self.conversation_of(person),
            conversation_kind="dm",
            author=Author(external_id=person, display_name=person),
            text=text,
        )
        return await self.instance.handle(incoming, deliver=False)

    async def _deliver(
        self,
        target: str,
        text: str,
        *,
        reply_to: str | None = None,
        buttons: Sequence[Button] = (),
        key: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> str | None:
        """An outbox row for a web conversation: kept for its page to show."""
        self.notices[target].append(text)
        return None  # a page has no message ids of its own
