"""`mirror doctor`: every check a person would otherwise debug by hand, one line each.

Config, soul, memory (through `bot.memory.health`: nothing here speaks SQL), each enabled
entrance's secret against its platform (`bot.probes`), the coordinator's private chat, the
model, the mail servers, the leases and the clock. Each line is "ok|warn|fail  check:
what was found — what to do"; the exit code is 1 when any line fails (warnings are
allowed). Unlike `mirror status` it goes to the network and may take seconds; it never
changes memory.db (it neither creates nor migrates it).
"""

from __future__ import annotations

from collections.abc import Awaitable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    _global,
    app,
    echo_json,
    fail,
    run_async,
)

if TYPE_CHECKING:
    from bot.config import Config
    from bot.memory import MemoryHealth
    from bot.probes import Finding

FREE_DISK_FAIL = 20 * 1024 * 1024
FREE_DISK_WARN = 200 * 1024 * 1024


@app.command()
def doctor(
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds each network check may take.", min=0.1)
    ] = 10.0,
    env_file: Annotated[
        Path | None,
        typer.Option(
            help="Read secrets from this file too (a service's EnvironmentFile, e.g. "
            "/etc/mirroros/env); the .env beside the config and in this folder are always read."
        ),
    ] = None,
) -> None:
    """Check everything (config, soul, memory, platforms, model, mail, clock): ok, warn or
    fail per line, with what to do. Exit 1 when anything fails."""
    if env_file is not None:
        from bot.config import environment_from_dotenv

        if not env_file.is_file():
            raise fail(f"{env_file} does not exist")
        environment_from_dotenv(env_file)
    findings = run_async(lambda: examine(config, db, within_s=timeout))
    if as_json:
        echo_json([finding.as_json() for finding in findings])
    else:
        for finding in findings:
            typer.echo(finding.line())
    if any(finding.status == "fail" for finding in findings):
        raise typer.Exit(1)


async def examine(config_path: Path | None, db: Path | None, *, within_s: float) -> list[Finding]:
    """Every check, in the order a person fixes things (a bad config stops the rest)."""
    from bot.config import ConfigError, load_config
    from bot.probes import fail, ok, warn

    try:
        cfg = load_config(config_path or _global["config"], db=db or _global["db"])
    except ConfigError as exc:
        return [
            fail("config", str(exc), "fix that key (config/mirror.example.toml shows them all)")
        ]
    findings: list[Finding] = []
    if cfg.source is None:
        findings.append(
            warn(
                "config",
                "no config file: running on the embedded defaults",
                "run `mirror setup`",
            )
        )
    else:
        findings.append(ok("config", f"{cfg.source} is valid"))

    from bot.memory import MemoryHealth, read_health

    address = cfg.coordinator.parsed
    if isinstance(cfg.memory.path, Path):
        health = read_health(
            cfg.memory.path,
            busy_timeout_ms=cfg.memory.busy_timeout_ms,
            coordinator=(address.entrance, address.external_id),
        )
    else:  # a postgresql:// URL
        health = MemoryHealth(path=Path("postgresql"), exists=True, engine="postgresql")
    soul_findings, soul_name = await _soul(cfg, health)
    findings += soul_findings
    findings += await _postgresql(str(cfg.memory.path)) if health.engine == "postgresql" else []
    findings += _memory(health)
    findings.append(_recall(cfg))
    findings += await _outside(cfg, health, soul_name, within_s)
    findings += _leases(health)
    return findings


async def _soul(cfg: Config, health: MemoryHealth) -> tuple[list[Finding], str]:
    from bot.probes import fail, ok, warn
    from bot.soul import SoulError, read_soul_file

    path = cfg.soul.path
    try:
        soul = await read_soul_file(path, cfg.soul.max_bytes)
    except SoulError as exc:
        from bot.setup_wizard import SOUL_TEMPLATE

        todo = (
            f"copy the template there (cp {SOUL_TEMPLATE} {path}) or run `mirror setup`"
            if not path.exists()
            else "fix it (soul/README.md describes the format); the last good version stays"
        )
        return [fail("soul", str(exc), todo)], "MirrorOS"
    found = [ok("soul", f"{path} is valid ({soul.name})")]
    if health.engine != "sqlite":
        pass  # not read from this engine yet
    elif health.soul_sha256 is None:
        if health.opened or not health.exists:
            found.append(
                warn(
                    "soul in memory",
                    "no version recorded yet",
                    "the first `mirror up` (or `mirror soul show`) records the file",
                )
            )
    elif health.soul_sha256 == soul.sha256:
        found.append(
            ok("soul in memory", f"the active version v{health.soul_version} is the file's")
        )
    else:
        found.append(
            warn(
                "soul in memory",
                f"the active version v{health.soul_version} differs from {path}",
                "running instances take the file within seconds; if this stays, it was "
                "rolled back in chat or its change was rejected (see the log, "
                "`mirror soul history`)",
            )
        )
    return found, soul.name


def _recall(cfg: Config) -> Finding:
    """Which recall is active (`bot.recall.describe`): by words alone is a choice or a
    missing extra, never a failure."""
    from bot import recall
    from bot.probes import ok, warn

    said = recall.describe(cfg)
    if said.startswith("FTS5 only") and cfg.recall.enabled is not False:
        return warn("recall", said, "install the recall extra for recall by meaning")
    return ok("recall", said)


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.0f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


async def _postgresql(url: str) -> list[Finding]:
    """Memory on PostgreSQL: the connection, the schema version and the LISTEN channel."""
    from bot.memory import Memory
    from bot.memory.pg_engine import redact
    from bot.probes import fail, ok, warn

    memory = Memory(url)
    try:
        found = await memory.health()
    except Exception as exc:  # the driver's many errors: one line, what to check
        return [
            fail(
                "memory",
                f"cannot reach {redact(url)}: {str(exc).splitlines()[0][:160]}",
                "check the URL (host, port, user, password, sslmode) and that the server runs",
            )
        ]
    finally:
        await memory.close()
    where = f"{found['location']} (PostgreSQL {found['server_version']})"
    findings = [ok("memory", f"{where}, reached in {found['connect_ms']:.0f} ms")]
    version, latest = found["schema_version"], found["schema_latest"]
    if version < latest:
        findings.append(
            warn("memory", f"schema {version} of {latest}", "the next `mirror up` migrates it")
        )
    elif version > latest:
        findings.append(
            fail("memory", f"schema {version} is newer than this MirrorOS ({latest})", "upgrade")
        )
    else:
        findings.append(ok("memory", f"schema {version} is current"))
    if found["listen"]:
        round_trip = found["notify_round_trip_ms"]
        findings.append(ok("memory", f"LISTEN/NOTIFY heard in {round_trip:.1f} ms"))
    else:
        findings.append(
            fail(
                "memory",
                "LISTEN/NOTIFY: no notification came back",
                "a connection pooler in transaction mode (pgbouncer) drops LISTEN: connect "
                "MirrorOS directly or in session mode",
            )
        )
    return findings


def _memory(health: MemoryHealth) -> list[Finding]:
    from bot.probes import fail, ok, warn

    path = health.path
    found: list[Finding] = []
    if health.engine != "sqlite":
        return []  # checked by _postgresql
    if not health.exists:
        if health.writable:
            found.append(
                warn("memory", f"{path} does not exist yet", "the first `mirror up` creates it")
            )
        else:
            found.append(
                fail(
                    "memory",
                    f"{path} cannot be created: {health.problem}",
                    "make the folder writable by the user running MirrorOS, or set [memory] path",
                )
            )
    elif not health.opened and health.write_problem:
        found.append(
            fail(
                "memory",
                f"cannot open {path}: {health.problem} ({health.write_problem})",
                "make it and its folder writable by the user running MirrorOS, or remount "
                "the disk read-write",
            )
        )
    elif not health.opened:
        found.append(
            fail(
                "memory",
                f"cannot open {path}: {health.problem}",
                "check [memory] path; restore memory.db from a backup if it is damaged",
            )
        )
    else:
        if health.writable:
            found.append(ok("memory", f"{path} opens and takes writes"))
        else:
            found.append(
                fail(
                    "memory",
                    f"{path} cannot be written: {health.write_problem}",
                    "make it and its folder writable by the user running MirrorOS, or "
                    "remount the disk read-write",
                )
            )
        if health.schema_version == health.schema_latest:
            found.append(ok("memory schema", f"version {health.schema_version} (the latest)"))
        elif health.schema_version < health.schema_latest:
            found.append(
                warn(
                    "memory schema",
                    f"version {health.schema_version} of {health.schema_latest}",
                    "the next start migrates it (back up memory.db first)",
                )
            )
        else:
            found.append(
                fail(
                    "memory schema",
                    f"version {health.schema_version}, newer than this MirrorOS knows "
                    f"({health.schema_latest})",
                    "run the MirrorOS that wrote it (upgrade this one)",
                )
            )
        if health.quick_check == "ok":
            found.append(ok("memory integrity", "PRAGMA quick_check: ok"))
        else:
            found.append(
                fail(
                    "memory integrity",
                    f"PRAGMA quick_check: {health.quick_check}",
                    "stop MirrorOS and restore memory.db from a backup (or try sqlite3 .recover)",
                )
            )
    if health.free_bytes is not None:
        free = f"{_size(health.free_bytes)} free beside {path}"
        if health.free_bytes < FREE_DISK_FAIL:
            found.append(fail("disk", free, "free some space: memory.db cannot grow"))
        elif health.free_bytes < FREE_DISK_WARN:
            found.append(warn("disk", free, "free some space soon"))
        else:
            found.append(ok("disk", free))
    return found


async def _outside(
    cfg: Config, health: MemoryHealth, soul_name: str, within_s: float
) -> list[Finding]:
    """The entrances against their platforms, the coordinator, the model and the clock, all
    asked at once."""
    import asyncio

    from bot import probes
    from bot.entrance import platforms
    from bot.probes import fail, ok, warn

    found: list[Finding] = []
    checks: list[Awaitable[list[Finding]]] = []
    enabled = [item for item in platforms() if cfg.entrance(item.name).enabled]

    async def single(finding: Awaitable[Finding]) -> list[Finding]:
        return [await finding]

    for item in enabled:
        settings = cfg.entrance(item.name)
        secret = item.secret() or ""
        if item.name == "telegram":
            base_url = getattr(settings, "base_url", "")
            checks.append(single(probes.telegram_identity(base_url, secret, within_s=within_s)))
        elif item.name == "discord":
            api_base = getattr(settings, "api_base", "")
            checks.append(single(probes.discord_identity(api_base, secret, within_s=within_s)))
        elif item.name == "email":
            checks.append(probes.mail_servers(settings, secret, within_s=within_s))
        elif item.secret_env is not None and not secret:
            found.append(
                fail(f"{item.name} secret", f"{item.secret_env} is not set", "set it in .env")
            )
        else:
            found.append(ok(item.name, "enabled (no live check for this entrance)"))
    checks.append(
        single(probes.model_answers(cfg.model, soul_name=soul_name, within_s=max(within_s, 30)))
    )
    for batch in await asyncio.gather(*checks):
        found.extend(batch)
    if not enabled:
        found.insert(
            0,
            warn(
                "entrances",
                "none enabled: only the terminal chat (`mirror chat`) runs",
                "run `mirror setup` to add Telegram, Discord or email",
            ),
        )
    found.append(_coordinator(cfg, health, [item.name for item in enabled]))
    found.append(
        probes.clock_skew([(item.check.split()[0], item.facts) for item in found if item.facts])
    )
    return found


def _coordinator(cfg: Config, health: MemoryHealth, enabled: list[str]) -> Finding:
    from bot.entrance import manifest
    from bot.probes import fail, ok, warn

    address = cfg.coordinator.parsed
    check = "coordinator"
    chosen = manifest(address.entrance)
    if chosen.terminal:
        if enabled:
            return warn(
                check,
                f"{address.key} is at this terminal: conflicts reach you only in `mirror chat`",
                "set [coordinator] address to your own account (`mirror setup` finds your id)",
            )
        return ok(check, f"{address.key} (this terminal)")
    if address.entrance not in enabled:
        return fail(
            check,
            f"{address.key} is on {chosen.label}, which is not enabled",
            f"enable [entrances.{address.entrance}] or choose another [coordinator] address",
        )
    if health.coordinator_dm:
        return ok(check, f"{address.key}: memory knows a private chat with them")
    if health.engine != "sqlite":
        return ok(check, f"{address.key} (whether memory knows a chat with them: not checked)")
    return warn(
        check,
        f"{address.key}: memory knows no private chat with them yet",
        f"write to the bot once from that {chosen.label} account (a bot cannot start a chat)",
    )


def _leases(health: MemoryHealth) -> list[Finding]:
    import time

    from bot.probes import ok, warn

    current = [lease for lease in health.leases if lease.expires_at > time.time()]
    if not current:
        return [ok("leases", "none held (nothing is running)")]
    found = []
    for lease in current:
        who = f"pid {lease.pid} on {lease.host}"
        if lease.running is None:
            found.append(ok(f"lease {lease.name}", f"held by {who} (another host)"))
        elif lease.running:
            found.append(ok(f"lease {lease.name}", f"held by {who}, which is running"))
        else:
            found.append(
                warn(
                    f"lease {lease.name}",
                    f"held by {who}, which is gone",
                    "the next process to start takes it over at once",
                )
            )
    return found
