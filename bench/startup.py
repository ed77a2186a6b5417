"""Start-up: `mirror status`, an entrance process until ready, an idle instance's footprint.

On a copy of the 100k prefilled memory, with the `mirror` console script users run:
- `mirror status`: wall time of RUNS runs (median and max; goal <= 0.3 s), and whether
  it imports litellm (`python -X importtime`; goal: no);
- `mirror chat --jsonl` (the local entrance, a full instance: memory, guard, soul watcher,
  outbox poller, heartbeat): wall time from spawn to its `ready` line (median of RUNS;
  goal <= 3 s), then to the reply to a first message: from spawn to that first reply on
  the offline brain (goal <= 0.5 s; litellm is never imported for it);
- that instance once idle: resident memory (VmRSS; goal <= 100 MiB) and CPU over
  IDLE_SECONDS.

python -m bench.startup
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import prefill
from bench.common import (
    ROOT,
    VAR,
    Figure,
    child_env,
    cpu_seconds,
    mirror_command,
    print_figures,
    progress,
    rss_mib,
    run_dir,
    write_config,
)

SIZE = 100_000
RUNS = 5
IDLE_SECONDS = 5.0
STATUS_GOAL_S = 0.3
READY_GOAL_S = 3.0
FIRST_REPLY_GOAL_S = 0.5
IDLE_RSS_GOAL_MIB = 100.0


def time_status(config: Path) -> list[float]:
    walls = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(
            [*mirror_command(), "status", "--config", str(config)],
            cwd=ROOT,
            env=child_env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        walls.append(time.perf_counter() - started)
    return walls


def status_imports(config: Path) -> tuple[bool, list[tuple[str, float]]]:
    """Does `mirror status` import litellm? And its costliest top-level imports (ms)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bot.cli", "status", "--config", str(config)],
        cwd=ROOT,
        env=child_env(),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    top = []
    litellm = False
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = line.split("|")
        litellm |= name.strip().split(".")[0] == "litellm"
        if not name.startswith("  ") and cumulative.strip().isdigit():
            top.append((name.strip(), int(cumulative) / 1000))
    return litellm, sorted(top, key=lambda item: -item[1])[:4]


def start_chat(config: Path, n: int) -> tuple[subprocess.Popen[str], float]:
    """A `mirror chat --jsonl` process and the seconds until it said it is ready."""
    command = [*mirror_command(), "chat", "--jsonl", "--config", str(config)]
    log = (config.parent / f"chat-{n}.log").open("w")  # its INFO lines, read on failure
    started = time.perf_counter()
    proc = subprocess.Popen(
        [*command, "--instance", f"bench-chat-{n}", "--as", "bench-person"],
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        bufsize=1,
    )
    log.close()
    wait_for(proc, '"type": "ready"')
    return proc, time.perf_counter() - started


def wait_for(proc: subprocess.Popen[str], marker: str) -> str:
    assert proc.stdout is not None
    for line in proc.stdout:
        if marker in line:
            return line
    logs = "".join(p.read_text()[-2000:] for p in (VAR / "run" / "startup").glob("chat-*.log"))
    raise RuntimeError(f"mirror chat exited (code {proc.wait()}) before {marker}:\n{logs}")


def stop_chat(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()  # EOF: the chat ends cleanly
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def run() -> list[Figure]:
    asyncio.run(prefill.ensure([SIZE]))
    folder = run_dir("startup")
    config = write_config(folder, prefill.working_copy(SIZE, folder))
    try:
        progress(f"startup: mirror status x{RUNS}, mirror chat x{RUNS}")
        subprocess.run(  # the first run migrates nothing but warms the OS caches
            [*mirror_command(), "status", "--config", str(config)],
            cwd=ROOT,
            env=child_env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        status = time_status(config)
        litellm, heaviest = status_imports(config)
        ready = []
        for n in range(RUNS - 1):
            proc, took = start_chat(config, n)
            ready.append(took)
            stop_chat(proc)
        proc, took = start_chat(config, RUNS)
        ready.append(took)
        try:
            assert proc.stdin is not None
            started = time.perf_counter()
            proc.stdin.write("hello, are you there?\n")
            proc.stdin.flush()
            wait_for(proc, '"type": "reply"')
            first_reply = time.perf_counter() - started
            time.sleep(1.0)  # the turn's writes settle
            before, idle_started = cpu_seconds(proc.pid), time.perf_counter()
            time.sleep(IDLE_SECONDS)
            idle = (cpu_seconds(proc.pid) - before) / (time.perf_counter() - idle_started)
            rss = rss_mib(proc.pid)
        finally:
            stop_chat(proc)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    status_median = statistics.median(status)
    ready_median = statistics.median(ready)
    return [
        Figure(
            f"mirror status: wall, median of {RUNS} (max {max(status):.2f} s)",
            f"{status_median:.2f} s",
            f"<= {STATUS_GOAL_S} s",
            status_median <= STATUS_GOAL_S,
        ),
        Figure("mirror status: imports litellm", "yes" if litellm else "no", "no", not litellm),
        Figure(
            "mirror status: heaviest imports (cumulative ms)",
            ", ".join(f"{name} {ms:.0f}" for name, ms in heaviest[:3]),
        ),
        Figure(
            f"entrance (mirror chat) ready: median of {RUNS} (max {max(ready):.2f} s)",
            f"{ready_median:.2f} s",
            f"<= {READY_GOAL_S:.0f} s",
            ready_median <= READY_GOAL_S,
        ),
        Figure("entrance: ready -> first reply (offline brain)", f"{first_reply:.2f} s"),
        Figure(
            "mirror chat: spawn -> first reply (offline brain)",
            f"{took + first_reply:.2f} s",
            f"<= {FIRST_REPLY_GOAL_S} s",
            took + first_reply <= FIRST_REPLY_GOAL_S,
        ),
        Figure(
            "idle instance process: resident memory (RSS)",
            f"{rss:.0f} MiB",
            f"<= {IDLE_RSS_GOAL_MIB:.0f} MiB",
            rss <= IDLE_RSS_GOAL_MIB,
        ),
        Figure(f"idle instance process: CPU over {IDLE_SECONDS:.0f} s", f"{idle * 100:.2f}% core"),
    ]


if __name__ == "__main__":
    print_figures(run())
