"""The console with a 1M-message memory: how long its pages and live fragments take on the
server, and how long a commit in another process takes to reach an open page's event
stream.

(a) Pages and fragments (timeline first page, coordinator queue, soul history, and the
    pages around them): the console's own Starlette app in this process, its lifespan run
    as `mirror console` runs it, requests through httpx's ASGI transport (no sockets), so
    the figure is the server's time. p50 <= 50 ms, p99 <= 200 ms.
(b) Commit -> event: a real `mirror console` process, one client reading /events over
    HTTP, and a writer process committing to memory.db at random intervals; each commit's
    latency is from the writer's clock after COMMIT to the client's on the first `changed`
    event after it (one host, one clock). p99 <= 250 ms.

python -m bench console
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import prefill
from bench.common import (
    Figure,
    child_env,
    mirror_command,
    percentile,
    progress,
    run_dir,
    spawn_python,
    write_config,
)

SIZE = 1_000_000
SOUL_VERSIONS = 25  # the history fragment lists 20, each with a diff
PAGE_GOAL_P50_MS, PAGE_GOAL_P99_MS = 50.0, 200.0
EVENT_GOAL_P99_MS = 250.0
PATHS = {
    "timeline first page (fragment)": "/mirror/timeline",
    "coordinator queue (fragment)": "/queue/items",
    "soul history (fragment)": "/soul/history",
    "mirror view (page)": "/",
    "soul editor (page)": "/soul",
    "people, telegram + discord by pairing (fragment)": "/people/list",
    "promises (fragment)": "/promises/list?tz=Europe/Lisbon",
}
LINK = re.compile(r"(http://\S+/sign-in\?token=\S+)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def console_toml(port: int) -> str:
    # Telegram and Discord let people in by pairing (as a deployment may): the people page
    # then reads each person's grant and each unlet account's closed door.
    return (
        f"[console]\nenabled = true\nport = {port}\n\n"
        '[access.telegram]\npolicy = "pairing"\n\n[access.discord]\npolicy = "pairing"\n'
    )


async def add_soul_versions(memory: object, soul_text: str, count: int) -> None:
    """Soul edits, so the history has versions and diffs to show."""
    from bot.soul import parse_soul

    text = soul_text
    for number in range(count):
        text = text.replace("## Style notes", f"## Style notes\nEdit {number}: be brief.", 1)
        soul = parse_soul(text)
        await memory.record_soul_version(  # type: ignore[attr-defined]
            text=soul.text, name=soul.name, sha256=soul.sha256, source="chat", author="bench"
        )


async def page_latencies(config_path: Path, samples: int) -> dict[str, list[float]]:
    import httpx

    from bot.config import load_config
    from bot.console.app import create_app
    from bot.console.auth import COOKIE, start_session

    config = load_config(config_path)
    app = create_app(config, host_entrances=False)
    found: dict[str, list[float]] = {}
    async with app.router.lifespan_context(app):
        console = app.state.console
        await add_soul_versions(console.memory, config.soul.path.read_text(), SOUL_VERSIONS)
        token, _ = await start_session(console.memory, config, "bench", "admin")
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", cookies={COOKIE: token}
        ) as client:
            for name, path in PATHS.items():
                times = []
                for number in range(samples + 5):
                    started = time.perf_counter()
                    answer = await client.get(path, headers={"HX-Request": "true"})
                    spent = (time.perf_counter() - started) * 1000
                    assert answer.status_code == 200, (path, answer.status_code, answer.text[:200])
                    if number >= 5:  # the first few warm the caches
                        times.append(spent)
                found[name] = times
                progress(
                    f"console: {name}: p50 {percentile(times, 0.5):.1f} ms, "
                    f"p99 {percentile(times, 0.99):.1f} ms"
                )
    return found


# (b) commit -> event ------------------------------------------------------------------


def writer(db: str, commits: int) -> None:
    """The other process: commit `commits` times at random intervals (100-250 ms), then
    print the time after each commit as JSON."""

    async def go() -> list[float]:
        from bot.memory import Memory

        done = []
        async with Memory(Path(db)) as memory:
            for number in range(commits):
                await asyncio.sleep(random.uniform(0.10, 0.25))
                await memory.audit("bench", "bench.commit", str(number))
                done.append(time.time())
        return done

    print(json.dumps({"commits": asyncio.run(go())}), flush=True)


def event_latencies(folder: Path, db: Path, commits: int) -> list[float]:
    import httpx

    config = write_config(folder, db, console_toml(free_port()))
    console = subprocess.Popen(
        [*mirror_command(), "console", "--config", str(config)],
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert console.stdout is not None
        link = None
        while link is None:
            line = console.stdout.readline()
            if not line:
                raise RuntimeError("mirror console exited before printing its link")
            found = LINK.search(line)
            link = found.group(1) if found else None
        base = link.split("/sign-in")[0]
        client = httpx.Client(timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                signed = client.get(link)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert signed.status_code in (200, 303) and client.cookies, signed.status_code
        seen: list[float] = []
        ready = threading.Event()

        def listen() -> None:
            try:
                with client.stream("GET", base + "/events", timeout=None) as stream:
                    for line in stream.iter_lines():
                        if line.startswith("event: ready"):
                            ready.set()
                        elif line.startswith("event: changed"):
                            seen.append(time.time())
            except httpx.HTTPError:  # the console stopped: the measurement is over
                pass

        threading.Thread(target=listen, daemon=True).start()
        if not ready.wait(30):
            raise RuntimeError("the event stream did not open")
        time.sleep(0.5)  # let the console's own start-up writes settle
        seen.clear()
        child = spawn_python("-m", "bench.console", "writer", str(db), str(commits))
        out, _ = child.communicate(timeout=commits * 2 + 60)
        committed: list[float] = json.loads(out.strip().splitlines()[-1])["commits"]
        time.sleep(0.5)  # the last event
        latencies = []
        for at in committed:
            later = [when for when in seen if when >= at]
            if later:
                latencies.append((min(later) - at) * 1000)
        return latencies
    finally:
        console.terminate()
        try:
            console.wait(20)
        except subprocess.TimeoutExpired:
            console.kill()


def run(samples: int = 200, commits: int = 100) -> list[Figure]:
    asyncio.run(prefill.ensure([SIZE]))
    folder = run_dir("console")
    db = prefill.working_copy(SIZE, folder)
    try:
        progress(f"console: {samples} requests per page and fragment, {SIZE:,} messages")
        config = write_config(folder, db, console_toml(free_port()))
        pages = asyncio.run(page_latencies(config, samples))
        progress(f"console: {commits} commits in another process -> /events")
        events = event_latencies(folder, db, commits)
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    figures = []
    for name, times in pages.items():
        p50, p99 = percentile(times, 0.5), percentile(times, 0.99)
        figures.append(
            Figure(
                f"console: {name}, p50 / p99",
                f"{p50:.1f} / {p99:.1f} ms",
                f"<= {PAGE_GOAL_P50_MS:.0f} / {PAGE_GOAL_P99_MS:.0f} ms",
                p50 <= PAGE_GOAL_P50_MS and p99 <= PAGE_GOAL_P99_MS,
            )
        )
    if events:
        p50, p99 = percentile(events, 0.5), percentile(events, 0.99)
        figures.append(
            Figure(
                f"console: commit in another process -> SSE event, p50 / p99 ({len(events)})",
                f"{p50:.1f} / {p99:.1f} ms",
                f"p99 <= {EVENT_GOAL_P99_MS:.0f} ms",
                p99 <= EVENT_GOAL_P99_MS,
            )
        )
    missed = commits - len(events)
    figures.append(
        Figure("console: commits with no event after them", str(missed), "0", missed == 0)
    )
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["writer"]:
        writer(sys.argv[2], int(sys.argv[3]))
    else:
        for figure in run():
            print(figure.line())
