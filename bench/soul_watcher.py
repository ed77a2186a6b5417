"""The soul watcher's CPU cost while nothing changes, and while its folders are noisy.

Each case runs in a child process of its own for IDLE_SECONDS and reports the CPU time
(all threads, /proc) it used, as a share of one core:
- baseline: an open memory.db and an idle event loop, no watcher;
- idle: the same plus a `SoulWatcher` (default periodic look) on an unchanging SOUL.md;
- noisy: the same while another process writes a file beside the soul folder every 20 ms
  (as memory.db's WAL may be: that folder must not be watched, its noise would cost ~1 %).
Goal: the watcher (idle minus baseline) well under 1 % of a core.

python -m bench.soul_watcher [SECONDS]    (default: 30)
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import SOUL, Figure, emit, print_figures, progress, read_json_line, spawn_python

IDLE_SECONDS = 30.0
GOAL_PERCENT = 1.0


async def _child(mode: str, folder: Path, seconds: float) -> None:
    from bot.memory import Memory
    from bot.soul import SoulWatcher

    memory = Memory(folder / "memory.db")
    await memory.open()
    watcher = SoulWatcher(memory, folder / "soul" / "SOUL.md") if mode != "baseline" else None
    if watcher is not None:
        await watcher.start()
        await watcher.ready.wait()
    started_cpu, started = time.process_time(), time.perf_counter()
    await asyncio.sleep(seconds)  # the point: measure what an idle process spends
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    if watcher is not None:
        await watcher.stop()
    await memory.close()
    emit({"mode": mode, "cpu_s": cpu, "wall_s": wall})


def _noise(folder: Path) -> subprocess.Popen[bytes]:
    """Writes a sibling of the soul folder every 20 ms until killed."""
    code = (
        "import pathlib, sys, time\n"
        "path = pathlib.Path(sys.argv[1])\n"
        "while True:\n    path.write_text(str(time.time()))\n    time.sleep(0.02)\n"
    )
    return subprocess.Popen([sys.executable, "-c", code, str(folder / "noise.txt")])


def measure(mode: str, seconds: float) -> float:
    """Percent of one core the child used over `seconds`."""
    with tempfile.TemporaryDirectory(prefix="bench-soul-") as name:
        folder = Path(name)
        (folder / "soul").mkdir()
        shutil.copy(SOUL, folder / "soul" / "SOUL.md")
        noise = _noise(folder) if mode == "noisy" else None
        try:
            child = spawn_python(
                "-m", "bench.soul_watcher", "--child", mode, str(folder), str(seconds)
            )
            result = read_json_line(child)
            child.wait(timeout=30)
        finally:
            if noise is not None:
                noise.kill()
                noise.wait()
    return 100 * float(result["cpu_s"]) / float(result["wall_s"])  # type: ignore[arg-type]


def run(seconds: float = IDLE_SECONDS) -> list[Figure]:
    percents = {}
    for mode in ("baseline", "idle", "noisy"):
        progress(f"soul watcher: {mode}, {seconds:.0f} s")
        percents[mode] = measure(mode, seconds)
    idle = percents["idle"] - percents["baseline"]
    noisy = percents["noisy"] - percents["baseline"]
    return [
        Figure("soul watcher: idle process without it", f"{percents['baseline']:.3f} % core"),
        Figure(
            "soul watcher: its cost, idle",
            f"{idle:.3f} % core",
            f"< {GOAL_PERCENT} %",
            idle < GOAL_PERCENT,
        ),
        Figure(
            "soul watcher: its cost, sibling written / 20 ms",
            f"{noisy:.3f} % core",
            f"< {GOAL_PERCENT} %",
            noisy < GOAL_PERCENT,
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(_child(sys.argv[2], Path(sys.argv[3]), float(sys.argv[4])))
    else:
        print_figures(run(float(sys.argv[1]) if len(sys.argv) > 1 else IDLE_SECONDS))
