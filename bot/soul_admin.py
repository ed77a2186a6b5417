"""The admins' side of the soul: show it, list its history, roll it back.

`/soul show|history|rollback N` in chat and `mirror soul …` in a shell call these. Identity
changes only through SOUL.md (the file, a rollback by an admin, the CLI); nothing a person,
a mail, another instance or the model writes changes it. The caller has checked that the
actor is an admin. Never calls the model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bot.config import Config
from bot.memory import Memory
from bot.models import SoulVersion
from bot.outcome import Outcome, invalid

if TYPE_CHECKING:
    from bot.soul import Soul

SOUL_USAGE = "Usage: /soul show | /soul history | /soul rollback VERSION"
SHOW_LIMIT = 3500


class RollbackError(Exception):
    """A soul version that cannot be made active again (the message says why)."""


async def rollback_soul(memory: Memory, config: Config, number: int, actor: str) -> SoulVersion:
    """Make soul version `number` active again (a new version, source 'rollback'), audit it,
    and write it back to SOUL.md in the same write transaction, so the file and memory agree
    and no watcher records the file's older content over it. Raises RollbackError when
    there is no such valid version, OSError when SOUL.md cannot be written (nothing changes:
    memory and this host's file stay in step)."""
    from bot.soul import SoulError, parse_soul

    old = await memory.soul_version(number)
    if old is None:
        raise RollbackError(f"There is no soul version {number}; /soul history lists them.")
    try:
        soul = parse_soul(old.text, max_bytes=max(config.soul.max_bytes, len(old.text) * 4))
    except SoulError as exc:
        raise RollbackError(f"Version {number} is not a valid soul: {exc}") from None
    version, _ = await _make_active(memory, config, soul, "rollback", actor)
    await memory.audit(actor, "soul.rollback", str(version.id), to_version=number)
    return version


async def save_soul(memory: Memory, config: Config, text: str, actor: str) -> SoulVersion:
    """Make `text` the active soul (an admin's edit in the console): validated by the same
    parser as the file, recorded as a new version (source 'chat': an admin's command, not
    the file; nothing new when it equals the active one), audited, and written to SOUL.md in
    the same write transaction, so the file stays the source every process watches. Raises
    SoulError (nothing saved, the rejection audited) when the text is not a valid soul,
    OSError when SOUL.md cannot be written (nothing saved, as with a rollback)."""
    from bot.soul import SoulError, parse_soul

    try:
        soul = parse_soul(text, max_bytes=config.soul.max_bytes)
    except SoulError as exc:
        await memory.audit(actor, "soul.rejected", "edit", reason=str(exc))
        raise
    version, created = await _make_active(memory, config, soul, "chat", actor)
    if created:
        await memory.audit(actor, "soul.edit", str(version.id), sha256=soul.sha256)
    return version


async def _make_active(
    memory: Memory, config: Config, soul: Soul, source: str, actor: str
) -> tuple[SoulVersion, bool]:
    """Record `soul` as the active version and write it to SOUL.md, in one write
    transaction (`record_soul_version(inside=…)`): both change, or neither."""
    from bot.soul import write_soul_file

    return await memory.record_soul_version(
        text=soul.text,
        name=soul.name,
        sha256=soul.sha256,
        source=source,
        author=actor,
        inside=lambda: write_soul_file(config.soul.path, soul.text),
    )


async def soul_command(memory: Memory, config: Config, args: list[str], actor: str) -> Outcome:
    """/soul show | history | rollback VERSION, for an actor already known to be an admin."""
    sub = args[0].lower() if args else ""
    if sub == "show":
        version = await memory.active_soul()
        if version is None:
            return invalid("There is no valid soul yet.")
        text = version.text
        if len(text) > SHOW_LIMIT:
            text = text[:SHOW_LIMIT] + "\n[… the rest is in SOUL.md]"
        return Outcome(
            f"Soul v{version.id} · {version.name} · sha256:{version.sha256[:12]}\n\n{text}"
        )
    if sub == "history":
        versions = await memory.soul_history(limit=10)
        if not versions:
            return invalid("There is no soul version yet.")
        return Outcome(
            "\n".join(
                f"v{v.id} {v.created_at:%Y-%m-%d %H:%M} {v.source} {v.name}"
                + (f" (by {v.author})" if v.author else "")
                for v in versions
            )
        )
    if sub == "rollback":
        if len(args) < 2 or not args[1].lstrip("v").isdigit():
            return invalid("Usage: /soul rollback VERSION (/soul history lists them)")
        number = int(args[1].lstrip("v"))
        try:
            version = await rollback_soul(memory, config, number, actor)
        except RollbackError as exc:
            return invalid(str(exc))
        except OSError as exc:
            return invalid(f"Nothing changed: I could not write SOUL.md: {exc}")
        return Outcome(
            f"Soul version {version.id} is active ({version.name}, from version {number}); "
            "every instance speaks with it from its next turn.",
            changed=True,
        )
    return invalid(SOUL_USAGE)
