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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from bot.log_setup import to_stderr

if TYPE_CHECKING:
    from bot.config import Config
    from bot.service_loop import Service

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
    to_stderr(verbose)


def log_settings(cfg: Config) -> dict[str, Any]:
    """The arguments of `bot.log_setup.quiet_terminal` for this command: the config's log
    file and its rotation, and -v (plain values: `mirror up` hands them to its lean
    supervisor as JSON)."""
    return {
        "path": str(cfg.log_path),
        "max_bytes": cfg.logging.max_bytes,
        "backups": cfg.logging.backups,
        "verbose": _verbose,
    }


def quiet_terminal(
    cfg: Config, terminal: Any | None = None, *, service: bool = False
) -> logging.Logger | None:
    """`bot.log_setup.quiet_terminal` with the config's log file and this command's -v."""
    from bot.log_setup import quiet_terminal as set_up

    settings = log_settings(cfg)
    return set_up(Path(settings.pop("path")), **settings, terminal=terminal, service=service)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"mirror: {message}", err=True)
    return typer.Exit(code)


def global_option(name: str) -> Path | None:
    """`mirror --config/--db …`, given before the command."""
    return _global[name]


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


def run_service(service: Service) -> None:
    """Run an entrance or the scheduler until it ends or SIGINT/SIGTERM/SIGHUP asks it to stop
    (bot/service_loop.py)."""
    from bot.cli.child import serve

    run_child_command(lambda: serve(service))


def run_child_command(run: Callable[[], None]) -> None:
    """`run` (bot/cli/child.py) as a Typer command: its Refused is the command's error line
    and exit code, Ctrl-C exit code 130."""
    from bot.cli.child import Refused

    try:
        run()
    except Refused as exc:
        raise fail(str(exc), code=exc.code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


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
