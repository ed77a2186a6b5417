"""The contract every entrance (adapter) follows, and how `mirror run NAME` finds it.

An entrance module exposes a class built as `Entrance(config, secret)` with:
  async run()       start its `bot.instance.Instance`, connect to the platform, turn events
                    into `Incoming`, send `Instance.handle` replies split to the platform's
                    limits, deliver outbox rows (`Instance.deliver_outbox`), and return
                    after request_stop() once the current turn has finished;
  request_stop()    ask run() to finish (called from a signal handler).
Start-up problems the admin must fix (invalid token, refused intent) raise
`EntranceFailure` with one line: the CLI prints it and exits with code 2.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

from bot.config import Config


class EntranceFailure(Exception):
    """A problem the admin must fix; the message is one line that says what to do."""


class Entrance(Protocol):
    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


PLATFORM_ENTRANCES = {
    "telegram": "adapters.telegram:TelegramEntrance",
    "discord": "adapters.discord:DiscordEntrance",
    "email": "adapters.email:EmailEntrance",
}
# The terminal entrance (`mirror chat`, and `mirror up` with no platform configured).
LOCAL_ENTRANCE = "adapters.local:LocalChat"


def entrance_class(path: str) -> Any:
    """The class at 'module:Class', imported on first use: bot/ never imports adapters/
    at module level (adapters depend on bot, not the other way round)."""
    module_name, class_name = path.split(":")
    return getattr(importlib.import_module(module_name), class_name)


def load_entrance(name: str, config: Config, secret: str) -> Entrance:
    entrance: Entrance = entrance_class(PLATFORM_ENTRANCES[name])(config, secret)
    return entrance
