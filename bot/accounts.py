"""One account on one entrance, as one value: `AccountRef`.

Config addresses ("telegram:123456"), the persona's own bot ids, the coordinator, admins
and allowlists all become an `AccountRef`, parsed once. Its `key` ("ENTRANCE:ID") is the
canonical form memory and audits use; ids of entrances that compare them case-insensitively
(mail addresses) are case-folded here, as their manifest says. Pure: no IO, cheap to import.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ENTRANCE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class AccountRef:
    """ENTRANCE:ID, canonical: build it with `of` or `parse`, never by hand."""

    entrance: str
    external_id: str

    @classmethod
    def of(cls, entrance: str, external_id: str) -> AccountRef:
        """The canonical account for a platform id (mail addresses case-folded)."""
        from bot.entrance import casefolds_ids

        name = entrance.strip().lower()
        ident = external_id.strip()
        if casefolds_ids(name):
            ident = ident.lower()
        return cls(name, ident)

    @classmethod
    def parse(cls, value: str) -> AccountRef:
        """'telegram:123' -> AccountRef; ValueError naming the form when it is not one."""
        entrance, sep, external_id = value.strip().partition(":")
        entrance = entrance.strip().lower()
        if not sep or not _ENTRANCE.match(entrance) or not external_id.strip():
            raise ValueError(f"{value!r} is not ENTRANCE:ID (for example 'telegram:123456')")
        return cls.of(entrance, external_id)

    @property
    def key(self) -> str:
        return f"{self.entrance}:{self.external_id}"

    def __str__(self) -> str:
        return self.key
