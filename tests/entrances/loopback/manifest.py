"""What `bot/` knows about the loopback entrance."""

from __future__ import annotations

from bot.entrance import EntranceSettings, Manifest

MESSAGE_LIMIT = 50


class LoopbackSettings(EntranceSettings):
    """`[entrances.loopback]`."""

    greeting: str = "hello"


def split_for_loopback(text: str, limit: int) -> list[str]:
    """Cut every `limit` characters: the simplest splitter that honours a limit."""
    text = text.strip()
    return [text[start : start + limit] for start in range(0, len(text), limit)]


MANIFEST = Manifest(
    name="loopback",
    label="Loopback",
    aliases=("loop",),
    runtime=f"{__package__}.runtime:LoopbackEntrance",
    settings=LoopbackSettings,
    secret_env="MIRROR_LOOPBACK_SECRET",
    message_limit=MESSAGE_LIMIT,
    split=split_for_loopback,
    capabilities=frozenset({"typing"}),
    exclusive=False,
)
