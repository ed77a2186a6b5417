"""What `bot/` knows about the Discord entrance, without importing discord.py."""

from __future__ import annotations

from pydantic import Field

from adapters.discord.splitting import MESSAGE_LIMIT, split_for_discord
from bot.entrance import EntranceSettings, Manifest


class DiscordSettings(EntranceSettings):
    """`[entrances.discord]`; the token comes from MIRROR_DISCORD_TOKEN."""

    api_base: str = "https://discord.com/api/v10"
    gateway_url: str = "wss://gateway.discord.gg"
    channels: list[str] = Field(default_factory=list)  # answered without a mention


MANIFEST = Manifest(
    name="discord",
    label="Discord",
    runtime=f"{__package__}.runtime:DiscordEntrance",
    settings=DiscordSettings,
    secret_env="MIRROR_DISCORD_TOKEN",
    message_limit=MESSAGE_LIMIT,
    split=split_for_discord,
    capabilities=frozenset({"buttons", "edits", "typing", "command_menu"}),
)
