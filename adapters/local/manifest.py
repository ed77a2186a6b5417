"""What `bot/` knows about the local entrance: the terminal, with no secret and no limit."""

from __future__ import annotations

from bot.entrance import EntranceSettings, Manifest


class LocalSettings(EntranceSettings):
    """`[entrances.local]`: on unless turned off (it needs nothing)."""

    enabled: bool = True


MANIFEST = Manifest(
    name="local",
    label="terminal",
    aliases=("terminal",),
    runtime=f"{__package__}.runtime:LocalChat",
    settings=LocalSettings,
    # Any number of terminals may chat at once: each is its own conversation.
    exclusive=False,
    terminal=True,
)
