"""Leases held by a process that died on this host change hands at once (issue 16, item 9).

`mirror run telegram` killed with -9 leaves its lease behind until it expires; the restarted
process used to be refused ("telegram is already running (pid N)") for the rest of the TTL
while pid N did not exist any more. A holder on this host is now checked with signal 0; a
holder on another host, whose pid means nothing here, still waits for its expiry.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest

from bot.memory import Memory
from tests.conftest import ROOT

# Store contract: each test using `memory` runs on SQLite and on PostgreSQL (tests/pg.py).
pytestmark = pytest.mark.both_engines

HOST = socket.gethostname()
LEASE = "entrance:telegram"

HOLDER = """
import asyncio, os, socket, sys
from bot.memory import Memory

async def main(path):
    async with Memory(path) as memory:
        pid = os.getpid()
        held, _ = await memory.acquire_lease(
            "entrance:telegram", f"telegram@{socket.gethostname()}:{pid}",
            socket.gethostname(), pid, ttl_s=60,
        )
        print("held" if held else "refused", flush=True)
        await asyncio.sleep(60)

asyncio.run(main(sys.argv[1]))
"""


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
async def sleeping_child() -> AsyncIterator[int]:
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import time; time.sleep(60)"
    )
    try:
        yield child.pid
    finally:
        child.kill()
        await child.wait()


async def test_lease_of_a_killed_entrance_on_this_host_is_taken_at_once(
    memory: Memory, caplog: pytest.LogCaptureFixture
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        HOLDER,
        str(memory.path),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        assert line.strip() == b"held"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    before = await memory.lease(LEASE)
    assert before is not None and before.pid == child.pid and before.expires_at > memory.now

    with caplog.at_level(logging.INFO, logger="bot.memory.presence_store"):
        held, lease = await memory.acquire_lease(
            LEASE, f"telegram@{HOST}:{os.getpid()}", HOST, os.getpid(), ttl_s=60
        )

    assert held and lease.pid == os.getpid() and lease.epoch == before.epoch + 1
    assert f"pid {child.pid} on {HOST}, which is gone" in caplog.text


async def test_lease_held_by_a_live_process_on_this_host_is_not_taken(
    memory: Memory, sleeping_child: int
) -> None:
    await memory.acquire_lease(LEASE, "sleeper", HOST, sleeping_child, ttl_s=60)
    held, lease = await memory.acquire_lease(LEASE, "newcomer", HOST, os.getpid(), ttl_s=60)
    assert not held and lease.holder == "sleeper" and lease.pid == sleeping_child


async def test_lease_held_on_another_host_waits_for_its_expiry(memory: Memory) -> None:
    now = [1000.0]
    memory.clock = lambda: now[0]
    pid = dead_pid()  # dead here, but it names a process on the other host
    await memory.acquire_lease(LEASE, "elsewhere", "another-host", pid, ttl_s=15)
    held, lease = await memory.acquire_lease(LEASE, "newcomer", HOST, os.getpid(), ttl_s=15)
    assert not held and lease.holder == "elsewhere"
    now[0] += 16
    held, lease = await memory.acquire_lease(LEASE, "newcomer", HOST, os.getpid(), ttl_s=15)
    assert held and lease.epoch == 2


async def test_a_pid_we_may_not_signal_counts_as_alive(
    memory: Memory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await memory.acquire_lease(LEASE, "other user", HOST, 4242, ttl_s=60)

    def not_permitted(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", not_permitted)
    held, lease = await memory.acquire_lease(LEASE, "newcomer", HOST, os.getpid(), ttl_s=60)
    assert not held and lease.holder == "other user"
