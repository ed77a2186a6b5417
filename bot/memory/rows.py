"""Row -> model conversions shared by the memory stores (sqlite3.Row in, pydantic out)."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from bot.models import (
    AuditEntry,
    Conflict,
    Instance,
    Intention,
    Message,
    Note,
    OutboxItem,
    SoulVersion,
    from_epoch,
)


def _at(row: sqlite3.Row, key: str) -> datetime:
    value = from_epoch(row[key])
    assert value is not None, key
    return value


def _maybe_at(row: sqlite3.Row, key: str) -> datetime | None:
    return from_epoch(row[key])


def soul_version(row: sqlite3.Row) -> SoulVersion:
    return SoulVersion(
        id=row["id"],
        sha256=row["sha256"],
        name=row["name"],
        text=row["text"],
        created_at=_at(row, "created_at"),
        source=row["source"],
        author=row["author"],
    )


def instance(row: sqlite3.Row) -> Instance:
    return Instance(
        id=row["id"],
        entrance=row["entrance"],
        host=row["host"],
        pid=row["pid"],
        started_at=_at(row, "started_at"),
        last_seen=_at(row, "last_seen"),
        status=row["status"],
        status_since=_at(row, "status_since"),
        soul_version=row["soul_version"],
    )


def message(row: sqlite3.Row) -> Message:
    keys = row.keys()
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        conversation_external_id=row["conversation_external_id"]
        if "conversation_external_id" in keys
        else None,
        conversation_kind=row["conversation_kind"] if "conversation_kind" in keys else None,
        instance_id=row["instance_id"],
        entrance=row["entrance"],
        direction=row["direction"],
        person_id=row["person_id"],
        person_name=row["person_name"] if "person_name" in keys else None,
        text=row["text"],
        created_at=_at(row, "created_at"),
        platform_message_id=row["platform_message_id"],
        visibility=row["visibility"],
        status=row["status"],
        soul_version=row["soul_version"],
        model=row["model"],
    )


def note(row: sqlite3.Row) -> Note:
    return Note(
        id=row["id"],
        instance_id=row["instance_id"],
        person_id=row["person_id"],
        visibility=row["visibility"],
        text=row["text"],
        created_at=_at(row, "created_at"),
    )


def intention(row: sqlite3.Row) -> Intention:
    keys = row.keys()
    return Intention(
        id=row["id"],
        owner_instance=row["owner_instance"],
        entrance=row["entrance"],
        conversation_id=row["conversation_id"],
        person_id=row["person_id"],
        person_name=row["person_name"] if "person_name" in keys else None,
        visibility=row["visibility"],
        text=row["text"],
        subject=row["subject"],
        due_at=_maybe_at(row, "due_at"),
        duration_s=row["duration_s"],
        target_entrance=row["target_entrance"],
        status=row["status"],
        created_at=_at(row, "created_at"),
        updated_at=_at(row, "updated_at"),
    )


def conflict(row: sqlite3.Row) -> Conflict:
    return Conflict(
        id=row["id"],
        kind=row["kind"],
        intention_a=row["intention_a"],
        intention_b=row["intention_b"],
        decision_of=row["decision_of"],
        reason=row["reason"],
        subject=row["subject"],
        status=row["status"],
        choice=row["choice"],
        resolution=row["resolution"],
        note=row["note"],
        resolved_by=row["resolved_by"],
        resolved_at=_maybe_at(row, "resolved_at"),
        created_at=_at(row, "created_at"),
        surfaced_at=_maybe_at(row, "surfaced_at"),
        kept=json.loads(row["kept"]) if row["kept"] else [],
    )


def outbox_item(row: sqlite3.Row) -> OutboxItem:
    return OutboxItem(
        id=row["id"],
        entrance=row["entrance"],
        target=row["target"],
        text=row["text"],
        payload=json.loads(row["payload"]) if row["payload"] else {},
        status=row["status"],
        attempts=row["attempts"],
        dedupe_key=row["dedupe_key"],
        created_at=_at(row, "created_at"),
    )


def audit_entry(row: sqlite3.Row) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        at=_at(row, "at"),
        actor=row["actor"],
        action=row["action"],
        subject=row["subject"],
        detail=json.loads(row["detail"]) if row["detail"] else {},
    )
