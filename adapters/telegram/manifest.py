"""What `bot/` knows about the Telegram entrance, without importing python-telegram-bot."""

from __future__ import annotations

from typing import Literal

from adapters.telegram.splitting import MESSAGE_LIMIT, split_for_telegram
from bot.entrance import EntranceSettings, Manifest


class TelegramSettings(EntranceSettings):
    """`[entrances.telegram]`; the token comes from MIRROR_TELEGRAM_TOKEN."""

    base_url: str = "https://api.telegram.org/bot"
    base_file_url: str = "https://api.telegram.org/file/bot"
    style: str = "short answers for a phone screen"
    group_reply: Literal["mention", "always"] = "mention"


MANIFEST = Manifest(
    name="telegram",
    label="Telegram",
    runtime=f"{__package__}.runtime:TelegramEntrance",
    settings=TelegramSettings,
    secret_env="MIRROR_TELEGRAM_TOKEN",
    message_limit=MESSAGE_LIMIT,
    split=split_for_telegram,
    capabilities=frozenset({"buttons", "edits", "typing", "command_menu"}),
)
