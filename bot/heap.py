"""The C heap of a long-running process (Linux/glibc only; elsewhere nothing happens).

glibc gives each thread that contends for the heap an arena of its own (up to eight per
core), and memory freed in one arena serves only that arena: a process whose memory
threads (aiosqlite's, psycopg's), encoder thread and event loop all allocate keeps the
high-water mark of each. Two arenas serve our few threads as fast (they rarely allocate
at once) and keep less: measured in bench/lean (`mirror up`, 10k memory, 300 messages),
the host's recall 147 -> 142 MiB resident, each entrance about 1 MiB less.

And the pages of a shared library that only its loading needed (`drop_library_pages`):
onnxruntime's static initialisers leave 18 MiB of its code resident, of which an encoder
runs 8-10.
"""

from __future__ import annotations

import re
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


_MADV_DONTNEED = 4  # linux/mman.h
_RANGE = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S{4}) \S+ \S+ \S+\s*(.*)$")


def drop_library_pages(name: str) -> int:
    """Drop from this process the resident pages of the shared libraries whose path
    contains `name`, where they are the file's own (read-only, never copied: no private
    change is lost); code that runs again comes back from the page cache at its next use.
    The bytes dropped (0 where this cannot be done: not Linux, not glibc).

    For a library whose load touches far more code than it will ever run again:
    onnxruntime's static initialisers register every kernel it has (bot/embedding_onnx.py).
    """
    libc = glibc()
    if libc is None:
        return 0
    import ctypes

    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    dropped = 0
    for start, end, resident in _clean_mappings(name):
        if libc.madvise(start, end - start, _MADV_DONTNEED) == 0:
            dropped += resident
    return dropped


def _clean_mappings(name: str) -> list[tuple[int, int, int]]:
    """(start, end, resident bytes) of the read-only mappings of files whose path contains
    `name` that hold no page of their own (no copy-on-write page: `Anonymous: 0 kB`)."""
    found: list[tuple[int, int, int]] = []
    mapping: tuple[int, int] | None = None
    resident = 0
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            head = _RANGE.match(line)
            if head is not None:
                start, end, perms, path = head.groups()
                wanted = "w" not in perms and name in path and path.startswith("/")
                mapping = (int(start, 16), int(end, 16)) if wanted else None
            elif mapping is not None and line.startswith("Rss:"):
                resident = int(line.split()[1]) * 1024
            elif mapping is not None and line.startswith("Anonymous:"):
                if int(line.split()[1]) == 0 and resident:
                    found.append((*mapping, resident))
                mapping = None
    return found
