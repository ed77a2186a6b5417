"""How soon one process knows what another committed: the mirror view and the outbox.

Three processes on a copy of the 100k prefilled memory (`python -m bench.awareness ROLE`):
- writer: for SECONDS, at random gaps of 20-120 ms (not in step with any poll), commits
  either a message recorded by its instance 'aware-writer' or an outbox row for the
  Telegram entrance, and notes the wall-clock time each commit returned;
- viewer: another instance building its context's mirror view (`Memory.turn_view`) back to
  back, noting when each started and ended and the newest 'aware-writer' message it saw;
- courier: the Telegram adapter's poller (`bot.outbox.OutboxCourier`: woken by the
  outbox bell, bot/memory/bell.py; every 50 ms where it cannot be heard), noting when it
  delivered each row. After the writer and the viewer have exited, the courier idles
  while the parent reads its CPU time from /proc.

Figures: (a) commit -> the end of the first view that shows it (p50, p99), and how many
views that started after a commit still missed it (goal 0: every next context sees it);
(b) commit -> delivery by the poller (p50, p99; goal p99 <= 250 ms); the idle poller's CPU
as a share of one core (goal <= 1%).

python -m bench.awareness [SECONDS] [IDLE_SECONDS]     (default: 10 5)
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import shutil
import socket
import sys
import time

from bench import prefill
from bench.common import (
    Figure,
    cpu_seconds,
    emit,
    percentile,
    print_figures,
    progress,
    read_json_line,
    run_dir,
    spawn_python,
)
from bench.processes import wait_for_go

SIZE = 100_000
WRITER = "aware-writer"
ENTRANCE = "telegram"
TARGET = "coordinator-chat"
POLL_GOAL_MS = 250.0
IDLE_GOAL_PERCENT = 1.0


# Children ------------------------------------------------------------------------------


async def writer(db: str, seconds: float) -> None:
    from bot.memory import Memory
    from bot.models import Author, Incoming

    rng = random.Random(5)
    messages: list[tuple[int, float]] = []
    outbox: list[tuple[int, float]] = []
    async with Memory(db) as memory:
        await memory.register_instance(WRITER, "local", socket.gethostname(), os.getpid(), None)
        emit({"ready": "writer"})
        await asyncio.get_running_loop().run_in_executor(None, wait_for_go)
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            await asyncio.sleep(rng.uniform(0.02, 0.12))
            n += 1
            if n % 2:
                recorded = await memory.record_incoming(
                    Incoming(
                        entrance="local",
                        conversation_id="aware-room",
                        conversation_kind="group",
                        author=Author(external_id="aware-person", display_name="Aware"),
                        text=f"awareness marker {n}",
                        platform_message_id=f"aware-{n}",
                    ),
                    WRITER,
                )
                messages.append((recorded.message_id, time.time()))
            else:
                row = await memory.enqueue(
                    entrance=ENTRANCE, target=TARGET, text=f"marker {n}", dedupe_key=f"aware-{n}"
                )
                assert row is not None
                outbox.append((row, time.time()))
    emit({"messages": messages, "outbox": outbox})


async def viewer(db: str, seconds: float) -> None:
    from bot.memory import Memory
    from bot.models import Audience

    views: list[tuple[float, float, int]] = []  # started, ended, newest writer message seen
    async with Memory(db) as memory:
        await memory.register_instance("aware-viewer", "discord", "bench", os.getpid(), None)
        emit({"ready": "viewer"})
        await asyncio.get_running_loop().run_in_executor(None, wait_for_go)
        deadline = time.perf_counter() + seconds + 0.5
        while time.perf_counter() < deadline:
            started = time.time()
            view = await memory.turn_view(
                conversation_id=1,
                person_id=1,
                audience=Audience(conversation_id=1, person_id=1),
                incoming_id=2**62,
                text="what is new?",
                dead_after_s=60,
            )
            ended = time.time()
            seen = [m.id for i in view.instances if i.id == WRITER for m in i.recent]
            views.append((started, ended, max(seen, default=0)))
    emit({"views": views})


async def courier(db: str, seconds: float) -> None:
    from bot.memory import Memory
    from bot.models import OutboxItem
    from bot.outbox import OutboxCourier

    delivered: list[tuple[int, float]] = []

    async def send(item: OutboxItem) -> None:
        delivered.append((item.id, time.time()))

    async with Memory(db) as memory:
        task = asyncio.create_task(
            OutboxCourier(memory, ENTRANCE, "aware-courier", send, targets=[TARGET]).run()
        )
        emit({"ready": "courier"})
        await asyncio.get_running_loop().run_in_executor(None, wait_for_go)
        await asyncio.sleep(seconds + 1.0)  # the writer's last row, and a poll after it
        emit({"delivered": delivered})
        await asyncio.get_running_loop().run_in_executor(None, wait_for_go)  # idle until told
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# The parent ----------------------------------------------------------------------------


def latencies_ms(commits: list[list[float]], seen: dict[int, float]) -> list[float]:
    return [(seen[int(i)] - at) * 1000 for i, at in commits if int(i) in seen]


def run(seconds: float = 10, idle_seconds: float = 5) -> list[Figure]:
    logging.getLogger("bot").setLevel(logging.WARNING)
    asyncio.run(prefill.ensure([SIZE]))
    folder = run_dir("awareness")
    db = prefill.working_copy(SIZE, folder)
    progress(f"awareness: writer, viewer and courier for {seconds:.0f} s, then idle")
    args = [str(db), str(seconds)]
    children = [spawn_python("-m", "bench.awareness", role, *args) for role in ROLES]
    try:
        for child in children:
            read_json_line(child)
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        written, viewed, delivered = (read_json_line(child) for child in children)
        time.sleep(0.5)  # the writer and the viewer are closing; let their last commit settle
        courier_pid = children[2].pid
        before, started = cpu_seconds(courier_pid), time.perf_counter()
        time.sleep(idle_seconds)
        idle = (cpu_seconds(courier_pid) - before) / (time.perf_counter() - started) * 100
        assert children[2].stdin is not None
        children[2].stdin.write("stop\n")
        children[2].stdin.flush()
    finally:
        for child in children:
            try:
                child.wait(timeout=30)
            except Exception:
                child.kill()
        shutil.rmtree(folder, ignore_errors=True)

    messages: list[list[float]] = written["messages"]  # type: ignore[assignment]
    views: list[list[float]] = viewed["views"]  # type: ignore[assignment]
    visible_ms, stale = [], 0
    for message_id, committed in messages:
        later = [v for v in views if v[1] >= committed and v[2] >= message_id]
        if later:
            visible_ms.append((min(v[1] for v in later) - committed) * 1000)
        stale += sum(1 for v in views if v[0] > committed and v[2] < message_id)
    rows: list[list[float]] = written["outbox"]  # type: ignore[assignment]
    got = {int(i): at for i, at in delivered["delivered"]}  # type: ignore[attr-defined]
    delivery_ms = latencies_ms(rows, got)
    p99 = percentile(delivery_ms, 0.99)
    return [
        Figure(
            f"awareness (a): commit -> next context shows it, p50 ({len(visible_ms)})",
            f"{percentile(visible_ms, 0.5):.1f} ms",
        ),
        Figure(
            "awareness (a): commit -> next context shows it, p99",
            f"{percentile(visible_ms, 0.99):.1f} ms",
        ),
        Figure(
            f"awareness (a): contexts begun after a commit, missing it ({len(views)} built)",
            str(stale),
            "0",
            stale == 0,
        ),
        Figure(
            f"awareness (b): commit -> outbox delivered, p50 ({len(delivery_ms)} rows)",
            f"{percentile(delivery_ms, 0.5):.1f} ms",
        ),
        Figure(
            "awareness (b): commit -> outbox delivered, p99",
            f"{p99:.1f} ms",
            f"<= {POLL_GOAL_MS:.0f} ms",
            p99 <= POLL_GOAL_MS,
        ),
        Figure(
            "awareness (b): outbox rows never delivered",
            str(len(rows) - len(delivery_ms)),
            "0",
            len(rows) == len(delivery_ms),
        ),
        Figure(
            f"idle poller (outbox courier): CPU over {idle_seconds:.0f} s",
            f"{idle:.2f}% core",
            f"<= {IDLE_GOAL_PERCENT:.0f}%",
            idle <= IDLE_GOAL_PERCENT,
        ),
    ]


ROLES = {"writer": writer, "viewer": viewer, "courier": courier}

if __name__ == "__main__":
    if sys.argv[1:2] and sys.argv[1] in ROLES:
        logging.basicConfig(level=logging.ERROR)
        asyncio.run(ROLES[sys.argv[1]](sys.argv[2], float(sys.argv[3])))
    else:
        print_figures(run(*(float(a) for a in sys.argv[1:3])))
