"""`mirror setup`: from a token to a checked config, interactively or from flags.

The wizard asks which entrances to use, checks each secret live against its platform
(`bot.probes`) and names the bot it found, finds the coordinator's id (a `/whoami` sent to
the Telegram bot, caught by polling getUpdates for a while; typed by hand elsewhere or when
that times out), lets the admin pick a model and makes one test call, and puts a SOUL.md in
place from the template. It writes the config with tomlkit, so an existing file keeps its
comments and every key the wizard does not ask about, and the secrets to a `.env` (mode
0600) beside it: secrets never go to the TOML file, to the screen or to argv.

The questions go through a `Prompter`: a person at a terminal, or (`--yes`) the flags and
the current values, refusing with one line what neither gives. Nothing here parses
argv or prints directly; the CLI (`bot/cli/setup.py`) does.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from bot.probes import Finding

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
CONFIG_TEMPLATE = ROOT / "config" / "mirror.toml"
SOUL_TEMPLATE = ROOT / "soul" / "SOUL.md"
PLATFORMS = ("telegram", "discord", "email")
POLICIES = ("open", "pairing", "allowlist")
ATTEMPTS = 3
SECRET_FLAGS = {
    "telegram": "--telegram-token-env",
    "discord": "--discord-token-env",
    "email": "--email-password-env",
}

# The API key variable of common litellm providers ("" when the provider needs none).
PROVIDER_KEYS = {
    "openai": "OPENAI_API_KEY",
    "anthropic": "ANTHROPIC_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
    "mistral": "MISTRAL_API_KEY",
    "openrouter": "OPENROUTER_API_KEY",
    "deepseek": "DEEPSEEK_API_KEY",
    "xai": "XAI_API_KEY",
    "together_ai": "TOGETHERAI_API_KEY",
    "cohere": "COHERE_API_KEY",
    "hosted_vllm": "",
    "ollama": "",
    "ollama_chat": "",
}


class SetupStopped(Exception):
    """The wizard cannot go on; the message is one line saying why and what to do."""


class Prompter(Protocol):
    """Where the questions go: a person, or the flags (`--yes`)."""

    interactive: bool

    def say(self, text: str) -> None: ...

    def ask(self, question: str, default: str | None = None, *, secret: bool = False) -> str: ...

    def confirm(self, question: str, default: bool) -> bool: ...


class Unattended:
    """`--yes`: every answer is the flag's or the current value; a question with neither
    stops the wizard naming the flag to give."""

    interactive = False

    def __init__(self, say: Callable[[str], None]) -> None:
        self._say = say

    def say(self, text: str) -> None:
        self._say(text)

    def ask(self, question: str, default: str | None = None, *, secret: bool = False) -> str:
        if default is None:
            raise SetupStopped(f"no answer for {question!r} with --yes: give it as a flag")
        return default

    def confirm(self, question: str, default: bool) -> bool:
        return default


@dataclass
class Choices:
    """What the flags already answer (None: ask, or keep the current value with --yes)."""

    folder: Path
    config_path: Path
    entrances: list[str] | None = None
    # Where a secret's value is read from: manifest secret variable -> environment variable.
    secret_sources: dict[str, str] = field(default_factory=dict)
    telegram_base_url: str | None = None
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None
    email: dict[str, Any] = field(default_factory=dict)
    access: str | None = None
    coordinator: str | None = None
    whoami_wait_s: float = 120.0
    model: str | None = None
    model_api_base: str | None = None
    model_key_env: str | None = None
    check: bool = True
    env_path: Path | None = None  # default: .env in `folder`


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# Files ----------------------------------------------------------------------------------


class ConfigFile:
    """The TOML config as tomlkit keeps it: comments, order and unknown keys survive."""

    def __init__(self, path: Path) -> None:
        import tomlkit

        self.path = path
        self.existed = path.exists()
        if self.existed:
            text = path.read_text(encoding="utf-8")
        elif CONFIG_TEMPLATE.exists():
            text = CONFIG_TEMPLATE.read_text(encoding="utf-8")
        else:
            text = ""
        try:
            self.doc = tomlkit.parse(text)
        except tomlkit.exceptions.ParseError as exc:
            raise SetupStopped(f"{path} is not valid TOML ({exc}): fix or move it") from None

    def get(self, *keys: str, default: Any = None) -> Any:
        node: Any = self.doc
        for key in keys:
            if not hasattr(node, "get") or key not in node:
                return default
            node = node[key]
        return node.unwrap() if hasattr(node, "unwrap") else node

    def set(self, *keys: str, value: Any) -> None:
        import tomlkit

        node: Any = self.doc
        for depth, key in enumerate(keys[:-1]):
            if key not in node:
                # [entrances] only holds sub-tables: a super table, no header of its own.
                node[key] = tomlkit.table(is_super_table=depth == 0 and len(keys) > 2)
            node = node[key]
        if node.get(keys[-1]) != value:
            node[keys[-1]] = value

    def save(self) -> None:
        import tomlkit

        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.tmp")
        temporary.write_text(tomlkit.dumps(self.doc), encoding="utf-8")
        if self.existed:  # the service user must still be able to read it
            before = self.path.stat()
            os.chmod(temporary, before.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.chown(temporary, before.st_uid, before.st_gid)
        temporary.replace(self.path)


class EnvFile:
    """`.env` beside the config: KEY=value lines, mode 0600; other lines are kept."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        self.changed = False

    def get(self, key: str) -> str | None:
        """The value in the environment, else in this file."""
        if os.environ.get(key):
            return os.environ[key]
        if not self.path.exists():
            return None
        from bot.config import read_dotenv

        return read_dotenv(self.path).get(key) or None

    def in_file(self, key: str) -> bool:
        pattern = re.compile(rf"^\s*(export\s+)?{re.escape(key)}\s*=")
        return any(pattern.match(line) for line in self.lines)

    def set(self, key: str, value: str) -> None:
        line = f"{key}={_quoted(value)}"
        pattern = re.compile(rf"^\s*(export\s+)?{re.escape(key)}\s*=")
        for index, current in enumerate(self.lines):
            if pattern.match(current):
                if current != line:
                    self.lines[index] = line
                    self.changed = True
                return
        self.lines.append(line)
        self.changed = True

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)  # an existing file keeps its mode otherwise
            handle.write("".join(f"{line}\n" for line in self.lines))


_PLAIN = re.compile(r"[A-Za-z0-9_:.,/@+=-]+")


def _quoted(value: str) -> str:
    """A value python-dotenv and systemd's EnvironmentFile both read back unchanged."""
    if _PLAIN.fullmatch(value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


# The wizard -----------------------------------------------------------------------------


@dataclass
class Outcome:
    config_path: Path
    env_path: Path
    command: str


class Wizard:
    def __init__(self, choices: Choices, prompter: Prompter) -> None:
        self.choices = choices
        self.ask = prompter
        self.config = ConfigFile(choices.config_path)
        self.env = EnvFile(choices.env_path or choices.folder / ".env")
        self.bots: dict[str, Finding] = {}
        self.secrets: dict[str, str] = {}  # the values saved to .env, by variable
        self.was_enabled: set[str] = set()  # entrances enabled before this run

    def say(self, text: str) -> None:
        self.ask.say(text)

    def run(self) -> Outcome:
        choices = self.choices
        self.say(
            f"{'Editing' if self.config.existed else 'Writing'} {choices.config_path}; "
            f"secrets go to {self.env.path} (mode 0600)."
        )
        self._paths()
        enabled = self._entrances()
        for name in enabled:
            {"telegram": self._telegram, "discord": self._discord, "email": self._email}[name]()
        self._access(enabled)
        self._coordinator(enabled)
        self._model()
        self._soul()
        self.config.save()
        self.env.save()
        self._check_config()
        command = self._command()
        return Outcome(choices.config_path, self.env.path, command)

    # Paths and entrances ------------------------------------------------------------------

    def _paths(self) -> None:
        """A new config keeps everything in the chosen folder, by absolute path (the service
        may run from elsewhere); an existing one keeps its paths."""
        if self.config.existed:
            return
        folder = self.choices.folder.resolve()
        self.config.set("memory", "path", value=str(folder / "var" / "memory.db"))
        self.config.set("logging", "path", value=str(folder / "var" / "log" / "mirror.log"))

    def _entrances(self) -> list[str]:
        from bot.entrance import manifest

        given = self.choices.entrances
        enabled: list[str] = []
        for name in PLATFORMS:
            current = bool(self.config.get("entrances", name, "enabled", default=False))
            if current:
                self.was_enabled.add(name)
            if given is not None:
                wanted = name in given
            else:
                wanted = self.ask.confirm(f"Use {manifest(name).label}?", current)
            if wanted or current:
                self.config.set("entrances", name, "enabled", value=wanted)
            if wanted:
                enabled.append(name)
        if not enabled:
            self.say("No platform chosen: the persona runs in this terminal (`mirror chat`).")
        return enabled

    def _keep(self, variable: str, value: str) -> None:
        self.secrets[variable] = value
        self.env.set(variable, value)

    def _secret(self, name: str, label: str, check: Callable[[str], Finding]) -> Finding:
        """The entrance's secret: from the flag's variable, kept from .env, or asked (hidden),
        checked live until the platform accepts it (or the admin keeps it anyway)."""
        from bot.entrance import manifest

        variable = manifest(name).secret_env
        assert variable is not None
        source = self.choices.secret_sources.get(variable)
        value = os.environ.get(source, "") if source else ""
        if source and not value:
            raise SetupStopped(f"{source} is empty or not set (it should hold the {label})")
        current = self.env.get(variable)
        if not value and current:
            where = "the environment" if os.environ.get(variable) else str(self.env.path)
            if self.ask.confirm(f"Keep the {label} already in {where}?", True):
                value = current
        if not value and not self.ask.interactive:
            flag = SECRET_FLAGS.get(name, "a flag")
            raise SetupStopped(
                f"no {label} with --yes: put it in an environment variable and name that "
                f"variable with {flag}"
            )
        for attempt in range(ATTEMPTS):
            if not value:
                value = self.ask.ask(f"{label} (not shown)", None, secret=True).strip()
            if not value:
                continue
            finding = check(value) if self.choices.check else None
            if finding is None or finding.status != "fail":
                if finding is not None:
                    self.say(finding.line())
                self._keep(variable, value)
                return finding or _unchecked(name)
            self.say(finding.line())
            if not self.ask.interactive:
                raise SetupStopped(f"{finding.check}: {finding.detail}")
            if attempt + 1 < ATTEMPTS and self.ask.confirm("Enter it again?", True):
                value = ""
                continue
            if self.ask.confirm("Keep it anyway?", False):
                self._keep(variable, value)
                return finding
            raise SetupStopped(f"{finding.check}: {finding.detail} — {finding.todo}")
        raise SetupStopped(f"no {label} given")

    def _telegram(self) -> None:
        from bot import probes

        base_url = self.choices.telegram_base_url or self.config.get(
            "entrances", "telegram", "base_url", default="https://api.telegram.org/bot"
        )
        if self.choices.telegram_base_url:
            self.config.set("entrances", "telegram", "base_url", value=base_url)
        self.say("Telegram: the token comes from @BotFather (/newbot, or /token for a bot).")
        self.bots["telegram"] = self._secret(
            "telegram",
            "Telegram bot token",
            lambda token: run(probes.telegram_identity(base_url, token)),
        )
        self.telegram = (base_url, self.secrets["MIRROR_TELEGRAM_TOKEN"])

    def _discord(self) -> None:
        from bot import probes

        api_base = self.choices.discord_api_base or self.config.get(
            "entrances", "discord", "api_base", default="https://discord.com/api/v10"
        )
        if self.choices.discord_api_base:
            self.config.set("entrances", "discord", "api_base", value=api_base)
        if self.choices.discord_gateway_url:
            self.config.set(
                "entrances", "discord", "gateway_url", value=self.choices.discord_gateway_url
            )
        self.say(
            "Discord: the token is in the Developer Portal → your application → Bot → Reset "
            "Token; turn on the Message Content intent there too."
        )
        self.bots["discord"] = self._secret(
            "discord",
            "Discord bot token",
            lambda token: run(probes.discord_identity(api_base, token)),
        )

    def _email(self) -> None:
        from bot import probes
        from bot.entrance import manifest

        given = self.choices.email
        questions = (
            ("address", "The persona's mail address", ""),
            ("imap_host", "IMAP server", ""),
            ("imap_port", "IMAP port", "993"),
            ("smtp_host", "SMTP server", ""),
            ("smtp_port", "SMTP port", "465"),
            ("security", "Security (ssl, starttls or none; none only for 127.0.0.1)", "ssl"),
            ("username", "Login name", ""),
        )
        for key, question, fallback in questions:
            current = self.config.get("entrances", "email", key, default=None)
            if key in given and given[key] is not None:
                answer: Any = given[key]
            else:
                default = str(current) if current not in (None, "") else fallback
                if key == "username":  # most servers log in with the address
                    default = str(current or self.config.get("entrances", "email", "address"))
                answer = self.ask.ask(question, default or None)
            if key == "username" and answer == self.config.get("entrances", "email", "address"):
                answer = ""  # the default: the address
            if key.endswith("_port"):
                try:
                    answer = int(answer)
                except ValueError:
                    raise SetupStopped(f"{question}: {answer!r} is not a number") from None
            if key == "security" and answer not in ("ssl", "starttls", "none"):
                raise SetupStopped(f"security must be ssl, starttls or none, not {answer!r}")
            self.config.set("entrances", "email", key, value=answer)
        settings = manifest("email").settings.model_validate(
            self.config.get("entrances", "email", default={})
        )

        def check(password: str) -> Finding:
            found = run(probes.mail_servers(settings, password))
            for finding in found[:-1]:
                if finding.status == "fail":
                    return finding
                self.say(finding.line())
            return found[-1]

        self.bots["email"] = self._secret("email", "mail password", check)

    def _access(self, enabled: list[str]) -> None:
        for name in enabled:
            current = self.config.get("access", name, "policy", default=None)
            if current is None:
                # A running entrance keeps what it had (open); a new one lets in only the
                # people the coordinator approves.
                current = "open" if name in self.was_enabled else "pairing"
            if self.choices.access is not None:
                policy = self.choices.access
            elif name == "email":
                continue  # mail has allow_senders; its policy stays as it is
            else:
                policy = self.ask.ask(
                    f"Who may talk to the persona on {name}: open, pairing (you approve each "
                    "person) or allowlist",
                    current,
                ).strip()
            if policy not in POLICIES:
                raise SetupStopped(f"access policy must be one of {', '.join(POLICIES)}")
            self.config.set("access", name, "policy", value=policy)

    # The coordinator ------------------------------------------------------------------------

    def _coordinator(self, enabled: list[str]) -> None:
        from bot.accounts import AccountRef

        current = str(self.config.get("coordinator", "address", default="local:you"))
        address = self.choices.coordinator
        if address is None:
            entrance = current.partition(":")[0]
            if entrance in enabled and self.ask.confirm(
                f"The coordinator (you: you decide conflicts) is {current}. Keep it?", True
            ):
                address = current
            elif not enabled:
                address = current
            else:
                where = enabled[0]
                if len(enabled) > 1:
                    where = self.ask.ask(
                        "Where do you, the coordinator, talk to the persona "
                        f"({', '.join(enabled)})",
                        enabled[0],
                    ).strip()
                if where not in enabled:
                    raise SetupStopped(f"{where!r} is not one of the chosen entrances")
                address = self._find_coordinator(where)
        try:
            account = AccountRef.parse(address)
        except ValueError as exc:
            raise SetupStopped(f"coordinator: {exc}") from None
        self.config.set("coordinator", "address", value=account.key)
        admins = list(self.config.get("access", "admins", default=[]) or [])
        if account.key not in admins:
            self.config.set("access", "admins", value=[*admins, account.key])
        self.say(f"Coordinator: {account.key} (also an admin).")

    def _find_coordinator(self, entrance: str) -> str:
        if entrance == "telegram":
            found = self._telegram_whoami()
            if found:
                return f"telegram:{found}"
            question = "Your Telegram user id (a number; @userinfobot tells it)"
        elif entrance == "discord":
            found = self._discord_whoami()
            if found:
                return f"discord:{found}"
            question = (
                "Your Discord user id (Settings → Advanced → Developer Mode on, then right-click "
                "your name → Copy User ID)"
            )
        else:
            question = "Your own mail address"
        if not self.ask.interactive:
            raise SetupStopped(
                "no coordinator with --yes: give --coordinator ENTRANCE:ID (or --whoami-wait "
                "SECONDS to catch /whoami on Telegram or Discord)"
            )
        answer = self.ask.ask(question, None).strip()
        if not answer:
            raise SetupStopped("no coordinator id given")
        return f"{entrance}:{answer}"

    def _telegram_whoami(self) -> str | None:
        from bot import probes

        wait = self.choices.whoami_wait_s
        bot = self.bots.get("telegram")
        if wait <= 0 or bot is None or bot.status == "fail" or "bot_name" not in bot.facts:
            return None
        running = self._running_entrance("telegram")
        if running:
            self.say(
                f"The Telegram entrance is running ({running}): it takes the bot's updates, so "
                "setup does not listen for /whoami. Stop it to be found, or type your id."
            )
            return None
        base_url, token = self.telegram
        self.say(
            f"Send /whoami to {bot.facts['bot_name']} from your own Telegram account now "
            f"(waiting {wait:.0f}s)."
        )
        try:
            found = run(probes.telegram_whoami(base_url, token, wait_s=wait))
        except probes.WhoamiConflict as exc:
            self.say(f"Telegram will not hand out the bot's messages ({exc}): is it running?")
            return None
        if found is None:
            self.say("No /whoami arrived in time.")
            return None
        user_id, name = found
        self.say(f"Found you: {name} (telegram:{user_id}).")
        return user_id

    def _discord_whoami(self) -> str | None:
        from bot import probes
        from bot.entrance import manifest

        wait = self.choices.whoami_wait_s
        bot = self.bots.get("discord")
        if wait <= 0 or bot is None or bot.status == "fail" or "bot_name" not in bot.facts:
            return None
        settings = manifest("discord").settings.model_validate(
            self.config.get("entrances", "discord", default={})
        )
        self.say(
            f"Send /whoami to {bot.facts['bot_name']} in a direct message from your own Discord "
            f"account now (waiting {wait:.0f}s)."
        )
        found = run(
            probes.discord_whoami(settings, self.secrets["MIRROR_DISCORD_TOKEN"], wait_s=wait)
        )
        if found is None:
            self.say("No /whoami arrived in time.")
            return None
        user_id, name = found
        self.say(f"Found you: {name} (discord:{user_id}).")
        return user_id

    def _running_entrance(self, name: str) -> str | None:
        """Who holds the entrance's lease in this config's memory ("pid N on HOST"), if a
        live process does (memory.db is never created or migrated here)."""
        from bot.memory import read_health

        location = str(self.config.get("memory", "path", default="var/memory.db"))
        path = Path(location)
        if location.startswith("postgres") or not path.exists():
            return None
        health = read_health(path)
        import time

        for lease in health.leases:
            if (
                lease.name == f"entrance:{name}"
                and lease.expires_at > time.time()
                and lease.running is not False
            ):
                return f"pid {lease.pid} on {lease.host}"
        return None

    # The model --------------------------------------------------------------------------

    def _model(self) -> None:
        from bot import probes
        from bot.config import ModelConfig

        choices = self.choices
        current = str(self.config.get("model", "name", default="mirror/offline"))
        for _attempt in range(ATTEMPTS):
            name = (
                choices.model
                or self.ask.ask(
                    "Model: a litellm name (openai/gpt-4o-mini, anthropic/claude-sonnet-4-5, "
                    "ollama/llama3, …) or mirror/offline for the offline brain",
                    current,
                ).strip()
            )
            self.config.set("model", "name", value=name)
            if name.startswith("mirror/"):
                self.say("Model: the offline brain (simple answers, no model calls).")
                return
            api_base = choices.model_api_base
            if api_base is None:
                api_base = self.ask.ask(
                    "API base URL (blank: the provider's own)",
                    str(self.config.get("model", "api_base", default="") or ""),
                ).strip()
            if api_base:
                self.config.set("model", "api_base", value=api_base)
            elif self.config.get("model", "api_base") is not None:
                del self.config.doc["model"]["api_base"]
            provider = name.partition("/")[0]
            variable = choices.model_key_env
            if variable is None:
                variable = self.ask.ask(
                    "Name of its API key variable (blank: it needs none)",
                    PROVIDER_KEYS.get(provider, f"{provider.upper()}_API_KEY"),
                ).strip()
            if variable:
                key = self.env.get(variable)
                if key and not self.ask.confirm(f"Keep the {variable} already set?", True):
                    key = None
                if not key:
                    key = self.ask.ask(f"{variable} (not shown)", None, secret=True).strip()
                self._keep(variable, key)
                os.environ[variable] = key  # for the test call in this process
            if not choices.check:
                return
            config = ModelConfig(name=name, api_base=api_base or None, timeout_s=60)
            self.say(f"Asking {name} one short question…")
            finding = run(probes.model_answers(config))
            self.say(finding.line())
            if finding.status != "fail":
                return
            if not self.ask.interactive:
                raise SetupStopped(f"{finding.check}: {finding.detail}")
            if self.ask.confirm("Keep this model anyway?", False):
                return
            choices.model = choices.model_api_base = choices.model_key_env = None
            current = "mirror/offline"
        raise SetupStopped("no working model chosen")

    # The soul ---------------------------------------------------------------------------

    def _soul(self) -> None:
        from bot.soul import SoulError, parse_soul

        configured = self.config.get("soul", "path", default=None)
        path = Path(str(configured)) if configured and self.config.existed else None
        if path is not None and path.exists():
            try:
                soul = parse_soul(path.read_bytes())
            except SoulError as exc:
                raise SetupStopped(
                    f"{path}: {exc} (fix it, or point [soul] path elsewhere)"
                ) from None
            self.say(f"Soul: {path} ({soul.name}) is kept.")
            return
        target = (self.choices.folder / "SOUL.md").resolve()
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(SOUL_TEMPLATE.read_text(encoding="utf-8"), encoding="utf-8")
            self.say(f"Soul: {target} from the template; edit it to make the persona your own.")
        else:
            self.say(f"Soul: {target} is kept.")
        self.config.set("soul", "path", value=str(target))

    # The end ----------------------------------------------------------------------------

    def _check_config(self) -> None:
        from bot.config import ConfigError, load_config

        try:
            load_config(self.choices.config_path)
        except ConfigError as exc:
            raise SetupStopped(f"the written config is not valid: {exc}") from None

    def _command(self) -> str:
        """The one command that starts everything with what was written."""
        import shlex

        def quote(path: Path) -> str:
            return shlex.quote(str(path))

        config = self.choices.config_path.resolve()
        env = self.env.path.resolve()
        mirror = f"{_mirror_command()} --config {quote(config)} up"
        if env.name != ".env":
            # Secrets in a service's EnvironmentFile: load them for this shell.
            return f"set -a && . {quote(env)} && set +a && {mirror}"
        if env.parent != config.parent:  # a .env is read beside the config or in the cwd
            return f"cd {quote(env.parent)} && {mirror}"
        return mirror


def _mirror_command() -> str:
    """`mirror` when it is on PATH, else the path of the one running (a checkout's .venv)."""
    import shutil
    import sys

    running = Path(sys.argv[0])
    if shutil.which("mirror") is None and running.name == "mirror":
        return str(running.resolve())
    return "mirror"


def _unchecked(name: str) -> Finding:
    from bot.probes import warn

    return warn(f"{name} secret", "saved without a live check", "run `mirror doctor`")
