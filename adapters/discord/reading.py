"""Discord message text as the persona reads it, pure: mentions resolved, no SDK, no IO."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence


def text_for_persona(
    content: str,
    *,
    me: int,
    my_roles: Sequence[int] = (),
    names: Mapping[int, str] | None = None,
) -> str:
    """Message text as the persona reads it: its own mention removed, others as @name."""
    own = [rf"<@!?{me}>"] + [rf"<@&{role}>" for role in my_roles]
    text = re.sub(rf"(?:{'|'.join(own)})[ \t]?", "", content)
    known = names or {}
    text = re.sub(
        r"<@!?(\d+)>", lambda m: f"@{known[int(m[1])]}" if int(m[1]) in known else m[0], text
    )
    return text.strip()
