"""The Discord entrance: the persona in Discord servers and DMs.

`manifest` tells `bot/` about it (settings, token, limits); `splitting` and `reading` hold
Discord's pure text rules; only `runtime` imports discord.py, so importing this package or
its manifest never loads the SDK.
"""

from adapters.discord.reading import text_for_persona
from adapters.discord.splitting import MESSAGE_LIMIT, is_fence_line, split_for_discord

__all__ = ["MESSAGE_LIMIT", "is_fence_line", "split_for_discord", "text_for_persona"]
