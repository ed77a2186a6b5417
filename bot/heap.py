"""The C heap of a long-running process (Linux/glibc only; elsewhere nothing happens).

glibc gives each thread that contends for the heap an arena of its own (up to eight per
core), and memory freed in one arena serves only that arena: a process whose memory
threads (aiosqlite's, psycopg's), encoder thread and event loop all allocate keeps the
high-water mark of each. Two arenas serve our few threads as fast (they rarely allocate
at once) and keep less: measured in bench/lean (`mirror up`, 10k memory, 300 messages),
the host's recall 147 -> 142 MiB resident, each entrance about 1 MiB less.
"""

from __future__ import annotations

import sys
from typing import Any

_M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)
ARENAS = 2


def glibc() -> Any:
    """The C library this process runs on, when it is glibc (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> None:
    """At most `arenas` heap arenas for this process: call it before threads start."""
    libc = glibc()
    if libc is not None:
        libc.mallopt(_M_ARENA_MAX, arenas)
