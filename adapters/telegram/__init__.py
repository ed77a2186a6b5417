"""The Telegram entrance: the persona in Telegram private chats and groups.

`manifest` tells `bot/` about it (settings, token, limits) and `splitting` holds Telegram's
pure text rules; only `runtime` imports python-telegram-bot, so importing this package or
its manifest never loads the SDK.

The SDK's HTTP library, httpx, imports its command-line tool when rich is installed (typer
brings it along): rich, pygments and click, about 0.3 s of start-up and 5 MiB that no
MirrorOS process uses. Marking that module absent before anything imports httpx skips it
(httpx then defines a `main` that asks for `httpx[cli]`).
"""

import sys

from adapters.telegram.splitting import (
    MESSAGE_LIMIT,
    platform_id,
    split_for_telegram,
    telegram_length,
)

if "httpx" not in sys.modules:
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

__all__ = ["MESSAGE_LIMIT", "platform_id", "split_for_telegram", "telegram_length"]
