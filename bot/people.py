"""People and their accounts: pairing decisions, revoking access, links between accounts,
the people list.

Chat commands and buttons (`/approve-pair`, `/deny-pair`, `/revoke`, `/link`) and the CLI
(`mirror pair approve|deny`, `mirror people revoke`, `mirror link`, `mirror unlink`,
`mirror people`) call these same functions. Each returns an `Outcome` (or data); the caller
has already checked that the actor may do it. Never calls the model.

Access policy after a "no": an account denied at pairing is told once (now, where it
asked); an account whose access is revoked is told once, at its next message. After that
both get silence: their messages are recorded and refused (audited), no new pairing code
is made and the coordinator is not asked again, so a refused stranger cannot make the
persona spam anyone. Letting such an account in again is an explicit decision:
`allow_access` (`mirror people allow`, the console's Allow) or [access.ENTRANCE] allow.
"""

from __future__ import annotations

from bot.accounts import AccountRef
from bot.config import Config
from bot.guard import normalize_code
from bot.memory import CodeError, Memory, PendingPairing
from bot.models import Person
from bot.outcome import Outcome, invalid
from bot.speaker import Roster

PAIRED_WELCOME = "You're in: my coordinator approved you. Say hello whenever you like."
PAIR_DENIED = "My coordinator decided not to let you in, so I won't answer here. Sorry."
REVOKED_NOTICE = "My coordinator has taken back your access, so I won't answer here any more."
PAIRING_WAITING = (
    "Your pairing code {code} is still waiting for my coordinator. I'll tell you here when "
    "they decide; until then I'll stay quiet."
)


def pair_button(verb: str, code: str) -> str:
    """Callback data of a pairing button ('mirror:approve-pair:K7QM-3XWD'; bot.commands
    parses it back into the command it stands for)."""
    return f"mirror:{verb}-pair:{code}"


def pairing_announcement(
    account: str, name: str | None, code: str, minutes: int, said: str
) -> tuple[str, list[dict[str, str]]]:
    """What the coordinator is told when an unknown account asks to be let in: the text
    and its Approve / Deny buttons (label and data, as outbox payloads carry them)."""
    who = f"{name} ({account})" if name else account
    excerpt = said if len(said) <= 200 else said[:199] + "…"
    text = (
        f"{who} asks to talk with me (pairing code {code}, valid for {minutes} minutes). "
        f"They wrote: “{excerpt}”\n"
        f"/approve-pair {code} or /deny-pair {code}"
    )
    buttons = [
        {"label": "Approve", "data": pair_button("approve", code)},
        {"label": "Deny", "data": pair_button("deny", code)},
    ]
    return text, buttons


async def approve_pairing(memory: Memory, code: str, actor: str) -> Outcome:
    """Let in the account that was given `code`: the code is used up, the approval audited,
    and the person told on their entrance."""
    normalized = normalize_code(code)
    try:
        account = await memory.approve_pairing_code(normalized, actor, welcome=PAIRED_WELCOME)
    except CodeError as exc:
        return invalid(f"I can't approve {normalized}: {exc}.")
    who = account.display_name or account.external_id
    return Outcome(
        f"Approved: {who} ({account.entrance}:{account.external_id}) can talk to me now.",
        changed=True,
    )


async def deny_pairing(memory: Memory, code: str, actor: str) -> Outcome:
    """Refuse the account that was given `code` (`/deny-pair`, `mirror pair deny`, the
    console's Deny): the code is used up, the denial audited, the person told once where
    they asked, and silence after (see the module's policy)."""
    normalized = normalize_code(code)
    try:
        account = await memory.refuse_pairing_code(normalized, actor, notice=PAIR_DENIED)
    except CodeError as exc:
        return invalid(f"I can't deny {normalized}: {exc}.")
    who = account.display_name or account.external_id
    return Outcome(
        f"Denied: {who} ({account.entrance}:{account.external_id}) is not let in; they are "
        "told once and hear nothing more from me.",
        changed=True,
    )


async def revoke_access(memory: Memory, config: Config, account: str, actor: str) -> Outcome:
    """Take back the access of the person with `account` (ENTRANCE:ID), every linked account
    with it; each is told once, at its next message, then hears nothing more. Raises
    ValueError when the address is not ENTRANCE:ID."""
    ref = AccountRef.parse(account)
    try:
        accounts, had_access = await memory.revoke_access(ref.entrance, ref.external_id, actor)
    except CodeError as exc:
        return invalid(f"Nothing to revoke: {exc}.")
    done = "can no longer talk to me" if had_access else "had not been let in; now they can't ask"
    lines = [f"Revoked: {', '.join(accounts)} {done}."]
    roster = Roster(config)
    entrances: list[str] = []
    for name in accounts:
        other = AccountRef.parse(name)
        if roster.roles(other) & {"admin", "coordinator", "allowed"}:
            lines.append(
                f"Note: config lets {other} in (admins, coordinator or [access.{other.entrance}]"
                " allow): remove it there too."
            )
        if other.entrance not in entrances:
            entrances.append(other.entrance)
    for entrance in entrances:
        policy = config.access.entrance(entrance).policy
        if policy != "pairing":
            lines.append(
                f"Note: {entrance}'s access policy is '{policy}', not 'pairing', so this "
                "changes nothing there."
            )
    return Outcome("\n".join(lines), changed=True)


async def allow_access(memory: Memory, config: Config, account: str, actor: str) -> Outcome:
    """Let the account (ENTRANCE:ID) in without a pairing code (the console's Allow; an
    admin's or the coordinator's decision, audited): it may talk to the persona on an
    entrance with policy 'pairing', also after a revocation. Raises ValueError when the
    address is not ENTRANCE:ID."""
    ref = AccountRef.parse(account)
    await memory.grant_access(ref.entrance, ref.external_id, actor)
    policy = config.access.entrance(ref.entrance).policy
    note = (
        ""
        if policy == "pairing"
        else f" Note: {ref.entrance}'s access policy is '{policy}', not 'pairing', so this "
        "changes nothing there."
    )
    return Outcome(f"Allowed: {ref} can talk to me now.{note}", changed=True)


async def pending_pairings(memory: Memory) -> list[PendingPairing]:
    """Unused, unexpired pairing codes (for `mirror pair list`)."""
    return await memory.pending_pairings()


async def list_people(memory: Memory) -> list[Person]:
    """Everyone the persona knows, each with their linked accounts (`mirror people`)."""
    return await memory.people()


async def link_accounts(memory: Memory, first: str, second: str, actor: str) -> Outcome:
    """Link two accounts (ENTRANCE:ID each) to one person (`mirror link A B`).

    The older person keeps everything; accounts that never wrote yet are created. Raises
    ValueError when an address is not ENTRANCE:ID.
    """
    a, b = AccountRef.parse(first), AccountRef.parse(second)
    result = await memory.link_identities(
        (a.entrance, a.external_id), (b.entrance, b.external_id), actor
    )
    if result.merged_person is None:
        return Outcome(f"{first} and {second} already are one person.")
    return Outcome(
        f"Linked: {', '.join(result.accounts)} are one person now (#{result.kept_person}).",
        changed=True,
    )


async def unlink_account(memory: Memory, account: str, actor: str) -> Outcome:
    """Give an account a person of its own again (`mirror unlink A`).

    Its private conversations go with it; what it wrote before stays with the person it
    leaves. Raises ValueError when the address is not ENTRANCE:ID.
    """
    ref = AccountRef.parse(account)
    try:
        unlinked = await memory.unlink_identity(ref.entrance, ref.external_id, actor)
    except CodeError as exc:
        return invalid(f"Nothing to unlink: {exc}.")
    return Outcome(f"Unlinked: {ref} is person #{unlinked.person_id} now.", changed=True)
