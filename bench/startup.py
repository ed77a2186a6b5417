"""Start-up: `mirror status`, an entrance process until ready, an idle instance's footprint.

On a copy of the 100k prefilled memory, with the `mirror` console script users run:
- `mirror status`: wall time of RUNS runs (median and max; goal <= 0.3 s), and whether
  it imports litellm (`python -X importtime`; goal: no);
- `mirror status` against `python -c "import pydantic, typer"` (the same venv and
  environment), run in turn RATIO_RUNS times each: both medians and the median of the
  pairs' ratios (goal <= 2x, issue 18); once with the config already checked (the usual
  case: bot/cli/checked.py remembers a config that passed validation), once with that
  cache emptied before each run (the first status after the config or the code changed);
- `mirror chat --jsonl` (the local entrance, a full instance: memory, guard, soul watcher,
  outbox poller, heartbeat): wall time from spawn to its `ready` line (median of RUNS;
  goal <= 3 s), then to the reply to a first message: from spawn to that first reply on
  the offline brain (goal <= 0.5 s; litellm is never imported for it);
- that instance 1 s after its reply (the encoder's weights still mapped), then once idle
  (IDLE_SECONDS later: it has given the weights' pages back, `[recall] release_after_s`):
  resident memory (VmRSS; goal <= 100 MiB) and CPU over IDLE_SECONDS.

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
from bench.lean import pss_mib

SIZE = 100_000
RUNS = 5
RATIO_RUNS = 15
STATUS_RATIO_GOAL = 2.0
YARDSTICK = [sys.executable, "-c", "import pydantic, typer"]
# Idle: the reply's writes settled (1 s), then this long; longer than the default
# `[recall] release_after_s` (5 s), after which an idle process gives the encoder's weight
# pages back (the figure 1 s after the reply still holds them).
IDLE_SECONDS = 5.0
STATUS_GOAL_S = 0.3
READY_GOAL_S = 3.0
FIRST_REPLY_GOAL_S = 0.5
IDLE_RSS_GOAL_MIB = 100.0


def time_status(config: Path, env: dict[str, str]) -> list[float]:
    walls = []
    for _ in range(RUNS):
        started = time.perf_counter()
        subprocess.run(
            [*mirror_command(), "status", "--config", str(config)],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        walls.append(time.perf_counter() - started)
    return walls


def _wall(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def status_ratio(
    config: Path, env: dict[str, str], *, forget: Path | None = None
) -> tuple[float, float, float]:
    """`mirror status` and the yardstick (`python -c "import pydantic, typer"`) in turn,
    RATIO_RUNS times each: (status median, yardstick median, median of the pairs' ratios).
    `forget`: a folder deleted before each status run (the cache of checked configs)."""
    status, yardstick, ratios = [], [], []
    for _ in range(RATIO_RUNS):
        if forget is not None:
            shutil.rmtree(forget, ignore_errors=True)
        status.append(_wall([*mirror_command(), "status", "--config", str(config)], env))
        yardstick.append(_wall(YARDSTICK, env))
        ratios.append(status[-1] / yardstick[-1])
    return statistics.median(status), statistics.median(yardstick), statistics.median(ratios)


def status_imports(config: Path, env: dict[str, str]) -> tuple[bool, list[tuple[str, float]]]:
    """Does `mirror status` import litellm? And its costliest top-level imports (ms), on
    a second run (the first checks the config under `python -m`'s own sys.path)."""
    for _ in range(2):
        done = subprocess.run(
            [
                *(sys.executable, "-X", "importtime", "-m", "bot.cli"),
                *("status", "--config", str(config)),
            ],
            cwd=ROOT,
            env=env,
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
    env = child_env(XDG_CACHE_HOME=str(folder / "cache"))  # checked configs: this run's own
    try:
        progress(f"startup: mirror status x{RUNS + 4 * RATIO_RUNS}, mirror chat x{RUNS}")
        subprocess.run(  # the first run checks the config and warms the OS caches
            [*mirror_command(), "status", "--config", str(config)],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        status = time_status(config, env)
        checked = status_ratio(config, env)
        unchecked = status_ratio(
            config, env, forget=folder / "cache" / "mirroros" / "checked-configs"
        )
        litellm, heaviest = status_imports(config, env)
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
            busy_rss = rss_mib(proc.pid)  # the encoder's pages still mapped
            before, idle_started = cpu_seconds(proc.pid), time.perf_counter()
            time.sleep(IDLE_SECONDS)
            idle = (cpu_seconds(proc.pid) - before) / (time.perf_counter() - idle_started)
            rss = rss_mib(proc.pid)
            pss = pss_mib(proc.pid)  # its share of pages shared with other processes
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
        Figure(
            f"mirror status / python -c 'import pydantic, typer': median of {RATIO_RUNS} pairs",
            f"{checked[2]:.2f}x",
            f"<= {STATUS_RATIO_GOAL:.0f}x",
            checked[2] <= STATUS_RATIO_GOAL,
        ),
        Figure(
            "  its medians: mirror status / import pydantic, typer",
            f"{checked[0]:.3f} / {checked[1]:.3f} s",
        ),
        Figure(
            "  first status after a config or code change (config validated): ratio",
            f"{unchecked[2]:.2f}x",
        ),
        Figure(
            "  its medians: mirror status / import pydantic, typer",
            f"{unchecked[0]:.3f} / {unchecked[1]:.3f} s",
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
            "instance process 1 s after its reply: resident memory (RSS)", f"{busy_rss:.0f} MiB"
        ),
        Figure(
            f"idle instance process ({IDLE_SECONDS + 1:.0f} s after): resident memory (RSS)",
            f"{rss:.0f} MiB",
            f"<= {IDLE_RSS_GOAL_MIB:.0f} MiB",
            rss <= IDLE_RSS_GOAL_MIB,
        ),
        Figure("idle instance process: proportional memory (PSS)", f"{pss:.0f} MiB"),
        Figure(f"idle instance process: CPU over {IDLE_SECONDS:.0f} s", f"{idle * 100:.2f}% core"),
    ]


if __name__ == "__main__":
    print_figures(run())
