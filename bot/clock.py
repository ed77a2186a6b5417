"""The persona's clock: seconds since the epoch, as memory, turns and the scheduler see them.

`MIRROR_CLOCK_OFFSET_S` (seconds, may be negative) is added to `time.time()` so a test can
make Friday 15:00 arrive in seconds with real processes. It is read once, at import; unset
— as in every normal run — `now` is `time.time` itself and nothing else.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

OFFSET_S = float(os.environ.get("MIRROR_CLOCK_OFFSET_S") or 0)


def _shifted() -> float:
    return time.time() + OFFSET_S


now: Callable[[], float] = _shifted if OFFSET_S else time.time
