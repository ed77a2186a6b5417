"""What `bot/` knows about the web entrance: the console's chat page, no secret, no limit."""

from __future__ import annotations

from bot.entrance import EntranceSettings, Manifest


class WebSettings(EntranceSettings):
    """`[entrances.web]`: on unless turned off; it runs wherever the console runs."""

    enabled: bool = True


MANIFEST = Manifest(
    name="web",
    label="web page",
    aliases=("browser",),
    runtime=f"{__package__}.runtime:WebChat",
    settings=WebSettings,
    # One console process holds the entrance (its lease) and delivers its outbox rows.
    exclusive=True,
    hosted=True,
)
