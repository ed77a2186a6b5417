"""`make bench`: every benchmark, then one table of figures and goals on stdout.

python -m bench                 all of them (prefilled memories are built on first use)
python -m bench NAME [NAME ...] only these: prefill, turn, processes, awareness,
                                scheduler, startup, soul_watcher, due, lean,
                                console, recall, pg (SQLite and PostgreSQL side by side)

Progress goes to stderr; the table (figure, value, goal, met?) to stdout. Figures are
wall-clock on this machine: the table's first rows say how busy it was.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable

from bench import (
    awareness,
    console,
    due,
    lean,
    pg,
    prefill,
    processes,
    recall,
    scheduler,
    soul_watcher,
    startup,
    turn,
)
from bench.common import Figure, cpu_reference_ms, load_average, print_figures, progress


def prefill_figures() -> list[Figure]:
    spent = asyncio.run(prefill.ensure(prefill.SIZES))
    sizes = ", ".join(f"{size:,}" for size in prefill.SIZES)
    value = f"built in {spent:.0f} s" if spent else "cached"
    rows = [Figure(f"prefilled memories ({sizes} messages)", value)]
    build = prefill.last_build_seconds()
    if build is not None:
        rows.append(Figure("prefill: last full build to 1M messages", f"{build:.0f} s", "", None))
    return rows


BENCHMARKS: dict[str, Callable[[], list[Figure]]] = {
    "prefill": prefill_figures,
    "turn": lambda: asyncio.run(turn.run()),
    "processes": processes.run,
    "awareness": awareness.run,
    "scheduler": lambda: asyncio.run(scheduler.run()),
    "startup": startup.run,
    "soul_watcher": soul_watcher.run,
    "due": lambda: asyncio.run(due.run()),
    "lean": lean.run,
    "console": console.run,
    "recall": recall.run,
    "pg": pg.run,
}


def main(names: list[str]) -> int:
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; one of: {', '.join(BENCHMARKS)}")
        return 2
    logging.basicConfig(level=logging.WARNING)
    started = time.perf_counter()
    figures = [
        Figure("machine: cores / load average at start", f"{os.cpu_count()} / {load_average()}"),
        Figure("machine: CPU reference (3M-step Python loop)", f"{cpu_reference_ms():.0f} ms"),
    ]
    for name in names or list(BENCHMARKS):
        progress(f"{name} ...")
        figures += BENCHMARKS[name]()
    figures.append(Figure("machine: load average at the end", load_average()))
    figures.append(Figure("machine: CPU reference at the end", f"{cpu_reference_ms():.0f} ms"))
    figures.append(Figure("bench: wall time", f"{time.perf_counter() - started:.0f} s"))
    print_figures(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
