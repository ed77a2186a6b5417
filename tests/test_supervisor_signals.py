"""`mirror up` and its children live and die together, and it never runs with no entrance.

Real processes: `mirror up` supervising a Telegram entrance (against the fake Bot API) and
the scheduler. Closing the terminal (SIGHUP) or killing `mirror up` with -9 must not leave
children running with parent 1 and holding their entrance leases; and when every entrance
has given up, `mirror up` must stop the scheduler and exit non-zero instead of looking
healthy.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import signal
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bot.supervisor import ChildSpec, Supervisor
from tests.conftest import run_mirror
from tests.fakes.telegram_api import DEFAULT_TOKEN, FakeTelegram
from tests.privacy_world import needs_recall
from tests.processes import MirrorProcess
from tests.waiting import wait_until

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="children read from /proc; PDEATHSIG is Linux"
)

START_S = 60.0  # a child's first start imports the adapter's SDK
GONE_S = 10.0  # "within a few seconds", with room for a loaded machine
_STARTED = re.compile(r"^(\w+): started \(pid (\d+)\)$")


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie waiting for its reaper has stopped running)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in {"Z", "X"}


def children_of(up: MirrorProcess) -> dict[str, int]:
    """The pids `mirror up` announced for its children."""
    return {
        match.group(1): int(match.group(2)) for line in up.stderr if (match := _STARTED.match(line))
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


@pytest.fixture
def telegram_config(write_config: Callable[..., Path], fake: FakeTelegram) -> Path:
    return write_config(
        "[entrances.telegram]\nenabled = true\n"
        f'base_url = "{fake.base_url}"\nbase_file_url = "{fake.base_file_url}"\n'
    )


@contextlib.asynccontextmanager
async def mirror_up(
    config: Path, token: str = DEFAULT_TOKEN, *, nohup: bool = False
) -> AsyncIterator[MirrorProcess]:
    """`mirror up` with the Telegram entrance and the scheduler (with SIGHUP ignored, as
    `nohup` starts it, when asked). On the way out, any child still alive is killed, so
    that a failing test leaves no orphan behind."""
    up = MirrorProcess("up", "--config", str(config), env={"MIRROR_TELEGRAM_TOKEN": token})
    await start_hanging_up(up, signal.SIG_IGN if nohup else signal.SIG_DFL)
    try:
        yield up
    finally:
        await up.stop(signal.SIGKILL, timeout=10)
        for pid in children_of(up).values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


async def start_hanging_up(process: MirrorProcess, hangup: signal.Handlers) -> None:
    """Start `process` with SIGHUP's disposition `hangup` (SIG_IGN: what nohup does; an
    ignored signal stays ignored across fork and exec), whatever this test run was started
    with: under `nohup make test` every child would otherwise ignore SIGHUP."""
    previous = signal.signal(signal.SIGHUP, hangup)
    try:
        await process.start()
    finally:
        signal.signal(signal.SIGHUP, previous)


async def running(up: MirrorProcess) -> dict[str, int]:
    """Wait until the entrance polls and the scheduler leads; return the children's pids."""
    await up.wait_for_line(
        lambda line: line.startswith("[telegram]") and "polling as" in line,
        stream="stderr",
        timeout=START_S,
    )
    await up.wait_for_line(
        lambda line: line.startswith("[scheduler]") and "leader" in line,
        stream="stderr",
        timeout=START_S,
    )
    pids = children_of(up)
    assert set(pids) == {"telegram", "scheduler"}, up.tail()
    return pids


async def exit_code(up: MirrorProcess, timeout: float) -> int:
    assert up.proc is not None
    try:
        return await asyncio.wait_for(up.proc.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"mirror up still running after {timeout} s: {up.tail()}") from None


async def all_gone(pids: dict[str, int], up: MirrorProcess) -> None:
    await wait_until(
        lambda: not any(alive(pid) for pid in pids.values()),
        GONE_S,
        lambda: (
            f"children gone; still running: {[n for n, p in pids.items() if alive(p)]}" + up.tail()
        ),
    )


async def test_closing_the_terminal_stops_mirror_up_and_its_children(
    telegram_config: Path,
) -> None:
    async with mirror_up(telegram_config) as up:
        pids = await running(up)
        assert up.proc is not None
        environ = Path(f"/proc/{pids['scheduler']}/environ").read_bytes().split(b"\0")
        recall_host = [e.split(b"=", 1)[1].decode() for e in environ if b"RECALL_HOST=" in e]
        os.kill(up.proc.pid, signal.SIGHUP)  # what the terminal sends to its process
        code = await exit_code(up, 30)
        await all_gone(pids, up)
        assert code == 0, up.tail()  # a stop, not a death by signal
    assert any("[telegram]" in line and "instance telegram stopped" in line for line in up.stderr)
    # The host's recall socket and its private folder are gone with them.
    assert all(not Path(path).exists() for path in recall_host)
    if "XDG_RUNTIME_DIR" not in os.environ:
        assert all(not Path(path).parent.exists() for path in recall_host)


async def test_mirror_up_supervises_from_a_lean_process(telegram_config: Path) -> None:
    """Once its children are decided, `mirror up` replaces itself (same pid) with a
    supervisor that never loaded typer, pydantic, the config or the ssl module: ~22 MiB
    less for as long as the persona runs."""
    async with mirror_up(telegram_config) as up:
        await running(up)
        assert up.proc is not None
        command = Path(f"/proc/{up.proc.pid}/cmdline").read_bytes().split(b"\0")
        assert b"bot.supervisor" in command, command
        mapped = Path(f"/proc/{up.proc.pid}/maps").read_text()
        assert "pydantic_core" not in mapped
        modules = [line for line in mapped.splitlines() if "/typer/" in line or "_ssl." in line]
        assert not modules, modules


@needs_recall
async def test_under_mirror_up_the_scheduler_recalls_by_meaning_for_the_entrances(
    telegram_config: Path, fake: FakeTelegram, memory_location: Path
) -> None:
    """One encoder and one index for the host (bot/recall_host.py): the fact is found by
    meaning, and the entrance never loaded numpy or the model."""

    def noted() -> int:  # the vectors of the persona's notes (the fact, noted)
        with contextlib.closing(sqlite3.connect(f"file:{memory_location}?mode=ro", uri=True)) as db:
            return int(db.execute("SELECT count(*) FROM vectors WHERE kind = 'note'").fetchone()[0])

    async with mirror_up(telegram_config) as up:
        pids = await running(up)
        fake.push_message(77, "I'm allergic to peanuts", user_id=77)
        await fake.wait_for_sent(count=1, timeout=30)
        # The host's embedder writes the note's vector (within its 0.5 s poll).
        await wait_until(lambda: noted() >= 1, 30, lambda: "no note's vector" + up.tail())
        fake.push_message(77, "is there anything I can't eat?", user_id=77)
        sent = await fake.wait_for_sent(count=2, timeout=30)
        mapped = Path(f"/proc/{pids['telegram']}/maps").read_text()
        host_mapped = Path(f"/proc/{pids['scheduler']}/maps").read_text()
    assert "peanuts" in sent[1]["text"], sent
    assert "numpy" not in mapped and "minilm" not in mapped.lower()
    assert "numpy" in host_mapped


async def test_children_of_a_killed_mirror_up_stop_and_let_the_next_one_in(
    telegram_config: Path,
) -> None:
    async with mirror_up(telegram_config) as up:
        pids = await running(up)
        assert up.proc is not None
        os.kill(up.proc.pid, signal.SIGKILL)
        await exit_code(up, 10)
        await all_gone(pids, up)

    # They stopped through their SIGTERM path: marked stopped, the entrance lease let go...
    status = json.loads(
        (
            await asyncio.to_thread(
                run_mirror, "status", "--json", "--config", str(telegram_config)
            )
        ).stdout
    )
    states = {i["id"]: i["status"] for i in status["instances"]}
    assert states == {"telegram": "stopped", "scheduler": "stopped"}
    # ...so the next `mirror up` is not refused by their leases.
    async with mirror_up(telegram_config) as again:
        await running(again)
        assert again.proc is not None
        os.kill(again.proc.pid, signal.SIGTERM)
        assert await exit_code(again, 30) == 0, again.tail()


async def test_children_of_a_killed_mirror_up_under_nohup_stop_too(telegram_config: Path) -> None:
    # nohup ignores SIGHUP, and children inherit that: the kernel's SIGHUP at the
    # supervisor's death must still reach them.
    async with mirror_up(telegram_config, nohup=True) as up:
        pids = await running(up)
        assert up.proc is not None
        os.kill(up.proc.pid, signal.SIGKILL)
        await exit_code(up, 10)
        await all_gone(pids, up)


async def test_repeated_hangups_still_let_the_turn_finish_and_stop_cleanly(
    telegram_config: Path,
) -> None:
    # The kernel sends a supervised child SIGHUP once per reparenting when its supervisor
    # dies; unlike a second SIGTERM, a second SIGHUP must not cancel the clean stop.
    scheduler = MirrorProcess("run", "scheduler", "--config", str(telegram_config))
    await start_hanging_up(scheduler, signal.SIG_DFL)
    try:
        await scheduler.wait_for_line(lambda line: "leader" in line, stream="stderr")
        assert scheduler.proc is not None
        os.kill(scheduler.proc.pid, signal.SIGHUP)
        os.kill(scheduler.proc.pid, signal.SIGHUP)
        assert await exit_code(scheduler, 30) == 0, scheduler.tail()
    finally:
        await scheduler.stop()
    assert any("stopped" in line for line in scheduler.stderr), scheduler.tail()
    status = await asyncio.to_thread(
        run_mirror, "status", "--json", "--config", str(telegram_config)
    )
    assert {i["id"]: i["status"] for i in json.loads(status.stdout)["instances"]} == {
        "scheduler": "stopped"
    }


async def test_mirror_up_exits_1_when_no_entrance_is_left(telegram_config: Path) -> None:
    async with mirror_up(telegram_config, token="999:WRONG") as up:
        code = await exit_code(up, START_S)
        assert code == 1, up.tail()
        await wait_until(lambda: all(reader.done() for reader in up._readers), 10, "output read")
        assert up.stderr[-1] == (
            "mirror: no entrance is running: telegram exited with code 2: "
            "mirror: telegram: the Telegram token was refused (401 on getMe): "
            "check MIRROR_TELEGRAM_TOKEN"
        ), up.tail()
        assert not alive(children_of(up)["scheduler"])


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_supervisor_stops_the_scheduler_once_every_entrance_gave_up() -> None:
    out = io.StringIO()
    supervisor = Supervisor(
        [
            ChildSpec("telegram", child("import sys; print('bad token', flush=True); sys.exit(2)")),
            ChildSpec("discord", child("raise SystemExit(1)")),
            ChildSpec(
                "scheduler",
                child("import time; print('leading', flush=True); time.sleep(60)"),
                entrance=False,
            ),
        ],
        backoff_initial_s=0.01,
        max_restarts=1,
        output=out,
    )
    # It ends by itself: nobody calls request_stop().
    await asyncio.wait_for(supervisor.run(), 30)
    assert supervisor.nothing_running == (
        "no entrance is running: telegram exited with code 2: bad token; "
        "discord crashed 2 times in a row (last exit code 1)"
    )
    scheduler = supervisor.children["scheduler"].process
    assert scheduler is not None and scheduler.returncode is not None


async def test_one_entrance_left_keeps_everything_running() -> None:
    supervisor = Supervisor(
        [
            ChildSpec("telegram", child("import sys; sys.exit(2)")),
            ChildSpec("discord", child("import time; print('up', flush=True); time.sleep(60)")),
            ChildSpec("scheduler", child("import time; time.sleep(60)"), entrance=False),
        ],
        output=io.StringIO(),
    )
    task = asyncio.create_task(supervisor.run())
    try:
        await wait_until(lambda: supervisor.children["telegram"].gave_up, 15, "telegram given up")
        assert not task.done() and supervisor.nothing_running is None
        assert all(
            (state.process is not None and state.process.returncode is None)
            for name, state in supervisor.children.items()
            if name != "telegram"
        )
    finally:
        supervisor.request_stop()
        await asyncio.wait_for(task, 30)
