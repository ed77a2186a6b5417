"""`mirror setup`: the wizard (bot/setup_wizard.py) at a terminal, or from flags (--yes).

Secrets are never arguments (argv is visible in `ps`): a flag names the environment
variable holding one (`--telegram-token-env VAR`), or the wizard asks for it without
echoing it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from bot.cli.common import _global, app, fail

if TYPE_CHECKING:
    from bot.setup_wizard import Choices


class Terminal:
    """The questions asked of a person: typer prompts on stdin, secrets never echoed."""

    interactive = True

    def say(self, text: str) -> None:
        typer.echo(text)

    def ask(self, question: str, default: str | None = None, *, secret: bool = False) -> str:
        if secret and not sys.stdin.isatty():
            # getpass would open /dev/tty and ignore stdin; a pipe echoes nothing anyway.
            typer.echo(f"{question}: ", nl=False)
            line = sys.stdin.readline()
            typer.echo("")
            if not line:
                raise EOFError
            return line.rstrip("\n")
        answer: str = typer.prompt(
            question,
            default=default,
            hide_input=secret,
            show_default=not secret and bool(default),
        )
        return answer

    def confirm(self, question: str, default: bool) -> bool:
        return bool(typer.confirm(question, default=default))


ENTRANCE_HELP = "Enable this entrance (repeat for several); the others are turned off."


@app.command()
def setup(
    folder: Annotated[
        Path | None,
        typer.Option(
            "--dir",
            help="Folder for the config, .env and SOUL.md (default: the --config file's "
            "folder, else the current one).",
        ),
    ] = None,
    yes: Annotated[
        bool,
        typer.Option("--yes", "-y", help="Ask nothing: take the flags and the current values."),
    ] = False,
    entrance: Annotated[list[str] | None, typer.Option("--entrance", help=ENTRANCE_HELP)] = None,
    telegram_token_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the Telegram bot token."),
    ] = None,
    discord_token_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the Discord bot token."),
    ] = None,
    email_password_env: Annotated[
        str | None,
        typer.Option(help="Environment variable holding the mailbox password."),
    ] = None,
    telegram_base_url: Annotated[
        str | None, typer.Option(help=r"\[entrances.telegram] base_url (a local Bot API server).")
    ] = None,
    discord_api_base: Annotated[
        str | None, typer.Option(help=r"\[entrances.discord] api_base.")
    ] = None,
    discord_gateway_url: Annotated[
        str | None, typer.Option(help=r"\[entrances.discord] gateway_url.")
    ] = None,
    email_address: Annotated[str | None, typer.Option(help="The persona's mail address.")] = None,
    email_username: Annotated[
        str | None, typer.Option(help="Mail login (default: the address).")
    ] = None,
    imap_host: Annotated[str | None, typer.Option(help="The IMAP server.")] = None,
    imap_port: Annotated[int | None, typer.Option(help="Its port (993).")] = None,
    smtp_host: Annotated[str | None, typer.Option(help="The SMTP server.")] = None,
    smtp_port: Annotated[int | None, typer.Option(help="Its port (465).")] = None,
    email_security: Annotated[str | None, typer.Option(help="ssl, starttls or none.")] = None,
    access: Annotated[
        str | None,
        typer.Option(help="Who may talk on the chosen platforms: open, pairing or allowlist."),
    ] = None,
    coordinator: Annotated[
        str | None,
        typer.Option(help="The coordinator's ENTRANCE:ID (skips finding it with /whoami)."),
    ] = None,
    whoami_wait: Annotated[
        float | None,
        typer.Option(
            help="Seconds to wait for your /whoami to the bot on Telegram or Discord (0: type "
            "the id). Default: 120, or 0 with --yes.",
            min=0,
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="A litellm model name, or mirror/offline.")
    ] = None,
    model_api_base: Annotated[
        str | None, typer.Option(help=r"\[model] api_base (blank: the provider's).")
    ] = None,
    model_key_env: Annotated[
        str | None,
        typer.Option(
            help="The model's API key variable (e.g. OPENAI_API_KEY); its value is taken from "
            "the environment, else asked."
        ),
    ] = None,
    env_file: Annotated[
        Path | None,
        typer.Option(
            help="The secrets file to write (default: .env in --dir; a service's "
            "EnvironmentFile, e.g. /etc/mirroros/env)."
        ),
    ] = None,
    no_check: Annotated[
        bool, typer.Option("--no-check", help="Save without checking anything live.")
    ] = False,
) -> None:
    """Set MirrorOS up: entrances and their tokens (checked live), the coordinator, the
    model, SOUL.md; writes the config and a .env (mode 0600). Re-run it to change things."""
    from bot.setup_wizard import Choices, SetupStopped, Unattended, Wizard

    config_path = _global["config"]
    if folder is None:
        folder = config_path.parent if config_path is not None else Path.cwd()
    if config_path is None:
        config_path = folder / "mirror.toml"
    email = {
        "address": email_address,
        "username": email_username,
        "imap_host": imap_host,
        "imap_port": imap_port,
        "smtp_host": smtp_host,
        "smtp_port": smtp_port,
        "security": email_security,
    }
    sources = {
        variable: source
        for variable, source in (
            ("MIRROR_TELEGRAM_TOKEN", telegram_token_env),
            ("MIRROR_DISCORD_TOKEN", discord_token_env),
            ("MIRROR_EMAIL_PASSWORD", email_password_env),
        )
        if source
    }
    choices: Choices = Choices(
        folder=folder,
        config_path=config_path,
        entrances=[name.lower() for name in entrance] if entrance else None,
        secret_sources=sources,
        telegram_base_url=telegram_base_url,
        discord_api_base=discord_api_base,
        discord_gateway_url=discord_gateway_url,
        email={key: value for key, value in email.items() if value is not None},
        access=access,
        coordinator=coordinator,
        whoami_wait_s=whoami_wait if whoami_wait is not None else (0 if yes else 120),
        model=model,
        model_api_base=model_api_base,
        model_key_env=model_key_env,
        check=not no_check,
        env_path=env_file,
    )
    prompter = Unattended(typer.echo) if yes else Terminal()
    try:
        outcome = Wizard(choices, prompter).run()
    except SetupStopped as exc:
        raise fail(f"setup: {exc}") from None
    except (EOFError, typer.Abort):
        raise fail(
            "setup: stopped before the last question; nothing was written (scripts: --yes "
            "and flags, see `mirror setup --help`)"
        ) from None
    except KeyboardInterrupt:
        raise fail("setup: interrupted; nothing was written", 130) from None
    typer.echo(f"Wrote {outcome.config_path} and {outcome.env_path}.")
    typer.echo("Check everything with `mirror doctor`; start MirrorOS with:")
    typer.echo(f"  {outcome.command}")
