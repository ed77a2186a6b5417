"""The `mirror` command.

Must start fast: nothing here imports litellm or a platform SDK at module level; commands
that need them import lazily. Config and memory problems become one line on stderr and
exit code 2, never a traceback. The log goes to stderr, except for `chat` and `up` in a
terminal: there it goes to a rotating file ([logging] path) and only warnings and errors
reach the screen, above the prompt. Help texts are rich markup: escape a literal `[`.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")  # no scan of every package

import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import typer

from bot.config import Config, ConfigError, load_config

if TYPE_CHECKING:
    from bot.outcome import Outcome

T = TypeVar("T")

app = typer.Typer(
    name="mirror",
    help="MirrorOS: one persona at many entrances (`mirror entrances`), sharing one memory.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
soul_app = typer.Typer(
    help="The persona's identity (SOUL.md) and its versions.", no_args_is_help=True
)
memory_app = typer.Typer(help="Look into memory.db.", no_args_is_help=True)
pair_app = typer.Typer(
    help="Pairing: let in people who asked for it (entrances with policy 'pairing').",
    no_args_is_help=True,
)
app.add_typer(soul_app, name="soul")
app.add_typer(memory_app, name="memory")
app.add_typer(pair_app, name="pair")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="Config file (default: $MIRROR_CONFIG or config/mirror.toml)."
    ),
]
DbOption = Annotated[
    Path | None,
    typer.Option("--db", help=r"memory.db path (default: $MIRROR_DB or \[memory] path)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

_global: dict[str, Path | None] = {"config": None, "db": None}
_verbose = False
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            found = version("mirroros")
        except PackageNotFoundError:  # run from a checkout that was never installed
            found = "unknown (not installed)"
        typer.echo(f"mirror (MirrorOS) {found}")
        raise typer.Exit()


@app.callback()
def _main_options(
    config: ConfigOption = None,
    db: DbOption = None,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Log DEBUG lines too (in a terminal chat, show INFO lines on screen too).",
        ),
    ] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True
        ),
    ] = False,
) -> None:
    global _verbose
    _global["config"], _global["db"] = config, db
    _verbose = verbose
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT, stream=sys.stderr
    )


class _AbovePrompt(logging.Handler):
    """Log records for a person at a terminal: one short line each, on stderr, above the
    chat's prompt when there is one (the details are in the log file)."""

    def __init__(self, log_file: Path, terminal: Any | None) -> None:
        super().__init__()
        self.log_file = log_file
        self.terminal = terminal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname.lower()}: {record.getMessage()}"
            if record.exc_info:
                text += f" (details in {self.log_file})"
            if self.terminal is not None:
                self.terminal.above_prompt(text)
            else:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


def quiet_terminal(cfg: Config, terminal: Any | None = None) -> logging.Logger | None:
    """When stdin is a terminal: log to the rotating [logging] path file, and show only
    warnings and errors (with -v, INFO too) on screen, above `terminal`'s prompt.

    Returns the logger a supervisor should send its children's lines to (None when nothing
    changed: not a terminal, or the log file cannot be opened, which is said once)."""
    if not sys.stdin.isatty():
        return None
    from logging.handlers import RotatingFileHandler

    path = cfg.logging.path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = RotatingFileHandler(
            path,
            maxBytes=cfg.logging.max_bytes,
            backupCount=cfg.logging.backups,
            encoding="utf-8",
        )
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "cannot write the log to %s (%s); logging here", path, exc.strerror or exc
        )
        return None
    to_file.setFormatter(logging.Formatter(LOG_FORMAT))
    on_screen = _AbovePrompt(path, terminal)
    on_screen.setLevel(logging.INFO if _verbose else logging.WARNING)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.addHandler(to_file)
    root.addHandler(on_screen)
    return logging.getLogger("bot.supervisor")


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"mirror: {message}", err=True)
    return typer.Exit(code)


def get_config(config: Path | None, db: Path | None) -> Config:
    try:
        return load_config(config or _global["config"], db=db or _global["db"])
    except ConfigError as exc:
        raise fail(f"config error: {exc}") from None


def run_async(factory: Callable[[], Awaitable[T]]) -> T:
    import asyncio

    from bot.memory import MemoryDbError

    try:
        return asyncio.run(factory())  # type: ignore[arg-type]
    except (MemoryDbError, CommandError) as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


class Service(Protocol):
    async def run(self) -> None: ...

    def request_stop(self) -> None: ...


def run_service(service: Service) -> None:
    """Run an entrance or the scheduler until it ends or SIGINT/SIGTERM/SIGHUP asks it to stop.

    A stop request lets the current turn finish; a second SIGINT/SIGTERM cancels at once.
    """

    import asyncio

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        requested = False

        def on_signal() -> None:
            nonlocal requested
            if requested and task is not None:
                task.cancel()
            requested = True
            service.request_stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        # Closing the terminal (SIGHUP) stops like a first SIGTERM: the turn finishes, children
        # and leases are let go. It never hurries the stop: a supervised child gets it once
        # per reparenting after its supervisor died (bot/supervisor.py). Under nohup, SIGHUP
        # stays ignored.
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            loop.add_signal_handler(signal.SIGHUP, service.request_stop)
        try:
            await service.run()
        except asyncio.CancelledError:
            if not requested:
                raise

    run_async(main)


async def open_memory(config: Config) -> Any:
    from bot.memory import Memory

    memory = Memory(config.memory.path, busy_timeout_ms=config.memory.busy_timeout_ms)
    await memory.open()
    return memory


def with_memory(cfg: Config, action: Callable[[Any], Awaitable[T]]) -> T:
    """Open memory.db, run `action(memory)`, close it: one short command's database work."""

    async def go() -> T:
        memory = await open_memory(cfg)
        try:
            return await action(memory)
        finally:
            await memory.close()

    return run_async(go)


def echo_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


# status ----------------------------------------------------------------------------------


@app.command()
def status(config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Memory, soul, instances and what is pending."""
    cfg = get_config(config, db)
    # No event loop and no aiosqlite: this is the command people run to see if all is well,
    # and it should answer at once (bench/startup.py measures it).
    from bot.memory import MemoryDbError
    from bot.memory.snapshot import read_status

    try:
        report = read_status(
            cfg.memory.path,
            cfg.persona.instance_dead_after_s,
            busy_timeout_ms=cfg.memory.busy_timeout_ms,
        )
    except MemoryDbError as exc:
        raise fail(str(exc)) from None
    if as_json:
        data = report.model_dump(mode="json")
        if data["soul"]:
            data["soul"].pop("text")
        echo_json(data)
        return
    soul = report.soul
    typer.echo(f"memory      {report.memory_path} (schema {report.schema_version})")
    typer.echo(
        f"soul        {f'v{soul.id} {soul.name} sha256:{soul.sha256[:12]}' if soul else 'none'}"
    )
    typer.echo(f"messages    {report.messages}")
    typer.echo(f"intentions  {report.open_intentions} open")
    typer.echo(f"conflicts   {report.open_conflicts} open")
    typer.echo(f"outbox      {report.pending_outbox} pending")
    typer.echo("instances" + ("   none" if not report.instances else ""))
    for item in report.instances:
        state = "alive" if report.alive[item.id] else item.status
        typer.echo(
            f"  {item.id:<14} {item.entrance:<9} {state:<7} last seen "
            f"{item.last_seen:%Y-%m-%d %H:%M:%S} UTC (pid {item.pid} on {item.host})"
        )


# soul ------------------------------------------------------------------------------------


@soul_app.command("show")
def soul_show(
    config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Print the active soul version."""
    cfg = get_config(config, db)

    async def go() -> None:
        from bot.soul import sync_soul_file

        memory = await open_memory(cfg)
        try:
            version = await sync_soul_file(memory, cfg.soul.path, max_bytes=cfg.soul.max_bytes)
        finally:
            await memory.close()
        if version is None:
            raise CommandError(f"no valid soul yet: check {cfg.soul.path}")
        if as_json:
            echo_json(version.model_dump(mode="json"))
        else:
            typer.echo(f"# version {version.id} · {version.name} · sha256:{version.sha256[:12]}")
            typer.echo(version.text)

    run_async(go)


@soul_app.command("history")
def soul_history(
    config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Every soul version, newest first."""
    cfg = get_config(config, db)

    versions = with_memory(cfg, lambda memory: memory.soul_history())
    if as_json:
        echo_json([v.model_dump(mode="json", exclude={"text"}) for v in versions])
        return
    for v in versions:
        typer.echo(
            f"{v.id:>4}  {v.created_at:%Y-%m-%d %H:%M:%S}  {v.source:<8} "
            f"sha256:{v.sha256[:12]}  {v.name}"
        )


@soul_app.command("diff")
def soul_diff(a: int, b: int, config: ConfigOption = None, db: DbOption = None) -> None:
    """Unified diff between two soul versions."""
    cfg = get_config(config, db)

    async def go() -> None:
        memory = await open_memory(cfg)
        try:
            first, second = await memory.soul_version(a), await memory.soul_version(b)
        finally:
            await memory.close()
        for number, version in ((a, first), (b, second)):
            if version is None:
                raise CommandError(f"no soul version {number}")
        assert first and second
        import difflib

        lines = difflib.unified_diff(
            first.text.splitlines(keepends=True),
            second.text.splitlines(keepends=True),
            fromfile=f"version {a}",
            tofile=f"version {b}",
        )
        typer.echo("".join(lines), nl=False)

    run_async(go)


@soul_app.command("rollback")
def soul_rollback(
    version_id: int,
    config: ConfigOption = None,
    db: DbOption = None,
    author: Annotated[str, typer.Option(help="Who rolls back (audited).")] = "cli",
) -> None:
    """Make an earlier version active again and write it back to SOUL.md."""
    cfg = get_config(config, db)

    async def go() -> None:
        from bot.soul_admin import RollbackError, rollback_soul

        memory = await open_memory(cfg)
        try:
            version = await rollback_soul(memory, cfg, version_id, author)
        except RollbackError as exc:
            raise CommandError(str(exc)) from None
        except OSError as exc:
            raise CommandError(f"the version is active; SOUL.md not written: {exc}") from None
        finally:
            await memory.close()
        typer.echo(
            f"soul version {version.id} is active ({version.name}, from version {version_id})"
        )

    run_async(go)


@soul_app.command("check")
def soul_check(file: Path) -> None:
    """Validate a SOUL.md without recording it (exit 0 valid, 2 invalid)."""
    from bot.soul import SoulError, parse_soul

    try:
        soul = parse_soul(file.read_bytes())
    except OSError as exc:
        raise fail(f"{file}: {exc.strerror}") from None
    except SoulError as exc:
        raise fail(f"{file}: invalid: {exc}") from None
    typer.echo(f"{file}: valid soul '{soul.name}' ({len(soul.sections)} sections)")


# memory ----------------------------------------------------------------------------------


def _message_line(message: Any) -> str:
    arrow = "<-" if message.direction == "in" else "->"
    who = message.person_name or "-"
    soul = f" soul v{message.soul_version}" if message.soul_version else ""
    return (
        f"{message.id:>6} {message.created_at:%Y-%m-%d %H:%M:%S} {message.entrance}/"
        f"{message.instance_id} {arrow} {who}{soul}: {message.text}"
    )


@memory_app.command("search")
def memory_search(
    text: str,
    config: ConfigOption = None,
    db: DbOption = None,
    limit: int = 20,
    as_json: JsonOption = False,
) -> None:
    """Full-text search over every message (newest first)."""
    cfg = get_config(config, db)

    found = with_memory(cfg, lambda memory: memory.search_messages(text, limit=limit))
    if as_json:
        echo_json([m.model_dump(mode="json") for m in found])
    else:
        for message in found:
            typer.echo(_message_line(message))


@memory_app.command("log")
def memory_log(
    config: ConfigOption = None,
    db: DbOption = None,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    as_json: JsonOption = False,
) -> None:
    """The latest messages with entrance, instance, direction, person and soul version."""
    cfg = get_config(config, db)

    found = with_memory(cfg, lambda memory: memory.message_log(limit))
    if as_json:
        echo_json([m.model_dump(mode="json") for m in found])
    else:
        for message in reversed(found):
            typer.echo(_message_line(message))


@memory_app.command("why")
def memory_why(
    message_id: int, config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Why a reply said what it said: soul version, model, and the memory rows it used."""
    cfg = get_config(config, db)

    async def go() -> None:
        memory = await open_memory(cfg)
        try:
            found = await memory.provenance(message_id)
            message = await memory.message(message_id)
        finally:
            await memory.close()
        if found is None or message is None:
            raise CommandError(f"no message {message_id}")
        if as_json:
            echo_json(
                {
                    "message_id": found.message_id,
                    "direction": message.direction,
                    "text": message.text,
                    "soul_version": found.soul_version,
                    "model": found.model,
                    "context": [{"kind": kind, "id": row_id} for kind, row_id in found.rows],
                }
            )
            return
        typer.echo(_message_line(message))
        typer.echo(f"soul version  {found.soul_version or '-'}")
        typer.echo(f"model         {found.model or '-'}")
        typer.echo(f"context rows  {len(found.rows)}")
        for kind, row_id in found.rows:
            typer.echo(f"  {kind} {row_id}")

    run_async(go)


# entrances -------------------------------------------------------------------------------

TERMINAL_BANNER = """MirrorOS is running on this terminal (entrance '{entrance}', instance \
'{instance}').
Say hello, ask "what is your name?", or ask for something on Friday at 3pm.{roles}
Another instance of the same persona, in a second terminal:
    .venv/bin/mirror chat --instance desk --as {person}
{platforms}: set enabled = true under [entrances.*] in {config_file}
and {secrets} (see README.md)."""
# Who you are in a terminal chat unless --as says otherwise; the shipped config makes this
# person the coordinator and an admin.
LOCAL_PERSON = "you"


def _roles_line(cfg: Config, account: str) -> str:
    """The banner's line on what this terminal's person may do, when they are more than a
    guest."""
    if cfg.coordinator.address == account:
        return (
            "\nYou are the coordinator and an admin here: /pending, /resolve and "
            "/soul show|history|rollback work in this chat."
        )
    if account in cfg.access.admins:
        return "\nYou are an admin here: /soul show|history|rollback work in this chat."
    return ""


def _terminal_chat(cfg: Config, *, instance: str | None, person: str, jsonl: bool = False) -> Any:
    """The terminal entrance's runtime, ready to run in this process."""
    from bot.accounts import AccountRef
    from bot.entrance import platforms, runtime_class, terminal

    entrance = terminal()
    labels = [found.label for found in platforms()]
    instance = instance or entrance.name
    banner = TERMINAL_BANNER.format(
        entrance=entrance.name,
        instance=instance,
        person=person,
        roles=_roles_line(cfg, AccountRef.of(entrance.name, person).key),
        config_file=cfg.source or "a config file (--config)",
        platforms=" and ".join(filter(None, [", ".join(labels[:-1]), *labels[-1:]])),
        secrets=" / ".join(found.secret_env for found in platforms() if found.secret_env),
    )
    return runtime_class(entrance.name)(
        cfg, instance_id=instance, person=person, jsonl=jsonl, banner=banner
    )


@app.command()
def chat(
    instance: Annotated[
        str | None,
        typer.Option("--instance", "-i", help="This instance's name (default: the entrance's)."),
    ] = None,
    person: Annotated[str, typer.Option("--as", help="Who you are in this chat.")] = LOCAL_PERSON,
    jsonl: Annotated[
        bool, typer.Option("--jsonl", help="One JSON object per output line.")
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Talk with the persona in this terminal: a full instance of the terminal entrance."""
    cfg = get_config(config, db)
    terminal = _terminal_chat(cfg, instance=instance, person=person, jsonl=jsonl)
    quiet_terminal(cfg, terminal)
    run_service(terminal)


def _why_not_runnable(cfg: Config, name: str) -> str | None:
    """Why `mirror up` would skip this entrance (what to set), or None when it can run."""
    from bot.entrance import manifest

    found = manifest(name)
    if not cfg.entrance(name).enabled:
        return f"set [entrances.{name}] enabled = true"
    if found.secret_env is not None and not found.secret():
        return f"set {found.secret_env}"
    return None


@app.command()
def up(
    person: Annotated[
        str, typer.Option("--as", help="Who you are in the terminal chat.")
    ] = LOCAL_PERSON,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Run the persona: one supervised process per configured entrance, plus the scheduler.

    With no other entrance configured, the terminal entrance runs in this terminal.
    """
    cfg = get_config(config, db)
    from bot.entrance import platforms
    from bot.supervisor import ChildSpec, Supervisor, mirror_argv

    flags = []
    if cfg.source is not None:
        flags += ["--config", str(cfg.source)]
    flags += ["--db", str(cfg.memory.path)]
    runnable, skipped = [], []
    for found in platforms():
        why_not = _why_not_runnable(cfg, found.name)
        if why_not is None:
            runnable.append(found.name)
        else:
            skipped.append(f"skipping {found.name}: {why_not}")
    specs = [
        ChildSpec(
            name,
            mirror_argv("run", name, *flags),
            restart_argv=mirror_argv("run", name, "--standby", *flags),
        )
        for name in runnable
    ]
    specs.append(ChildSpec("scheduler", mirror_argv("run", "scheduler", *flags), entrance=False))
    if runnable:
        for line in skipped:
            typer.echo(line, err=True)
        supervisor = Supervisor(specs, logger=quiet_terminal(cfg))
        typer.echo(f"running {', '.join(runnable)} and the scheduler; Ctrl-C stops them", err=True)
        run_service(supervisor)
        if supervisor.nothing_running:  # every entrance given up: not healthy, say why
            raise fail(supervisor.nothing_running, code=1)
        return

    chat_entrance = _terminal_chat(cfg, instance=None, person=person)
    logger = quiet_terminal(cfg, chat_entrance)
    for line in skipped:  # in a terminal the banner says how to set the others up
        if logger is None:
            typer.echo(line, err=True)
        else:
            logger.info("%s", line)
    supervisor = Supervisor(specs, logger=logger)

    class TerminalWithScheduler:
        """The terminal chat in the foreground, the supervised scheduler beside it."""

        async def run(self) -> None:
            import asyncio

            beside = asyncio.create_task(supervisor.run())
            try:
                await chat_entrance.run()
            finally:
                supervisor.request_stop()
                await beside

        def request_stop(self) -> None:
            chat_entrance.request_stop()

    run_service(TerminalWithScheduler())


@app.command("run")
def run_entrance(
    entrance: Annotated[
        str, typer.Argument(help="An entrance (see `mirror entrances`), or scheduler.")
    ],
    standby: Annotated[
        bool, typer.Option(help="If the entrance is already running, wait to take over.")
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Run one entrance (or the scheduler) as this process."""
    cfg = get_config(config, db)
    cfg.standby = standby
    if entrance == "scheduler":
        from bot.scheduler import Scheduler

        run_service(Scheduler(cfg))
        return
    from bot.entrance import EntranceFailure, UnknownEntrance, load_entrance, manifest

    try:
        found = manifest(entrance)
    except UnknownEntrance as exc:
        raise fail(f"{exc}, scheduler") from None
    if found.terminal:
        raise fail(f"the {entrance} entrance runs in a terminal: use `mirror chat`")
    secret = found.secret() if found.secret_env is not None else ""
    if not secret:
        raise fail(f"{entrance}: set {found.secret_env} in the environment or .env")
    try:
        service = load_entrance(entrance, cfg, secret)
        run_service(service)
    except EntranceFailure as exc:
        raise fail(f"{entrance}: {exc}") from None


@app.command()
def entrances(
    config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """The entrances this MirrorOS knows (its registry), and whether each can run."""
    cfg = get_config(config, db)
    from bot.entrance import manifests

    rows = []
    for found in manifests().values():
        why_not = (
            "runs in a terminal: mirror chat"
            if found.terminal
            else _why_not_runnable(cfg, found.name)
        )
        rows.append(
            {
                "name": found.name,
                "label": found.label,
                "enabled": cfg.entrance(found.name).enabled,
                "secret_env": found.secret_env,
                "ready": why_not is None,
                "why_not": why_not,
                "message_limit": found.message_limit,
                "capabilities": sorted(found.capabilities),
                "runtime": found.runtime,
            }
        )
    if as_json:
        echo_json(rows)
        return
    for row in rows:
        state = "ready" if row["ready"] else str(row["why_not"])
        typer.echo(f"{row['name']:<10} {row['label']:<10} {state}")


@app.command("scheduler")
def scheduler_command(
    once: Annotated[bool, typer.Option("--once", help="Run one tick and exit.")] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """The scheduler: `--once` runs one tick and prints what it did."""
    cfg = get_config(config, db)
    from bot.scheduler import Scheduler

    if not once:
        run_service(Scheduler(cfg))
        return

    async def go() -> None:
        scheduler = Scheduler(cfg, name="scheduler-once")
        await scheduler.open()
        try:
            report = await scheduler.tick()
        finally:
            await scheduler.close()
        typer.echo(report.summary())

    run_async(go)


# coordinator -----------------------------------------------------------------------------


def _coordinator_command(cfg: Config, name: str, args: list[str]) -> None:
    async def go() -> None:
        from bot.commands import Command, Commands
        from bot.speaker import operator

        memory = await open_memory(cfg)
        try:
            outcome = await Commands(memory, cfg).run(operator(), Command(name, args))
        finally:
            await memory.close()
        assert outcome is not None  # a declared command
        typer.echo(outcome.text)
        if not outcome.ok:
            raise typer.Exit(2)

    run_async(go)


@app.command()
def pending(config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Items waiting for the coordinator."""
    cfg = get_config(config, db)
    if not as_json:
        _coordinator_command(cfg, "pending", [])
        return

    items = with_memory(cfg, lambda memory: memory.pending_items())
    echo_json([item.model_dump(mode="json") for item in items])


@app.command()
def resolve(
    item_id: int,
    choice: Annotated[str, typer.Argument(help="A, B, both, neither, approve, deny, or words.")],
    note: Annotated[str | None, typer.Option(help="A note kept with the decision.")] = None,
    notify: Annotated[bool, typer.Option(help="Tell each affected person.")] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Decide an item as the coordinator."""
    cfg = get_config(config, db)
    args = (
        [str(item_id), choice] + (note.split() if note else []) + (["--notify"] if notify else [])
    )
    _coordinator_command(cfg, "resolve", args)


@app.command()
def dismiss(item_id: int, config: ConfigOption = None, db: DbOption = None) -> None:
    """Close an item without a decision."""
    _coordinator_command(get_config(config, db), "dismiss", [str(item_id)])


def _upcoming_json(item: Any, timezone: str) -> dict[str, Any]:
    from datetime import UTC, datetime

    from bot.reminders import local_time

    due = item.due_at
    return {
        "id": item.id,
        "kind": item.kind,
        "text": item.text,
        "status": item.status,
        "due_at": datetime.fromtimestamp(due, UTC).isoformat() if due is not None else None,
        "due_local": local_time(due, timezone) if due is not None else None,
        "timezone": timezone,
        "recurring": item.recurring,
        "entrance": item.entrance,
        "owner_instance": item.owner_instance,
        "person_id": item.person_id,
        "person_name": item.person_name,
    }


@app.command()
def intentions(
    status: Annotated[str | None, typer.Option(help="open, done, conflicted, …")] = None,
    due: Annotated[
        bool,
        typer.Option(
            "--due",
            help="What falls due next, soonest first, in each person's local time.",
        ),
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The persona's intentions across every instance."""
    cfg = get_config(config, db)

    if due:
        coming = with_memory(cfg, lambda memory: memory.due_intentions())
        rows = [_upcoming_json(item, item.timezone or cfg.persona.timezone) for item in coming]
        if as_json:
            echo_json(rows)
            return
        if not rows:
            typer.echo("nothing falls due")
        for row in rows:
            who = f" for {row['person_name']}" if row["person_name"] else ""
            repeats = " (repeats)" if row["recurring"] else ""
            typer.echo(
                f"{row['id']:>5} {row['due_local']}  {row['kind']}{who} on {row['entrance']}: "
                f"{row['text']}{repeats}"
            )
        return
    found = with_memory(cfg, lambda memory: memory.intentions(status))
    if as_json:
        echo_json([item.model_dump(mode="json") for item in found])
        return
    for item in found:
        when = f" due {item.due_at:%Y-%m-%d %H:%M} UTC" if item.due_at else ""
        target = f" -> {item.target_entrance}" if item.target_entrance else ""
        typer.echo(
            f"{item.id:>5} [{item.status}] {item.owner_instance}/{item.entrance} "
            f"'{item.subject}': {item.text}{when}{target}"
        )


@app.command()
def remind(
    account: Annotated[str, typer.Argument(help="Who to remind, ENTRANCE:ID.")],
    text: Annotated[str, typer.Argument(help="What to remind them of.")],
    at: Annotated[
        str,
        typer.Option(
            "--at", help=r'When, in words ("tomorrow 9:00", "in 2 hours"), in \[persona] timezone.'
        ),
    ],
    config: ConfigOption = None,
    db: DbOption = None,
    actor: Annotated[str, typer.Option("--as", help="Who sets it (audited).")] = "cli",
    as_json: JsonOption = False,
) -> None:
    """Remind someone of something, in their private chat on that entrance."""
    cfg = get_config(config, db)
    from bot.accounts import AccountRef

    try:
        ref = AccountRef.parse(account)
    except ValueError as exc:
        raise fail(str(exc)) from None
    if not text.strip():
        raise fail("say what to remind them of")
    timezone = cfg.persona.timezone
    import dateparser

    when = dateparser.parse(
        at,
        settings={
            "TIMEZONE": timezone,
            "TO_TIMEZONE": "UTC",
            "RETURN_AS_TIMEZONE_AWARE": True,
            "PREFER_DATES_FROM": "future",
        },
    )
    if when is None:
        raise fail(f'I can\'t read the time {at!r}; try "tomorrow 9:00" or "2026-12-24 18:00"')
    due_at = when.timestamp()

    async def store(memory: Any) -> int:
        from bot.memory import ReminderError

        try:
            return int(
                await memory.add_reminder(
                    ref.entrance, ref.external_id, text.strip(), due_at, actor=actor
                )
            )
        except ReminderError as exc:
            raise CommandError(str(exc)) from None

    intention_id = with_memory(cfg, store)
    from bot.reminders import local_time

    if as_json:
        echo_json(
            {
                "id": intention_id,
                "account": ref.key,
                "text": text.strip(),
                "due_at": when.isoformat(),
                "due_local": local_time(due_at, timezone),
            }
        )
        return
    typer.echo(f"reminder #{intention_id} for {ref.key} at {local_time(due_at, timezone)}")


@app.command()
def conflicts(
    config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Conflicts and requests, with their decisions."""
    cfg = get_config(config, db)

    found = with_memory(cfg, lambda memory: memory.conflicts())
    if as_json:
        echo_json([item.model_dump(mode="json") for item in found])
        return
    for item in found:
        decided = f" -> {item.resolution}" if item.resolution else ""
        typer.echo(
            f"{item.id:>5} {item.kind} [{item.status}] '{item.subject}': {item.reason}{decided}"
        )


# people: pairing and identity links -------------------------------------------------------

ActorOption = Annotated[str, typer.Option("--as", help="Who does it (audited).")]


def _people_command(cfg: Config, action: Callable[[Any], Awaitable[Outcome]]) -> None:
    """Run one of bot.people's actions; exit 2 unless its outcome is ok."""

    try:
        outcome = with_memory(cfg, action)
    except ValueError as exc:  # a bad ENTRANCE:ID
        raise fail(str(exc)) from None
    typer.echo(outcome.text)
    if not outcome.ok:
        raise typer.Exit(2)


@pair_app.command("approve")
def pair_approve(
    code: str, config: ConfigOption = None, db: DbOption = None, actor: ActorOption = "cli"
) -> None:
    """Let in the account that was given CODE (it is told on its entrance)."""
    from bot.people import approve_pairing

    cfg = get_config(config, db)
    _people_command(cfg, lambda memory: approve_pairing(memory, code, actor))


@pair_app.command("list")
def pair_list(
    config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False
) -> None:
    """Pairing codes waiting for approval."""
    cfg = get_config(config, db)

    from bot.people import pending_pairings

    found = with_memory(cfg, pending_pairings)
    if as_json:
        echo_json([vars(item) for item in found])
        return
    if not found:
        typer.echo("no pairing request is waiting")
    for item in found:
        minutes = max(0, round((item.expires_at - time.time()) / 60))
        name = f" ({item.display_name})" if item.display_name else ""
        typer.echo(f"{item.code}  {item.account}{name}  expires in {minutes} min")


@app.command()
def people(config: ConfigOption = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Everyone the persona knows, with their linked accounts."""
    cfg = get_config(config, db)

    from bot.people import list_people

    found = with_memory(cfg, list_people)
    if as_json:
        echo_json([person.model_dump(mode="json") for person in found])
        return
    for person in found:
        typer.echo(f"{person.id:>5} {person.name}: {', '.join(person.identities)}")


@app.command()
def link(
    first: Annotated[str, typer.Argument(help="An account, ENTRANCE:ID.")],
    second: Annotated[str, typer.Argument(help="Another account, ENTRANCE:ID.")],
    config: ConfigOption = None,
    db: DbOption = None,
    actor: ActorOption = "cli",
) -> None:
    """Link two accounts to one person (privacy follows: each sees the other's DMs)."""
    from bot.people import link_accounts

    cfg = get_config(config, db)
    _people_command(cfg, lambda memory: link_accounts(memory, first, second, actor))


@app.command()
def unlink(
    account: Annotated[str, typer.Argument(help="ENTRANCE:ID")],
    config: ConfigOption = None,
    db: DbOption = None,
    actor: ActorOption = "cli",
) -> None:
    """Give an account a person of its own again."""
    from bot.people import unlink_account

    cfg = get_config(config, db)
    _people_command(cfg, lambda memory: unlink_account(memory, account, actor))


# backup ----------------------------------------------------------------------------------


@app.command()
def backup(path: Path, config: ConfigOption = None, db: DbOption = None) -> None:
    """Copy memory.db with SQLite's online backup API (safe while others write)."""
    cfg = get_config(config, db)
    if path.exists():
        raise fail(f"{path} exists; choose a new file")

    with_memory(cfg, lambda memory: memory.backup(path))
    typer.echo(f"backed up {cfg.memory.path} to {path}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
