"""The scheduler: surfaces unresolved items to the coordinator, reminds, escalates, queues
the follow-ups of promises that fell due, expires, and merges the word indexes recall reads.

Any number of schedulers may run; one acts. Each tick first takes or renews the
'scheduler' lease (a row in `leases`, upserted under BEGIN IMMEDIATE); a scheduler without
it is a standby and takes over once the holder's lease expires. Every write a tick makes
is fenced by the lease epoch. APScheduler (3.11, AsyncIOScheduler, in-memory job store)
runs the tick on an interval inside this one process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.commands import buttons_for
from bot.config import Config
from bot.coordinator import describe_item
from bot.memory import ItemDetails, LeaseLost, Memory, Outgoing

log = logging.getLogger(__name__)

LEASE = "scheduler"
DUE_BATCH = 100  # due promises claimed per tick (one short transaction)
MAX_CATCH_UP_TICKS = 1000  # back-to-back ticks at most while batches come back full
# Word index merging (Memory.merge_word_indexes), off the turn: each step one short write
# (100 pages: 5 ms at 1M messages, p99 87 ms), a pause after it so that the writers waiting
# for the lock (turns in other processes) take it; a tick takes a bounded number of steps,
# and stops sooner once a quarter of the lease has gone (the lease is renewed per tick).
MERGE_PAGES = 100
MERGE_STEPS = 20
MERGE_PAUSE_S = 0.02


@dataclass
class TickReport:
    leader: bool
    epoch: int | None = None
    surfaced: list[int] = field(default_factory=list)
    reminded: list[int] = field(default_factory=list)
    escalated: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)
    due: list[int] = field(default_factory=list)  # intentions whose follow-up was queued
    waiting: list[int] = field(default_factory=list)  # follow-ups the coordinator was told of
    merge_steps: int = 0  # word index merge steps that found segments to merge

    def summary(self) -> str:
        if not self.leader:
            return "standby (another scheduler holds the lease)"
        return (
            f"leader (epoch {self.epoch}): surfaced {len(self.surfaced)}, reminded "
            f"{len(self.reminded)}, escalated {len(self.escalated)}, expired "
            f"{len(self.expired)}, dead instances {len(self.dead)}, due {len(self.due)}, "
            f"waiting {len(self.waiting)}, word index merge steps {self.merge_steps}"
        )


class Scheduler:
    def __init__(self, config: Config, *, memory: Memory | None = None, name: str = "scheduler"):
        self.config = config
        self.name = name
        self.holder = f"{name}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.memory = memory or Memory(
            config.memory.path, busy_timeout_ms=config.memory.busy_timeout_ms
        )
        self._owns_memory = memory is None
        self._stop = asyncio.Event()
        self.leader = False
        self._role_known = False

    async def open(self) -> None:
        if self._owns_memory:
            await self.memory.open()

    async def close(self) -> None:
        if self.leader:
            await self.memory.release_lease(LEASE, self.holder)
            self.leader = False
        if self._owns_memory:
            await self.memory.close()

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self) -> None:
        """Tick on an interval until asked to stop (SIGINT/SIGTERM)."""
        from apscheduler.schedulers.asyncio import AsyncIOScheduler

        await self.open()
        try:
            await self.memory.register_instance(
                self.name, "scheduler", socket.gethostname(), os.getpid(), None
            )
        except BaseException:  # memory that cannot be written: close it, or never exit
            await self.close()
            raise
        logging.getLogger("apscheduler").setLevel(logging.WARNING)
        jobs = AsyncIOScheduler()
        jobs.add_job(
            self.run_tick,
            "interval",
            seconds=self.config.scheduler.interval_s,
            id="tick",
            max_instances=1,
            coalesce=True,
        )
        jobs.start()
        host = self._recall_host()
        try:
            await self.run_tick()
            await self._stop.wait()
        finally:
            if host is not None:
                host.cancel()
                await asyncio.gather(host, return_exceptions=True)
            jobs.shutdown(wait=False)
            await self.memory.stop_instance(self.name)
            await self.close()
            log.info("scheduler %s stopped", self.holder)

    def _recall_host(self) -> asyncio.Task[None] | None:
        """Under `mirror up`, recall by meaning for the host's entrances (leader or not:
        each host's scheduler serves its own entrances; bot/recall_host.py)."""
        from bot import recall
        from bot.recall_host import RecallHost, socket_path

        path = socket_path()
        if path is None or not recall.active(self.config.recall):
            return None
        host = RecallHost(self.memory, self.config, path)
        return asyncio.get_running_loop().create_task(host.serve(), name="recall host")

    async def run_tick(self) -> None:
        """One tick; while due promises fill whole batches (10 000 falling due in the same
        minute), tick again at once: each tick stays short (one batch, one transaction) and
        the backlog is queued in about a second instead of one batch per interval."""
        for _ in range(MAX_CATCH_UP_TICKS):
            report = await self._one_tick_logged()
            if report is None or len(report.due) < DUE_BATCH:
                return
            await asyncio.sleep(0)  # let the rest of the process breathe between batches

    async def _one_tick_logged(self) -> TickReport | None:
        try:
            report = await self.tick()
        except Exception:
            log.exception("scheduler tick failed")
            return None
        if report.leader and (
            report.surfaced
            or report.reminded
            or report.escalated
            or report.expired
            or report.dead
            or report.due
            or report.waiting
        ):
            log.info("tick: %s", report.summary())
        return report

    async def tick(self) -> TickReport:
        """One pass of every job, if this scheduler holds the lease."""
        held, lease = await self.memory.acquire_lease(
            LEASE,
            self.holder,
            socket.gethostname(),
            os.getpid(),
            ttl_s=self.config.scheduler.lease_s,
        )
        if held != self.leader or not self._role_known:
            self._role_known = True
            log.info(
                "scheduler %s is now %s (epoch %d)",
                self.holder,
                "the leader" if held else "a standby",
                lease.epoch,
            )
        self.leader = held
        if not held:
            return TickReport(leader=False)
        report = TickReport(leader=True, epoch=lease.epoch)
        try:
            await self._run_jobs(report, lease.epoch)
        except LeaseLost as exc:
            log.warning("lost the lease mid-tick: %s", exc)
            self.leader = False
        await self.memory.heartbeat(self.name)
        return report

    async def _run_jobs(self, report: TickReport, epoch: int) -> None:
        coordinator = self.config.coordinator
        address = coordinator.parsed
        zone = self.config.persona.timezone

        def message(details: ItemDetails, prefix: str, key: str) -> Outgoing:
            return Outgoing(
                entrance=address.entrance,
                target=address.external_id,
                text=f"{prefix}{describe_item(details, zone)}",
                dedupe_key=key,
                payload={
                    "kind": "coordinator_item",
                    "item_id": details.item.id,
                    "buttons": buttons_for(details),
                },
            )

        async def send(batch: list[tuple[ItemDetails, str]], what: str, prefix: str) -> list[int]:
            """One fenced transaction for the whole batch (one commit, not one per item)."""
            return await self.memory.mark_items_sent(
                [(details.item.id, message(details, prefix, key)) for details, key in batch],
                what,
                lease=LEASE,
                holder=self.holder,
                epoch=epoch,
                remind_after_s=coordinator.remind_after_s,
            )

        surfacing = await self.memory.items_to_surface()
        report.surfaced = await send(
            [(details, f"surface:{details.item.id}") for details in surfacing], "surfaced", ""
        )
        stamp = int(self.memory.now // coordinator.remind_after_s)
        reminding = await self.memory.items_to_remind()
        report.reminded = await send(
            [(details, f"remind:{details.item.id}:{stamp}") for details in reminding],
            "reminded",
            "Reminder: still waiting for you.\n",
        )
        escalating = await self.memory.items_to_escalate()
        report.escalated = await send(
            [(details, f"escalate:{details.item.id}") for details in escalating],
            "escalated",
            "OVERDUE: this is already due.\n",
        )
        # Due promises become turns of the entrance owning their conversation (before expiry,
        # which spares those queued here).
        report.due = await self.memory.queue_due_follow_ups(
            lease=LEASE, holder=self.holder, epoch=epoch, limit=DUE_BATCH
        )

        def waiting(intention_id: int, text: str, due_at: float, entrance: str) -> Outgoing:
            when = datetime.fromtimestamp(due_at, ZoneInfo(zone)).strftime("%a %Y-%m-%d %H:%M")
            return Outgoing(
                entrance=address.entrance,
                target=address.external_id,
                text=(
                    f"A promise fell due {when} and its follow-up is still waiting: my "
                    f"{entrance} entrance is not running. “{text}” (#{intention_id}) goes out "
                    "when it is back."
                ),
                dedupe_key=f"due-late:{intention_id}",
                payload={"kind": "due_waiting", "intention_id": intention_id},
            )

        report.waiting = await self.memory.notice_waiting_follow_ups(
            self.config.scheduler.due_give_up_after_s,
            waiting,
            lease=LEASE,
            holder=self.holder,
            epoch=epoch,
        )
        report.expired = await self.memory.expire_intentions(self.config.scheduler.expire_after_s)
        report.dead = await self.memory.mark_dead_instances(
            self.config.persona.instance_dead_after_s
        )
        for name in report.dead:
            log.warning("instance %s stopped heartbeating; marked dead", name)
        if len(report.due) < DUE_BATCH:  # not while a backlog of due promises is queued
            report.merge_steps = await self.merge_word_indexes()

    async def merge_word_indexes(self) -> int:
        """Merge the word indexes' segments a few steps further (the turn's word recall reads
        every segment: at 1M messages 18 of them cost 0.40 ms a query, merged 0.17 ms);
        returns the steps that found segments to merge."""
        steps = 0
        deadline = time.monotonic() + self.config.scheduler.lease_s / 4
        for _ in range(MERGE_STEPS):
            if not await self.memory.merge_word_indexes(MERGE_PAGES):
                break
            steps += 1
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(MERGE_PAUSE_S)
        return steps
