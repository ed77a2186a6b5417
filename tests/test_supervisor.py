"""`mirror up`: supervision of child processes, entrance leases, the offline default."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.config import load_config
from bot.entrance import EntranceFailure
from bot.instance import Instance
from bot.supervisor import ChildSpec, Supervisor
from tests.conftest import run_mirror
from tests.processes import MirrorProcess
from tests.waiting import wait_until


def child(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_with_a_logger_child_lines_keep_the_level_they_were_logged_at(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`mirror up` in a terminal: the quiet screen shows a child's warnings, not its INFO."""
    code = (
        "print('2026-12-02 07:00:00,000 INFO bot.scheduler: tick', flush=True)\n"
        "print('2026-12-02 07:00:00,001 WARNING bot.scheduler: trouble', flush=True)\n"
        "print('Traceback (most recent call last):', flush=True)"
    )
    supervisor = Supervisor(
        [ChildSpec("once", child(code), entrance=False)],
        logger=logging.getLogger("bot.supervisor"),
        output=io.StringIO(),
    )
    caplog.set_level(logging.DEBUG, logger="bot.supervisor")
    task = asyncio.create_task(supervisor.run())
    try:
        await wait_until(
            lambda: any("Traceback" in r.getMessage() for r in caplog.records), 15.0, "relayed"
        )
    finally:
        supervisor.request_stop()
        await task
    levels = {r.getMessage().split(" ")[-1]: r.levelname for r in caplog.records}
    assert levels["tick"] == "INFO" and levels["trouble"] == "WARNING"
    assert levels["last):"] == "WARNING"  # outside the log format: seen, to be safe
    assert supervisor.output.getvalue() == ""  # type: ignore[attr-defined]


async def test_crashing_child_is_restarted_with_backoff_then_given_up() -> None:
    out = io.StringIO()
    supervisor = Supervisor(
        [
            ChildSpec("crashy", child("print('booting', flush=True); raise SystemExit(1)")),
            ChildSpec("steady", child("import time; print('up', flush=True); time.sleep(60)")),
        ],
        backoff_initial_s=0.05,
        max_restarts=3,
        output=out,
    )
    task = asyncio.create_task(supervisor.run())
    try:
        await wait_until(
            lambda: supervisor.children["crashy"].gave_up is not None, 15.0, "crashy given up"
        )
        assert supervisor.children["crashy"].restarts == 4
        steady = supervisor.children["steady"].process
        assert steady is not None and steady.returncode is None  # untouched
        log = out.getvalue()
        assert "[crashy] booting" in log and "[steady] up" in log
        assert "restarting in 0.1s (try 2 of 3)" in log
        assert "crashy: giving up: crashed 4 times in a row" in log
    finally:
        supervisor.request_stop()
        await asyncio.wait_for(task, 30)
    assert steady.returncode is not None


async def test_exit_code_two_is_not_restarted() -> None:
    out = io.StringIO()
    supervisor = Supervisor(
        [ChildSpec("telegram", child("import sys; print('bad token', flush=True); sys.exit(2)"))],
        backoff_initial_s=0.05,
        output=out,
    )
    task = asyncio.create_task(supervisor.run())
    try:
        await wait_until(
            lambda: supervisor.children["telegram"].gave_up is not None, 15.0, "telegram given up"
        )
        assert supervisor.children["telegram"].restarts == 0
        assert "telegram: not restarting (exited with code 2: bad token)" in out.getvalue()
    finally:
        supervisor.request_stop()
        await asyncio.wait_for(task, 30)


async def test_stop_lets_children_finish_gracefully() -> None:
    graceful = (
        "import signal, sys, time\n"
        "def bye(*_):\n    print('finishing the current turn', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    out = io.StringIO()
    supervisor = Supervisor(
        [ChildSpec("a", child(graceful)), ChildSpec("b", child(graceful))], output=out
    )
    task = asyncio.create_task(supervisor.run())
    await wait_until(lambda: out.getvalue().count("ready") == 2, 15.0, "both children ready")
    supervisor.request_stop()
    await asyncio.wait_for(task, 30)
    assert out.getvalue().count("finishing the current turn") == 2
    assert all(s.process and s.process.returncode == 0 for s in supervisor.children.values())


async def test_a_second_poller_on_an_entrance_is_refused_or_waits(
    write_config: Callable[..., Path],
) -> None:
    config = load_config(write_config("[persona]\ninstance_dead_after_s = 1.5\n"))
    first = Instance(config, instance_id="telegram", entrance="telegram", watch_soul=False)
    await first.start()
    try:
        second = Instance(config, instance_id="telegram-2", entrance="telegram", watch_soul=False)
        with pytest.raises(EntranceFailure, match=r"telegram is already running \(pid \d+ on"):
            await second.start()
        config.standby = True
        standby = Instance(config, instance_id="telegram-2", entrance="telegram", watch_soul=False)
        starting = asyncio.create_task(standby.start())
        await asyncio.sleep(0.5)
        assert not starting.done()
    finally:
        await first.stop()
    await asyncio.wait_for(starting, 10)  # released on stop: the standby takes over
    lease = await standby.memory.lease("entrance:telegram")
    assert lease is not None and lease.holder == standby.holder and lease.epoch == 2
    await standby.stop()


async def test_mirror_up_without_platforms_runs_local_with_the_scheduler(
    write_config: Callable[..., Path],
) -> None:
    config = write_config()
    up = await MirrorProcess("up", "--chat", "--config", str(config), "--as", "ann").start()
    try:
        await up.wait_for_line(lambda line: "skipping telegram" in line, stream="stderr")
        await up.wait_for_line(
            lambda line: "[scheduler]" in line and "leader" in line, stream="stderr"
        )
        await up.write("What is your name?")
        await up.wait_for_line(lambda line: "Wren" in line)
        await up.close_stdin()
        assert await asyncio.wait_for(up.proc.wait(), 30) == 0  # type: ignore[union-attr]
    finally:
        await up.stop()
    status = json.loads(run_mirror("status", "--json", "--config", str(config)).stdout)
    states = {i["id"]: i["status"] for i in status["instances"]}
    assert states == {"local": "stopped", "scheduler": "stopped"}
