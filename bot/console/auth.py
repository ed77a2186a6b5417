"""Who is using the console, and what they may do: accounts, sign-in, sessions, CSRF, roles.

- `mirror console` prints a one-time sign-in link (a random token, as Jupyter does) for the
  local admin; `mirror console user add NAME --role …` creates accounts whose passwords are
  kept as argon2 hashes (argon2-cffi).
- A session is a random token in a cookie (HttpOnly, SameSite=Strict, Secure unless the
  console is on loopback without a proxy); memory.db holds only its sha256.
- Every session has a CSRF token; every state-changing request must carry it (the form's
  `csrf` field or the `X-CSRF-Token` header htmx sends), else it is refused and audited.
- Roles rank viewer < coordinator < admin and are checked on the server for every action
  (`bot.console.layout.guarded`); the chat command router checks them again.
- Failed sign-ins are rate-limited per name and per client and audited.

Never speaks SQL (bot.memory does) and never trusts anything the browser says about roles.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bot.accounts import AccountRef
from bot.speaker import Role, Speaker

if TYPE_CHECKING:
    from bot.config import Config
    from bot.memory import ConsoleRole, Memory

ROLES: tuple[ConsoleRole, ...] = ("viewer", "coordinator", "admin")
RANK = {role: rank for rank, role in enumerate(ROLES)}
COOKIE = "mirror_console"
LOCAL_ADMIN = "admin"  # who the link `mirror console` prints signs in as
FAILED_WINDOW_S = 3600.0

# What each console role may do through the chat command router (bot.commands): an admin
# is the operator at the machine (as the CLI is), a coordinator decides items, a viewer only
# watches.
BOT_ROLES: dict[str, frozenset[Role]] = {
    "admin": frozenset({"admin", "coordinator"}),
    "coordinator": frozenset({"coordinator"}),
    "viewer": frozenset(),
}


@dataclass(frozen=True)
class SignedIn:
    """The console user of one request, decided once from the session cookie."""

    name: str
    role: ConsoleRole
    csrf: str

    def may(self, role: ConsoleRole) -> bool:
        return RANK[self.role] >= RANK[role]

    @property
    def actor(self) -> str:
        """How audits name this user: console:NAME."""
        return f"console:{self.name}"

    @property
    def sees_private(self) -> bool:
        """Admins and coordinators see private conversations (the coordinator's wider view);
        a viewer sees only what groups saw."""
        return self.may("coordinator")

    @property
    def speaker(self) -> Speaker:
        """This user as the command router's speaker: private (the console is a private
        channel), audited as console:NAME."""
        return Speaker(
            account=AccountRef.of("console", self.name),
            name=self.name,
            roles=BOT_ROLES[self.role],
            private=True,
            label=self.actor,
        )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refuse_unsafe_bind(config: Config) -> str | None:
    """Why the console must not start with this config (None: it may)."""
    console = config.console
    if is_loopback(console.host) or console.behind_proxy:
        return None
    return (
        f"refusing to serve the console on {console.host} without TLS in front: bind it to "
        "127.0.0.1, or put a TLS proxy in front and set [console] behind_proxy = true"
    )


def secure_cookies(config: Config) -> bool:
    """Secure cookies unless the console is on loopback with nothing in front."""
    return config.console.behind_proxy or not is_loopback(config.console.host)


# Passwords (argon2-cffi) -----------------------------------------------------------------


def hash_password(password: str) -> str:
    from argon2 import PasswordHasher

    return PasswordHasher().hash(password)


def password_matches(stored: str | None, given: str) -> bool:
    from argon2 import PasswordHasher
    from argon2.exceptions import InvalidHashError, VerificationError

    if not stored:
        PasswordHasher().hash(given)  # as slow as a real check: no timing hint
        return False
    try:
        return PasswordHasher().verify(stored, given)
    except (VerificationError, InvalidHashError):
        return False


# Sign-in ---------------------------------------------------------------------------------


async def mint_sign_in_link(
    memory: Memory, config: Config, *, user: str = LOCAL_ADMIN, role: ConsoleRole = "admin"
) -> str:
    """A one-time sign-in URL for `user` (the local admin by default)."""
    token = new_token()
    ttl_s = config.console.sign_in_link_minutes * 60
    await memory.add_sign_in_link(token_hash(token), user, role, ttl_s)
    return f"{base_url(config)}/sign-in?token={token}"


def base_url(config: Config) -> str:
    console = config.console
    host = console.host
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{console.port}"


async def start_session(
    memory: Memory, config: Config, user: str, role: ConsoleRole
) -> tuple[str, SignedIn]:
    """A new session: (the cookie's token, the user)."""
    token, csrf = new_token(), new_token()
    ttl_s = config.console.session_hours * 3600
    await memory.start_console_session(token_hash(token), user, role, csrf, ttl_s)
    return token, SignedIn(user, role, csrf)


async def signed_in(memory: Memory, token: str | None) -> SignedIn | None:
    if not token:
        return None
    session = await memory.console_session(token_hash(token))
    if session is None:
        return None
    return SignedIn(session.user_name, session.role, session.csrf)


async def check_password(
    memory: Memory, config: Config, name: str, password: str, client: str
) -> SignedIn | str:
    """The user when the password is right; else why not (audited, counted)."""
    name = name.strip()[:100]
    limit = config.console.failed_sign_ins_per_hour
    if await memory.recent_failed_sign_ins(name, client, FAILED_WINDOW_S) >= limit:
        await memory.failed_sign_in(name, client, "too many failed sign-ins")
        return "Too many failed sign-ins; try again later."
    user = await memory.console_user(name)
    if user is None or not password_matches(user.password_hash, password):
        await memory.failed_sign_in(name, client, "wrong name or password")
        return "Wrong name or password."
    return SignedIn(user.name, user.role, "")
