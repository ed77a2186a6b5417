"""Running as a service: `mirror service install` and `mirror logs`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bot.cli.common import ConfigOption, DbOption, app, fail, get_config

service_app = typer.Typer(help="Run MirrorOS as a systemd service.", no_args_is_help=True)
app.add_typer(service_app, name="service")

ROOT = Path(__file__).resolve().parents[2]


@service_app.command("install")
def service_install(
    user: Annotated[str, typer.Option(help="The system user the service runs as.")] = "mirroros",
    prefix: Annotated[
        Path | None,
        typer.Option(help="Where MirrorOS is installed (default: this installation)."),
    ] = None,
    config_dir: Annotated[Path, typer.Option(help="Config, SOUL.md and secrets.")] = Path(
        "/etc/mirroros"
    ),
    data_dir: Annotated[Path, typer.Option(help="memory.db.")] = Path("/var/lib/mirroros"),
    log_dir: Annotated[Path, typer.Option(help="The log file.")] = Path("/var/log/mirroros"),
    root: Annotated[
        Path | None,
        typer.Option(help="Stage every file under this folder instead of / (packaging)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be done; change nothing.")
    ] = False,
) -> None:
    """Write the systemd unit, the folders with their owners, the config, SOUL.md and an
    empty secrets file (nothing that exists is overwritten, but the unit).

    Example: `sudo /opt/mirroros/.venv/bin/mirror service install --user mirroros`
    """
    import os

    from bot.service_install import Layout, perform, plan

    installed = Path(sys.executable).parent / "mirror"
    mirror_bin = (prefix / ".venv" / "bin" / "mirror") if prefix is not None else installed
    layout = Layout(
        user=user,
        prefix=prefix or Path(sys.prefix),
        config_dir=config_dir,
        data_dir=data_dir,
        log_dir=log_dir,
    )
    steps = plan(
        layout,
        mirror_bin=mirror_bin,
        example_config=ROOT / "config" / "mirror.example.toml",
        soul=ROOT / "soul" / "SOUL.md",
    )
    if dry_run:
        typer.echo("would do (nothing that exists is overwritten, but the unit):")
        for step in steps:
            typer.echo(f"  {step.describe()}")
        for step in steps:
            if step.path is not None and step.path.name.endswith(".service"):
                typer.echo(f"\n{step.path}:\n{step.content}")
        return
    if root is None and os.geteuid() != 0:
        raise fail(
            "service install writes to /etc and creates a user: run it as root "
            "(sudo), or see what it would do with --dry-run",
            code=1,
        )
    for step in steps:
        try:
            typer.echo(perform(step, root=root))
        except (OSError, KeyError, LookupError) as exc:
            raise fail(f"{step.describe()}: {exc}", code=1) from None
        except Exception as exc:  # useradd failed: say what it said
            detail = getattr(exc, "stderr", b"") or b""
            text = detail.decode(errors="replace").strip() if isinstance(detail, bytes) else exc
            raise fail(f"{step.describe()}: {text}", code=1) from None
    typer.echo(
        f"\nnext: put the secrets in {layout.env_file} (or run `mirror --config "
        f"{layout.config_file} setup`), check with `mirror --config {layout.config_file} "
        "doctor`, then:\n  systemctl daemon-reload && systemctl enable --now mirroros\n"
        "  mirror --config "
        f"{layout.config_file} logs -f"
    )


@app.command()
def logs(
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines (Ctrl-C stops).")
    ] = False,
    entrance: Annotated[
        str | None, typer.Option("--entrance", "-e", help="Only this entrance's lines.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only lines since: a duration (10m, 2h, 1d) or a date (2026-12-01)."),
    ] = None,
    level: Annotated[
        str, typer.Option(help="Lowest level shown: debug, info, warning, error.")
    ] = "debug",
    config: ConfigOption = None,
    db: DbOption = None,
) -> None:
    """The log file `mirror up` (and `mirror chat` in a terminal) write, with its rotated
    copies; \\[logging] path, else log/mirror.log beside memory.db.

    Example: `mirror logs -f --entrance telegram --since 1h`
    """
    from bot.log_reader import LEVELS, BadSince, Filter, follow, parse_since, read

    cfg = get_config(config, db)
    if level.upper() not in LEVELS:
        raise fail(f"--level {level!r}: one of {', '.join(x.lower() for x in LEVELS)}")
    try:
        keep = Filter(
            since=parse_since(since) if since else None,
            entrance=entrance,
            level=level.upper(),
        )
    except BadSince as exc:
        raise fail(str(exc)) from None
    path = cfg.log_path
    if not follow_ and not path.exists():
        raise fail(f"no log at {path} yet (`mirror up` writes it; \\[logging] path)", code=1)
    try:
        for record in read(path, keep):
            typer.echo(record)
        if follow_:
            for record in follow(path, keep):
                typer.echo(record)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
    except BrokenPipeError:  # `mirror logs | head`
        raise typer.Exit(0) from None
