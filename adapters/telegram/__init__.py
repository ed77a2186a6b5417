"""The Telegram entrance: the persona in Telegram private chats and groups.

`manifest` tells `bot/` about it (settings, token, limits) and `splitting` holds Telegram's
pure text rules; only `runtime` imports python-telegram-bot, so importing this package or
its manifest never loads the SDK.
"""

from adapters.telegram.splitting import (
    MESSAGE_LIMIT,
    platform_id,
    split_for_telegram,
    telegram_length,
)

__all__ = ["MESSAGE_LIMIT", "platform_id", "split_for_telegram", "telegram_length"]
