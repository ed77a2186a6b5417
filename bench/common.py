"""What every benchmark shares: paths, percentiles, result rows, child processes, /proc.

A benchmark returns a list of `Figure` rows (figure, value, goal, met?); `python -m bench`
prints them all as one table. Figures are printed, never asserted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bot.config import Config

ROOT = Path(__file__).resolve().parents[1]
VAR = ROOT / "var" / "bench"  # cached prefilled databases and per-run working copies
SOUL = ROOT / "soul" / "SOUL.md"
CLK_TCK = os.sysconf("SC_CLK_TCK")

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

# Benchmarks send far more than a person would (hundreds of turns a second): rate buckets
# big enough never to refuse, so every turn pays for the guard's checks and bucket updates
# and still reaches the model.
LIMITS_TOML = """[limits]
person_per_minute = 1000000
person_burst = 1000000
entrance_per_minute = 1000000
entrance_burst = 1000000
"""
# BENCH_RECALL=off: measure with recall by meaning switched off (`[recall] enabled =
# false`), to see what the encoder costs a process; unset: as shipped.
RECALL_OFF = os.environ.get("BENCH_RECALL", "").lower() in {"off", "0", "false", "no"}
RECALL_TOML = "\n[recall]\nenabled = false\n" if RECALL_OFF else ""
_STARTED = time.perf_counter()


def progress(line: str) -> None:
    """A progress line on stderr (the table alone goes to stdout)."""
    print(f"[bench {time.perf_counter() - _STARTED:6.1f}s] {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Figure:
    """One row of the final table; met is None when the figure has no goal."""

    name: str
    value: str
    goal: str = ""
    met: bool | None = None

    def line(self, width: int = 52, value_width: int = 16) -> str:
        met = {True: "yes", False: "NO", None: ""}[self.met]
        return f"{self.name:<{width}}  {self.value:>{value_width}}  {self.goal:<10}  {met}".rstrip()


def print_figures(figures: Sequence[Figure]) -> None:
    """The one table: figure, value, goal, met? (columns as wide as their longest cell)."""
    width = max([len("figure"), *(len(f.name) for f in figures)])
    value_width = max([len("value"), *(len(f.value) for f in figures)])
    print(f"{'figure':<{width}}  {'value':>{value_width}}  {'goal':<10}  met?")
    for figure in figures:
        print(figure.line(width, value_width))


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..1); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(len(ordered) * p) - 1))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def cpu_reference_ms() -> float:
    """This machine's speed today: a fixed pure-Python loop (about 150 ms on a quiet,
    modern core). Wall-clock figures scale with it; compare runs through it."""
    started = time.perf_counter()
    total = 0
    for i in range(3_000_000):
        total += i * i
    return (time.perf_counter() - started) * 1000


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def run_dir(name: str) -> Path:
    """A fresh working folder under var/bench/run/ (emptied first)."""
    path = VAR / "run" / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def copy_database(source: Path, target: Path) -> Path:
    """A private copy of a cached database, flushed to disk: otherwise the first checkpoint's
    fsync writes out the whole copy (half a second at 1M) in the middle of a measurement."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)
    with target.open("rb+") as copy:
        os.fsync(copy.fileno())
    return target


def write_config(folder: Path, db: Path, extra: str = LIMITS_TOML) -> Path:
    """A mirror.toml for child processes: this memory.db and a private copy of SOUL.md."""
    soul = folder / "SOUL.md"
    if not soul.exists():
        shutil.copy(SOUL, soul)
    path = folder / "mirror.toml"
    path.write_text(
        f'[memory]\npath = "{db}"\n\n[soul]\npath = "{soul}"\n\n{extra}{RECALL_TOML}',
        encoding="utf-8",
    )
    return path


def child_env(**extra: str) -> dict[str, str]:
    """The environment of benchmark children: no MIRROR_* overrides, offline litellm."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MIRROR_")}
    env.update(
        LITELLM_LOCAL_MODEL_COST_MAP="True",
        PYTHONUNBUFFERED="1",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def bench_config(db: Path) -> Config:
    """The shipped config/mirror.toml on this memory.db, with LIMITS_TOML's buckets."""
    from bot.config import load_config
    from bot.guard_config import LimitsConfig

    config = load_config(ROOT / "config" / "mirror.toml", db=db)
    limits = LimitsConfig.model_validate(tomllib.loads(LIMITS_TOML)["limits"])
    if RECALL_OFF:
        config.recall.enabled = False
    return config.model_copy(update={"limits": limits})


def spawn_python(*args: str, stdin: int | None = subprocess.PIPE) -> subprocess.Popen[str]:
    """A Python child (`-m module ...`) with stdout as a text pipe (stderr passes through)."""
    return subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=child_env(),
        stdin=stdin,
        stdout=subprocess.PIPE,
        text=True,
        bufsize=1,
    )


def mirror_command() -> list[str]:
    """The `mirror` console script users run (falls back to python -m bot.cli)."""
    script = Path(sys.executable).with_name("mirror")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def read_json_line(proc: subprocess.Popen[str]) -> dict[str, object]:
    """The next JSON line a child prints on stdout (other lines are skipped)."""
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"child {proc.args!r} exited without a result (see its stderr above)")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc/PID/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def cpu_ns(pid: int) -> int:
    """CPU time of a process's living threads in ns (/proc/PID/task/*/schedstat), exact
    where `cpu_seconds` counts whole clock ticks (10 ms: an idle process's second shows 0 or
    10 ms). A thread that ended took its time with it: for short windows of a settled
    process (the idle figures), not for a whole run."""
    total = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total += int(stat.read_text().split()[0])
        except (OSError, IndexError, ValueError):  # a thread that ended meanwhile
            continue
    return total


def context_switches(pid: int) -> int:
    """Context switches of a process so far, all its threads (voluntary and not): each is a
    wake-up, whose cost depends on the machine (`wakeup_cost_us`)."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            for line in status.read_text().splitlines():
                if "ctxt_switches:" in line:
                    total += int(line.split()[1])
        except OSError:  # a thread that ended meanwhile
            continue
    return total


def wakeup_cost_us(rounds: int = 5000) -> tuple[float, float]:
    """Wall and CPU time (µs) of one round trip between two threads over a socket pair:
    two wake-ups. On a quiet machine a few µs; where a hypervisor makes wake-ups dear, tens
    (then every thread hop and every process hop of a turn costs that much)."""
    import socket
    import threading

    ours, theirs = socket.socketpair()

    def echo() -> None:
        while data := theirs.recv(64):
            theirs.send(data)

    worker = threading.Thread(target=echo, daemon=True)
    worker.start()
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        ours.send(b"x")
        ours.recv(64)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    ours.close()
    worker.join()
    theirs.close()
    return wall / rounds * 1e6, cpu / rounds * 1e6


def rss_mib(pid: int) -> float:
    """Resident memory (VmRSS) of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def emit(result: dict[str, object]) -> None:
    """A child's result: one JSON line on stdout."""
    print(json.dumps(result), flush=True)
