"""What every `mirror` command shares: the Typer app, the global options, config and
memory helpers, service running and the terminal's quiet logging.

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
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol, TypeVar

import typer

if TYPE_CHECKING:
    from bot.config import Config

T = TypeVar("T")


def _flag_type_hidden() -> None:
    """Typer 0.29's help shows `<bool>` beside every flag (--json, --help), which reads as
    if the flag took a value; show nothing there, as click does. A flag with its own
    metavar keeps it. Patched here because Typer has no setting for it."""
    from typer.core import TyperOption

    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag and self.metavar is None else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flag_type_hidden()


def _plain_values_without_pydantic() -> None:
    """Typer 0.29 turns each option's value into its type through a pydantic TypeAdapter
    built on first use, even for an option that was not given, and building the first one
    imports pydantic's whole schema machinery: as much time as all the rest of `mirror
    status`. So build it only when needed: an absent value is None (or () for a multiple
    option) as Typer makes it, a text for a `str` stays that text and a text naming a
    `Path` (no parser, no path checks asked for) is checked as Typer checks it, all without
    pydantic; anything else, and any value the plain way refuses, goes to Typer's own
    adapter, so results and error messages stay Typer's. Nothing is patched when Typer's
    internals are not the ones this was written for."""
    try:
        from typer import core
        from typer._param_types import coerce_cli_path
        from typer.models import ParameterInfo

        build = core.build_runtime_param
        defaults = ParameterInfo()
    except (ImportError, AttributeError, TypeError):
        return
    path_checks = "exists file_okay dir_okay writable readable resolve_path allow_dash path_type"

    def plain_kind(descriptor: Any) -> str | None:
        info = descriptor.parameter_info
        if descriptor.file_annotation is not None or info.parser is not None:
            return None
        if descriptor.annotation is str:
            return "str"
        if descriptor.annotation is Path and all(
            getattr(info, name) == getattr(defaults, name) for name in path_checks.split()
        ):
            return "path"
        return None

    class OnDemand:
        """The runtime coercion of one parameter, Typer's built on first real need."""

        def __init__(self, descriptor: Any) -> None:
            self.descriptor = descriptor
            self.kind = plain_kind(descriptor)
            self.built: Any = None

        def typers(self) -> Any:
            if self.built is None:
                self.built = build(self.descriptor)
            return self.built

        def coerce(self, value: Any, param: Any, ctx: Any) -> Any:
            several = param.multiple or param.nargs == -1
            if value is None:
                return () if several else None
            if self.kind is not None and type(value) is str and value and not several:
                try:
                    value.encode()  # pydantic refuses lone surrogates (undecodable bytes)
                    if self.kind == "str":
                        return value
                    return coerce_cli_path(
                        Path(value),
                        self.descriptor.parameter_info,
                        path_type=Path,
                        param=param,
                        ctx=ctx,
                    )
                except Exception:  # Typer's adapter says it in its own words
                    pass
            return self.typers().coerce(value, param=param, ctx=ctx)

        def _coerce_value(self, value: Any, param: Any, ctx: Any) -> Any:
            return self.typers()._coerce_value(value, param=param, ctx=ctx)

    core.build_runtime_param = OnDemand  # type: ignore[assignment]


_plain_values_without_pydantic()

app = typer.Typer(
    name="mirror",
    help="MirrorOS: one persona at many entrances (`mirror entrances`), sharing one memory.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)

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
# Set by `bot.cli.main`: this process is one `mirror` command, whose entrance registry is the
# shipped one plus what its modules register (not a test's CliRunner on `app`, which may have
# registered entrances of its own): `mirror status` may trust bot/cli/checked.py's cache.
own_process = False
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


# "[console] 2026-12-02 10:45:04,358 WARNING bot.soul: …", as `mirror up` relays a child.
_CHILD_PREFIX = re.compile(r"^(\[[\w-]+\] )\S+ \S+ (?:DEBUG|INFO|WARNING|ERROR|CRITICAL) \S+: ")


class _AbovePrompt(logging.Handler):
    """Log records for a person at a terminal: one short line each, on stderr, above the
    chat's prompt when there is one (the details are in the log file)."""

    def __init__(self, log_file: Path, terminal: Any | None) -> None:
        super().__init__()
        self.log_file = log_file
        self.terminal = terminal

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # A child's relayed line keeps its name, not its own date, level and logger.
            message = _CHILD_PREFIX.sub(r"\1", record.getMessage())
            text = f"{record.levelname.lower()}: {message}"
            if record.exc_info:
                text += f" (details in {self.log_file})"
            if self.terminal is not None:
                self.terminal.above_prompt(text)
            else:
                sys.stderr.write(text + "\n")
                sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _log_file(cfg: Config) -> logging.Handler | None:
    """The rotating log file handler ([logging] path), or None (said once) when the file
    cannot be opened."""
    from logging.handlers import RotatingFileHandler

    path = cfg.log_path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = RotatingFileHandler(
            path,
            maxBytes=cfg.logging.max_bytes,
            backupCount=cfg.logging.backups,
            encoding="utf-8",
        )
    except OSError as exc:
        logging.getLogger(__name__).warning(
            "cannot write the log to %s (%s); logging to stderr only", path, exc.strerror or exc
        )
        return None
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    return handler


def quiet_terminal(
    cfg: Config, terminal: Any | None = None, *, service: bool = False
) -> logging.Logger | None:
    """Where this process's log goes, and the logger a supervisor relays its children's
    lines to (None: straight to stderr, as they come).

    In a terminal (stdin is a tty): to the rotating log file (`Config.log_path`), and only
    warnings and errors (with -v, INFO too) on screen, above `terminal`'s prompt.
    Elsewhere, for a `service` (`mirror up` under systemd, in a pipe): to stderr as before
    and to the log file too, so `mirror logs` can read it; the children's lines keep their
    own format on stderr. Otherwise nothing changes (stderr only). Only the supervising
    process writes the file: its children log to stderr, which it relays, so no two
    processes ever rotate the same file."""
    root = logging.getLogger()
    if not sys.stdin.isatty():
        if not service:
            return None
        to_file = _log_file(cfg)
        if to_file is None:
            return None
        root.addHandler(to_file)
        relay = logging.getLogger("mirror.children")
        relay.propagate = False
        relay.setLevel(logging.DEBUG)
        as_they_come = logging.StreamHandler(sys.stderr)
        as_they_come.setFormatter(logging.Formatter("%(message)s"))
        relay.addHandler(to_file)  # first: a line the journal shows is in the file already
        relay.addHandler(as_they_come)
        return relay
    to_file = _log_file(cfg)
    if to_file is None:
        return None
    on_screen = _AbovePrompt(cfg.log_path, terminal)
    on_screen.setLevel(logging.INFO if _verbose else logging.WARNING)
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
    from bot.config import ConfigError, load_config  # pydantic: not for `mirror status`

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
