"""What a command did, as data: `Outcome`.

Handlers (chat commands, buttons, the CLI, later the console) return an `Outcome`; the
sentence in it is already rendered for the one who asked, and `status` says what happened,
so no caller ever parses a sentence to learn whether it worked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "refused", "invalid"]


@dataclass(frozen=True)
class Outcome:
    """`text`: what to say; `status`: ok | refused (not allowed) | invalid (bad input or a
    state that does not permit it); `changed`: memory changed."""

    text: str
    status: Status = "ok"
    changed: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def refused(text: str) -> Outcome:
    return Outcome(text, "refused")


def invalid(text: str) -> Outcome:
    return Outcome(text, "invalid")
