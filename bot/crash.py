"""Crash points for the crash-matrix tests: `crash_point(name)` kills this process (SIGKILL,
as `kill -9` would) when MIRROR_CRASH_AT names that point.

The variable is read once, at import; unset — as in every normal run — a crash point is a
comparison with None and nothing else. Points, in the order of a turn: after-record,
during-model, after-store, during-send (after the first part reached the platform),
after-send (the platform took it, the outbox row is not yet marked sent). The scheduler's:
during-due-queue (due promises claimed and their rows queued, not yet committed).
"""

from __future__ import annotations

import os
import signal

_AT = os.environ.get("MIRROR_CRASH_AT") or None


def crash_point(name: str) -> None:
    if _AT is not None and _AT == name:
        os.kill(os.getpid(), signal.SIGKILL)
