"""Running the persona: `mirror chat`, `mirror up`, `mirror run`, `mirror scheduler`,
`mirror entrances`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bot.cli import common
from bot.cli.common import (
    ConfigOption,
    DbOption,
    JsonOption,
    app,
    echo_json,
    fail,
    get_config,
    log_settings,
    quiet_terminal,
    run_async,
    run_service,
)
from bot.config import Config

if TYPE_CHECKING:
    pass


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
    chat: Annotated[
        bool,
        typer.Option(
            "--chat",
            help="With no entrance to run, chat on stdin even when it is not a terminal "
            "(scripts, tests).",
        ),
    ] = False,
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """Run the persona: one supervised process per configured entrance, plus the scheduler.

    With no other entrance configured, the terminal entrance runs in this terminal. Not in
    a terminal (a service: stdin is /dev/null), having nothing to run is a failure: one
    line, exit code 1, so that `Restart=on-failure` and the operator notice.

    Example: `mirror --config /etc/mirroros/mirror.toml up`
    """
    cfg = get_config(config, db)
    from bot.entrance import platforms
    from bot.supervisor import ChildSpec, Supervisor, exec_lean, mirror_argv

    flags = []
    if cfg.source is not None:
        flags += ["--config", str(cfg.source)]
    if cfg.memory.engine == "postgresql":
        # Through the environment, which children inherit: a URL's password never shows
        # in `ps`.
        import os

        os.environ["MIRROR_DB"] = str(cfg.memory.path)
    else:
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
    from bot.cli.console import console_children

    if runnable:
        for line in skipped:
            typer.echo(line, err=True)
        specs += console_children(cfg, flags)  # [console] enabled: its sign-in link is printed
        typer.echo(f"running {', '.join(runnable)} and the scheduler; Ctrl-C stops them", err=True)
        from bot import recall

        if recall.active(cfg.recall):  # the scheduler embeds and searches for the entrances
            import os

            from bot.recall_host import SOCKET_ENV, new_socket_path

            os.environ.setdefault(SOCKET_ENV, new_socket_path())
        if common.own_process:  # not a test's CliRunner: the supervisor sheds typer & co
            exec_lean(specs, log_settings(cfg))
        logger = quiet_terminal(cfg, service=True)
        supervisor = Supervisor(specs, logger=logger)
        run_service(supervisor)
        if supervisor.nothing_running:  # every entrance given up: not healthy, say why
            raise fail(supervisor.nothing_running, code=1)
        return

    if not chat and not sys.stdin.isatty():
        for line in skipped:
            typer.echo(line, err=True)
        where = cfg.source or "the embedded defaults"
        raise fail(
            f"nothing to run: no entrance is enabled with its secret set in {where}, and "
            "stdin is not a terminal (so no terminal chat); see `mirror entrances`",
            code=1,
        )
    chat_entrance = _terminal_chat(cfg, instance=None, person=person)
    logger = quiet_terminal(cfg, chat_entrance)
    # After the log has gone to its file: the console's link opens memory (and may migrate
    # it), whose INFO lines must not land in the chat.
    specs += console_children(cfg, flags)
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
    # The same as a supervised child's `mirror run` without Typer (bot/cli/child.py).
    from bot.cli.child import run_child

    common.run_child_command(
        lambda: run_child(
            entrance,
            standby=standby,
            config=config or common.global_option("config"),
            db=db or common.global_option("db"),
        )
    )


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
            else "runs inside the console: mirror console"
            if found.hosted
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
