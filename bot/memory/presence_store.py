"""Instances (presence and heartbeats) and leases (single-runner locks) in memory.db.

A lease waits for its expiry before it changes hands, except when its holder is a process
on this very host that no longer exists: nobody can renew it, so waiting would only keep
the entrance silent. A holder on another host is never judged from here (its pid means
nothing on this machine).
"""

from __future__ import annotations

import logging
import sqlite3

from bot.memory import rows
from bot.memory.database import Database
from bot.memory.health import pid_alive
from bot.memory.records import Lease
from bot.models import Instance

log = logging.getLogger(__name__)


class PresenceStore(Database):
    async def register_instance(
        self, instance_id: str, entrance: str, host: str, pid: int, soul_version: int | None
    ) -> Instance:
        def run(conn: sqlite3.Connection) -> sqlite3.Row:
            now = self.now
            conn.execute(
                "INSERT INTO instances (id, entrance, host, pid, started_at, last_seen, status,"
                " status_since, soul_version)"
                " VALUES (:id, :entrance, :host, :pid, :now, :now, 'alive', :now, :soul)"
                " ON CONFLICT (id) DO UPDATE SET entrance = :entrance, host = :host, pid = :pid,"
                " started_at = :now, last_seen = :now, status = 'alive', status_since = :now,"
                " soul_version = :soul",
                {
                    "id": instance_id,
                    "entrance": entrance,
                    "host": host,
                    "pid": pid,
                    "now": now,
                    "soul": soul_version,
                },
            )
            return conn.execute("SELECT * FROM instances WHERE id = ?", (instance_id,)).fetchone()

        return rows.instance(await self.write(run))

    async def heartbeat(self, instance_id: str, soul_version: int | None = None) -> None:
        def run(conn: sqlite3.Connection) -> None:
            now = self.now
            conn.execute(
                "UPDATE instances SET last_seen = :now,"
                " soul_version = COALESCE(:soul, soul_version),"
                " status_since = CASE WHEN status = 'alive' THEN status_since ELSE :now END,"
                " status = 'alive' WHERE id = :id",
                {"now": now, "soul": soul_version, "id": instance_id},
            )

        await self.write(run)

    async def stop_instance(self, instance_id: str) -> None:
        await self.write(
            lambda conn: conn.execute(
                "UPDATE instances SET status = 'stopped', status_since = ? WHERE id = ?",
                (self.now, instance_id),
            )
        )

    async def mark_dead_instances(self, silent_for_s: float) -> list[str]:
        """Instances whose heartbeat stopped more than silent_for_s ago become 'dead'."""

        def run(conn: sqlite3.Connection) -> list[str]:
            now = self.now
            dead = conn.execute(
                "UPDATE instances SET status = 'dead', status_since = last_seen"
                " WHERE status = 'alive' AND last_seen < ? RETURNING id",
                (now - silent_for_s,),
            ).fetchall()
            return [row["id"] for row in dead]

        return await self.write(run)

    async def instances(self) -> list[Instance]:
        found = await self.read(
            lambda conn: conn.execute("SELECT * FROM instances ORDER BY id").fetchall()
        )
        return [rows.instance(row) for row in found]

    # Leases ------------------------------------------------------------------------------

    async def acquire_lease(
        self, name: str, holder: str, host: str, pid: int, ttl_s: float
    ) -> tuple[bool, Lease]:
        """Take or renew a lease when it is ours, expired, or held by a dead process on this
        host (`host` is this machine's name); returns (held, current lease).

        The epoch (a fencing token) grows each time the lease changes hands.
        """

        def run(conn: sqlite3.Connection) -> tuple[bool, Lease, Lease | None]:
            now = self.now
            row = conn.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
            dead: Lease | None = None
            if row is None:
                conn.execute(
                    "INSERT INTO leases (name, holder, host, pid, epoch, acquired_at, expires_at)"
                    " VALUES (?, ?, ?, ?, 1, ?, ?)",
                    (name, holder, host, pid, now, now + ttl_s),
                )
            elif row["holder"] == holder:
                conn.execute("UPDATE leases SET expires_at = ? WHERE name = ?", (now + ttl_s, name))
            elif row["expires_at"] <= now or (row["host"] == host and not pid_alive(row["pid"])):
                if row["expires_at"] > now:
                    dead = _lease(row)
                conn.execute(
                    "UPDATE leases SET holder = ?, host = ?, pid = ?, epoch = epoch + 1,"
                    " acquired_at = ?, expires_at = ? WHERE name = ?",
                    (holder, host, pid, now, now + ttl_s, name),
                )
            lease = _lease(conn.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone())
            return lease.holder == holder, lease, dead

        held, lease, dead = await self.write(run)
        if dead is not None:
            log.info(
                "the %s lease was held by pid %d on %s, which is gone: %s took it at once"
                " (epoch %d)",
                name,
                dead.pid,
                dead.host,
                holder,
                lease.epoch,
            )
        return held, lease

    async def release_lease(self, name: str, holder: str) -> None:
        """Expire our lease at once (the row stays, so the epoch keeps growing)."""
        await self.write(
            lambda conn: conn.execute(
                "UPDATE leases SET expires_at = ? WHERE name = ? AND holder = ?",
                (self.now, name, holder),
            )
        )

    async def lease(self, name: str) -> Lease | None:
        row = await self.read(
            lambda conn: conn.execute("SELECT * FROM leases WHERE name = ?", (name,)).fetchone()
        )
        return _lease(row) if row else None


def _lease(row: sqlite3.Row) -> Lease:
    return Lease(**{key: row[key] for key in row.keys()})
