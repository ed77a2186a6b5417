"""Lean processes with a real model: memory, cold start and CPU per message (issue 24).

`mirror up` (the console script) with Telegram, Discord and email against their fakes
(tests/fakes: the fake Bot API, the fake Discord REST + gateway, a real Dovecot and an SMTP
sink) plus the scheduler, on a real-model config: `openai/fake-model` with `api_base` at the
fake OpenAI-compatible API (tests/fakes/openai_api), which answers at once. Each run (see
RUNS: as shipped, i.e. recall by meaning on when installed, `[recall] encoder = "auto"`
(int8 where the CPU has int8 dot products, bot/embedding_onnx.py); with the numpy encoder;
with recall off; and through litellm, where this issue started), on an empty memory or
on a copy of the 10k prefilled memory (bench/prefill: 10k messages of other people,
recalled and mirrored; the person talking starts a new conversation):
- cold start to the first reply: a Telegram message is waiting before `mirror up` is
  spawned; from spawn to the fake's recording of the reply (goal <= 3 s on a quiet machine;
  the load average is printed beside it), and the CPU the telegram process spent to get
  there (less at the mercy of other tenants);
- resident memory (VmRSS) per process and in total (supervisor included), idle (every
  entrance ready) and after MESSAGES messages (goal: total <= 300 MiB), and QUIET_S later
  (the encoder's weight pages given back);
- CPU per message ((utime + stime) from /proc, over the messages): of each entrance
  process, and of all processes together over all messages (goal at 10k: <= 15 ms; under
  `mirror up` the scheduler embeds and searches for the entrances, bot/recall_host.py, so
  the whole is what a message costs); one person per entrance, the entrances talked to at
  the same time.
Then what each import costs: one more `mirror up` with PYTHONPROFILEIMPORTTIME=1 (every
child prints `-X importtime`), up to its first reply; per process the total and the
costliest top-level packages (self time summed per package; the top 15 for the process
that calls the model).
And the model client alone, in a child process per client against the fake model API in
another process: import time, resident memory and CPU per call of `bot.llm.complete`
through litellm (MIRROR_MODEL_CLIENT=litellm) and through the direct OpenAI-compatible
path that `bot.llm` takes by default for OpenAI-compatible servers.

The project's modules are compiled to bytecode first (`compile_project`), as an installed
MirrorOS has them.

python -m bench.lean [MESSAGES]        (default 300)
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bench import prefill
from bench.common import (
    LIMITS_TOML,
    ROOT,
    Figure,
    child_env,
    context_switches,
    cpu_ns,
    cpu_seconds,
    emit,
    load_average,
    mirror_command,
    print_figures,
    progress,
    read_json_line,
    rss_mib,
    run_dir,
    wakeup_cost_us,
    write_config,
)

MESSAGES = 300
SPLIT = {"telegram": 0.5, "discord": 1 / 3, "email": 1 / 6}  # of MESSAGES, per entrance
TELEGRAM_TOKEN = "123:BENCH"
TG_PERSON = 1001
GUILD, CHANNEL = 200_000_000_000_000_001, 300_000_000_000_000_001
DC_PERSON = 400_000_000_000_000_002
MODEL = "openai/fake-model"
TOTAL_RSS_GOAL_MIB = 300.0
COLD_START_GOAL_S = 3.0
CPU_GOAL_MS = 15.0
CLIENT_CALLS = 300
TURN_S = 60.0
WORDS = (
    "garden train coffee report heron weekend draft review project meeting lisbon ferns "
    "harbour letter bicycle market river autumn kettle library"
).split()


def chatter(n: int, where: str = "") -> str:
    """The n-th message of a person: everyday words, never a time (no intentions), never
    what the persona said elsewhere (that would be an echo)."""
    picked = [WORDS[(n * 7 + k * 3) % len(WORDS)] for k in range(3 + n % 5)]
    return f"{where} note {n}: about the {' and the '.join(picked)}".strip()


_answers = itertools.count(1)


def model_answer(body: dict[str, Any]) -> str:
    """The fake model's JSON answer: a different one each time, quoting nobody."""
    return json.dumps({"reply": f"Noted, thank you (answer {next(_answers)}).", "notes": []})


# The run of `mirror up` ---------------------------------------------------------------------


@dataclass
class Child:
    name: str
    pid: int


@dataclass
class UpRun:
    label: str
    load: str = ""
    cold_start_s: float = float("nan")
    cold_cpu_s: float = float("nan")  # CPU of the telegram process up to its first reply
    ready_s: dict[str, float] = field(default_factory=dict)
    rss_idle: dict[str, float] = field(default_factory=dict)
    rss_after: dict[str, float] = field(default_factory=dict)
    pss_idle: dict[str, float] = field(default_factory=dict)
    pss_after: dict[str, float] = field(default_factory=dict)
    rss_quiet: dict[str, float] = field(default_factory=dict)  # QUIET_S after the last
    pss_quiet: dict[str, float] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    switches: dict[str, int] = field(default_factory=dict)  # context switches, the messages'
    idle_cpu_ms: dict[str, float] = field(default_factory=dict)  # over IDLE_S after QUIET_S
    idle_switches: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    imports: dict[str, list[str]] = field(default_factory=dict)  # child -> importtime lines
    settled_s: float = float("nan")  # after the ready lines, until all processes went idle
    settle_cpu_s: float = float("nan")  # the CPU they spent meanwhile


IDLE_CORE = 0.05  # all processes together under 5 % of a core: start-up is over
SETTLE_TIMEOUT_S = 60.0


async def settled(pids: list[int], window_s: float = 1.0) -> tuple[float, float]:
    """Wait until the processes together use under IDLE_CORE of a core over `window_s`
    (at most SETTLE_TIMEOUT_S): the seconds waited and the CPU spent meanwhile."""
    started = time.perf_counter()
    first = sum(cpu_seconds(pid) for pid in pids)
    while time.perf_counter() - started < SETTLE_TIMEOUT_S:
        before = sum(cpu_seconds(pid) for pid in pids)
        await asyncio.sleep(window_s)
        if sum(cpu_seconds(pid) for pid in pids) - before < IDLE_CORE * window_s:
            break
    return time.perf_counter() - started, sum(cpu_seconds(pid) for pid in pids) - first


def pss_mib(pid: int) -> float:
    """Proportional set size (Pss in /proc/PID/smaps_rollup) in MiB: a page shared by n
    processes (the encoder's memory-mapped weights, libraries) counts 1/n in each, so the
    sum over processes is the memory they really use together; RSS counts it n times."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children_of(pid: int) -> list[Child]:
    """`mirror up`'s children (by the NAME of their `run NAME`) and the supervisor itself."""
    found = [Child("supervisor", pid)]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(stat[1]) != pid:
                continue
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode() for a in argv if a]
        name = words[words.index("run") + 1] if "run" in words else words[-1]
        found.append(Child(name, int(entry.name)))
    return found


class Up:
    """A `mirror up` child whose output lines (both streams) are collected."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.config, self.env = config, env
        self.lines: list[tuple[float, str]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self.started = 0.0
        self._changed = asyncio.Event()
        self._readers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.started = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            *mirror_command(),
            "up",
            "--config",
            str(self.config),
            cwd=ROOT,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout and self.proc.stderr
        self._readers = [
            asyncio.create_task(self._collect(self.proc.stdout)),
            asyncio.create_task(self._collect(self.proc.stderr)),
        ]

    async def _collect(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append((time.perf_counter(), line.decode(errors="replace").rstrip("\n")))
            self._changed.set()

    async def wait_for(self, name: str, words: str, timeout: float = TURN_S) -> float:
        """Seconds from spawn until `[name] ...words...` appeared."""

        async def seen() -> float:
            while True:
                self._changed.clear()
                for at, line in self.lines:
                    if line.startswith(f"[{name}]") and words in line:
                        return at - self.started
                assert self.proc is not None
                if self.proc.returncode is not None:
                    raise RuntimeError(f"mirror up exited: {self.tail()}")
                await self._changed.wait()

        try:
            return await asyncio.wait_for(seen(), timeout)
        except TimeoutError:
            raise RuntimeError(f"no [{name}] {words!r} in {timeout} s: {self.tail()}") from None

    def tail(self) -> str:
        return "\n".join(line for _, line in self.lines[-60:])

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), 60)
        except TimeoutError:
            os.killpg(self.proc.pid, signal.SIGKILL)
            await self.proc.wait()
        for reader in self._readers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reader, 5)


def system_toml(
    telegram: Any,
    discord: Any,
    dovecot: Any,
    smtp: Any,
    model_url: str,
    recall: bool,
    encoder: str = "",
) -> str:
    """The run's mirror.toml: `encoder` names `[recall] encoder` ("": the default, "auto")."""
    from tests.fakes.mail_servers import PERSONA

    recall_table = ("" if recall else "enabled = false\n") + (
        f'encoder = "{encoder}"\n' if encoder else ""
    )
    return (
        f"{LIMITS_TOML}\n"
        + (f"[recall]\n{recall_table}\n" if recall_table else "")
        + f'[model]\nname = "{MODEL}"\napi_base = "{model_url}"\nretries = 0\n\n'
        "[scheduler]\ninterval_s = 1.0\n\n"
        "[entrances.telegram]\nenabled = true\n"
        f'base_url = "{telegram.base_url}"\nbase_file_url = "{telegram.base_file_url}"\n\n'
        "[entrances.discord]\nenabled = true\n"
        f'api_base = "{discord.api_base}"\ngateway_url = "{discord.gateway_url}"\n'
        f'channels = ["{CHANNEL}"]\n\n'
        "[entrances.email]\nenabled = true\n"
        f'address = "{PERSONA}"\nimap_host = "127.0.0.1"\nimap_port = {dovecot.imap_port}\n'
        f'smtp_host = "127.0.0.1"\nsmtp_port = {smtp.port}\nsecurity = "none"\n'
    )


async def run_up(
    label: str,
    db_size: int | None,
    messages: int,
    *,
    imports: bool = False,
    recall: bool = True,
    client: str = "",
    encoder: str = "",
) -> UpRun:
    """One `mirror up` on a fresh or prefilled memory: cold start, RSS, CPU per message."""
    from tests.fakes.discord_api import DEFAULT_TOKEN as DISCORD_TOKEN
    from tests.fakes.discord_api import FakeDiscord
    from tests.fakes.mail_servers import (
        ALICE,
        ALICE_PASSWORD,
        PERSONA,
        PERSONA_PASSWORD,
        Dovecot,
        SmtpSink,
    )
    from tests.fakes.openai_api import FakeOpenAI
    from tests.fakes.telegram_api import FakeTelegram

    result = UpRun(label)
    folder = run_dir(f"lean-{re.sub(r'[^a-z0-9]+', '-', label)}")
    # memory.db in a folder of its own: the soul watcher watches SOUL.md's folder, and
    # every write beside it would wake it (as var/ and soul/ are apart in a real install).
    data = folder / "data"
    data.mkdir()
    db = prefill.working_copy(db_size, data) if db_size else data / "memory.db"
    model = FakeOpenAI()
    model.responder = model_answer
    telegram = FakeTelegram(tokens=[TELEGRAM_TOKEN])
    discord = FakeDiscord()
    discord.add_guild(GUILD, "Heron Club", channels=[(CHANNEL, "general")])
    discord.add_user(DC_PERSON, "bob")
    dm = discord.open_dm(DC_PERSON)
    dovecot = Dovecot()
    dovecot.add_user(PERSONA, PERSONA_PASSWORD)
    dovecot.add_user(ALICE, ALICE_PASSWORD)
    await dovecot.start()
    smtp = SmtpSink(dovecot)
    up: Up | None = None
    try:
        await smtp.start()
        # `mirror up` stops before the fakes it talks to (the stack exits first): a Telegram
        # entrance whose server vanished logged a failed last get_updates at every stop.
        async with model, telegram, discord, contextlib.AsyncExitStack() as stops:
            config = write_config(
                folder,
                db,
                system_toml(telegram, discord, dovecot, smtp, model.base_url, recall, encoder),
            )
            env = child_env(
                MIRROR_TELEGRAM_TOKEN=TELEGRAM_TOKEN,
                MIRROR_DISCORD_TOKEN=DISCORD_TOKEN,
                MIRROR_EMAIL_PASSWORD=PERSONA_PASSWORD,
                OPENAI_API_KEY="sk-bench",
            )
            if imports:
                env["PYTHONPROFILEIMPORTTIME"] = "1"
            if client:
                env["MIRROR_MODEL_CLIENT"] = client
            telegram.push_message(TG_PERSON, "hello, are you there?", user_id=TG_PERSON)
            result.load = load_average()
            up = Up(config, env)
            stops.push_async_callback(up.stop)
            await up.start()
            await telegram.wait_for_sent(lambda s: s["chat_id"] == TG_PERSON, timeout=TURN_S)
            result.cold_start_s = time.perf_counter() - up.started
            assert up.proc is not None
            # CPU the entrance spent to get there: less at the mercy of other tenants.
            for child in children_of(up.proc.pid):
                if child.name == "telegram":
                    result.cold_cpu_s = cpu_seconds(child.pid)
            for name, words in [
                ("telegram", "polling as"),
                ("discord", "connected"),
                ("email", "watching"),
                ("scheduler", "now the leader"),
            ]:
                result.ready_s[name] = await up.wait_for(name, words)
            assert up.proc is not None
            if imports:
                result.imports = imports_by_child(up.lines)
                return result
            await asyncio.sleep(3.0)  # start-up's last writes and first heartbeats settle
            children = children_of(up.proc.pid)
            # Start-up's own work (the host's recall embeds, once, the newest rows of each
            # kind without a vector: up to 200 a kind, ~0.5-2 s of CPU on the prefilled memory,
            # which has none) is over before idle memory and CPU per message are measured.
            result.settled_s, result.settle_cpu_s = await settled([c.pid for c in children])
            result.rss_idle = {c.name: rss_mib(c.pid) for c in children}
            result.pss_idle = {c.name: pss_mib(c.pid) for c in children}
            counts = {name: max(1, round(messages * share)) for name, share in SPLIT.items()}
            before = {c.name: cpu_seconds(c.pid) for c in children}
            switched = {c.name: context_switches(c.pid) for c in children}
            progress(f"lean [{label}]: {sum(counts.values())} messages {counts}")

            async def telegram_turns() -> None:
                for n in range(counts["telegram"]):
                    since = len(telegram.sent)
                    telegram.push_message(TG_PERSON, chatter(n, "tg"), user_id=TG_PERSON)
                    await telegram.wait_for_sent(
                        lambda s: s["chat_id"] == TG_PERSON, since=since, timeout=TURN_S
                    )

            async def discord_turns() -> None:
                for n in range(counts["discord"]):
                    since = len(discord.sent)
                    await discord.push_message(dm, chatter(n, "dc"), author_id=DC_PERSON)
                    # The only conversation on Discord: any message the bot sends.
                    await discord.wait_for_sent(since=since, timeout=TURN_S)

            async def email_turns() -> None:
                for n in range(counts["email"]):
                    mail = EmailMessage()
                    mail["From"] = f"Alice <{ALICE}>"
                    mail["To"] = PERSONA
                    mail["Subject"] = f"note {n}"
                    mail["Message-ID"] = f"<lean-{label}-{n}@example.test>"
                    mail.set_content(chatter(n, "mail"))
                    dovecot.deliver(PERSONA, mail)
                    await smtp.wait_for(lambda m: ALICE in m.rcpt_tos, count=n + 1, timeout=TURN_S)

            try:
                await asyncio.gather(telegram_turns(), discord_turns(), email_turns())
            except TimeoutError as exc:
                (folder.parent / f"{folder.name}.log").write_text(
                    "\n".join(line for _, line in up.lines), encoding="utf-8"
                )
                shutil.copytree(data, folder.parent / f"{folder.name}-data", dirs_exist_ok=True)
                raise RuntimeError(f"{exc}\nmirror up said:\n{up.tail()}") from None
            await asyncio.sleep(1.0)  # the last replies are marked sent
            for child in children:
                result.cpu_ms[child.name] = (cpu_seconds(child.pid) - before[child.name]) * 1000
                result.switches[child.name] = context_switches(child.pid) - switched[child.name]
                result.rss_after[child.name] = rss_mib(child.pid)
                result.pss_after[child.name] = pss_mib(child.pid)
            await asyncio.sleep(QUIET_S)
            result.rss_quiet = {c.name: rss_mib(c.pid) for c in children}
            result.pss_quiet = {c.name: pss_mib(c.pid) for c in children}
            # Then idle, between conversations: what the pollers and timers cost.
            idle_cpu = {c.name: cpu_ns(c.pid) for c in children}
            idle_switches = {c.name: context_switches(c.pid) for c in children}
            await asyncio.sleep(IDLE_S)
            for child in children:
                spent = cpu_ns(child.pid) - idle_cpu[child.name]
                result.idle_cpu_ms[child.name] = spent / 1e6
                switches = context_switches(child.pid) - idle_switches[child.name]
                result.idle_switches[child.name] = switches
            result.messages = counts
            return result
    finally:
        await smtp.stop()
        await dovecot.stop(wait=False)
        shutil.rmtree(folder, ignore_errors=True)


_IMPORT = re.compile(r"^\[(?P<child>[a-z_]+)\] import time:\s*(?P<self>\d+) \|\s*(?P<cum>\d+) \|")


def imports_by_child(lines: list[tuple[float, str]]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for _, line in lines:
        match = _IMPORT.match(line)
        if match:
            found.setdefault(match["child"], []).append(line.split("] ", 1)[1])
    return found


def package_costs(lines: list[str]) -> tuple[float, list[tuple[str, float]]]:
    """Total import ms, and ms per top-level package (self times summed), costliest first."""
    per: dict[str, float] = {}
    total = 0.0
    for line in lines:
        parts = line.split("|")
        if len(parts) != 3:
            continue
        own, name = parts[0].rsplit(":", 1)[-1].strip(), parts[2]
        if not own.isdigit():
            continue
        package = name.strip().split(".")[0]
        per[package] = per.get(package, 0.0) + int(own) / 1000
        total += int(own) / 1000
    return total, sorted(per.items(), key=lambda item: -item[1])


# The model client alone ------------------------------------------------------------------


async def client_worker(client: str, base_url: str, calls: int) -> None:
    """In a child: import bot.llm's client, then `calls` calls of llm.complete; the costs."""
    import resource

    started = time.perf_counter()
    from bot import llm
    from bot.config import ModelConfig
    from bot.context import Context

    config = ModelConfig(name=MODEL, api_base=base_url, retries=0)
    await llm.preload(config)
    loaded = time.perf_counter() - started
    context = Context(
        soul_name="Wren",
        soul_text="# Name\nWren\n",
        soul_version=None,
        instance_id="bench",
        entrance="local",
        style="conversational",
        timezone="UTC",
        now=datetime.now(UTC),
        person_id=1,
        person_name="Alice",
        conversation_kind="dm",
        incoming_id=1,
        text="hello",
    )
    for _ in range(10):  # connections, caches
        await llm.complete(config, context)
    cpu = time.process_time()
    for n in range(calls):
        answer = await llm.complete(config, context.model_copy(update={"text": chatter(n)}))
        assert answer.reply.text.startswith("Noted"), answer
    per_call = (time.process_time() - cpu) / calls
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    emit(
        {
            "client": client,
            "load_s": loaded,
            "cpu_ms": per_call * 1000,
            "rss": rss_mib(os.getpid()),
            "peak": peak,
            "litellm": "litellm" in sys.modules,
        }
    )


def measure_clients(calls: int = CLIENT_CALLS) -> list[dict[str, Any]]:
    fake = subprocess.Popen(
        [sys.executable, "-m", "bench.lean", "fake-model"],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        url = fake.stdout.readline().split()[-1]
        results = []
        for client in ("litellm", "direct"):
            env = child_env(OPENAI_API_KEY="sk-bench")
            if client == "litellm":
                env["MIRROR_MODEL_CLIENT"] = "litellm"
            child = subprocess.Popen(
                [sys.executable, "-m", "bench.lean", "client", client, url, str(calls)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            results.append(read_json_line(child))
            child.wait(timeout=60)
        return results
    finally:
        fake.terminate()
        fake.wait(timeout=30)


async def serve_fake_model() -> None:
    from tests.fakes.openai_api import FakeOpenAI

    fake = FakeOpenAI()
    fake.responder = model_answer
    await fake.serve_until_signalled("/v1")


# The figures -------------------------------------------------------------------------------


# Quiet again: longer than `[recall] release_after_s` (5 s), after which a process that
# embedded gives the encoder's weight pages back.
QUIET_S = 7.0
IDLE_S = 10.0  # then the idle figures: CPU and wake-ups over this long


def up_figures(run: UpRun) -> list[Figure]:
    total_idle, total_after = sum(run.rss_idle.values()), sum(run.rss_after.values())
    rows = [
        Figure(
            f"lean [{run.label}]: cold start -> first reply (load {run.load})",
            f"{run.cold_start_s:.2f} s",
            f"<= {COLD_START_GOAL_S:.0f} s",
            run.cold_start_s <= COLD_START_GOAL_S,
        ),
        Figure(f"lean [{run.label}]: cold start: CPU of telegram to it", f"{run.cold_cpu_s:.2f} s"),
        Figure(
            f"lean [{run.label}]: ready s telegram/discord/email/scheduler",
            "/".join(f"{run.ready_s.get(n, float('nan')):.1f}" for n in SPLIT | {"scheduler": 0}),
        ),
        Figure(
            f"lean [{run.label}]: start-up settled (all idle) after, CPU meanwhile",
            f"{run.settled_s:.1f} s, {run.settle_cpu_s:.2f} s",
        ),
        Figure(
            f"lean [{run.label}]: RSS total idle (supervisor + 4)",
            f"{total_idle:.0f} MiB",
            f"<= {TOTAL_RSS_GOAL_MIB:.0f} MiB",
            total_idle <= TOTAL_RSS_GOAL_MIB,
        ),
        Figure(
            f"lean [{run.label}]: RSS total after {sum(run.messages.values())} messages",
            f"{total_after:.0f} MiB",
            f"<= {TOTAL_RSS_GOAL_MIB:.0f} MiB",
            total_after <= TOTAL_RSS_GOAL_MIB,
        ),
        Figure(
            f"lean [{run.label}]: RSS / PSS total {QUIET_S:.0f} s after the last message",
            f"{sum(run.rss_quiet.values()):.0f} / {sum(run.pss_quiet.values()):.0f} MiB",
        ),
        Figure(
            f"lean [{run.label}]: PSS total idle / after (shared pages split)",
            f"{sum(run.pss_idle.values()):.0f} / {sum(run.pss_after.values()):.0f} MiB",
        ),
    ]
    for name in run.rss_idle:
        rows.append(
            Figure(
                f"lean [{run.label}]: RSS {name} idle / after",
                f"{run.rss_idle[name]:.0f} / {run.rss_after.get(name, float('nan')):.0f} MiB",
            )
        )
    for name, count in run.messages.items():
        per = run.cpu_ms.get(name, float("nan")) / count
        rows.append(
            Figure(f"lean [{run.label}]: CPU per message, {name} ({count} msgs)", f"{per:.1f} ms")
        )
    # The goal is on what a message costs the host: under `mirror up` the scheduler embeds
    # and searches for the entrances (bot/recall_host.py), so no one process says it.
    if run.messages:
        whole = sum(run.cpu_ms.values()) / sum(run.messages.values())
        goal = run.label.startswith("10k")
        rows.append(
            Figure(
                f"lean [{run.label}]: CPU per message, all processes (supervisor + 4)",
                f"{whole:.1f} ms",
                f"<= {CPU_GOAL_MS:.0f} ms" if goal else "",
                whole <= CPU_GOAL_MS if goal else None,
            )
        )
    if run.messages and run.switches:
        # Each is a wake-up: what they cost is the machine's (`wakeup_cost_us`, printed
        # with these runs), and part of the CPU per message above.
        per = sum(run.switches.values()) / sum(run.messages.values())
        rows.append(
            Figure(f"lean [{run.label}]: context switches per message, all processes", f"{per:.0f}")
        )
    for name in ("supervisor", "scheduler"):
        if name in run.cpu_ms:
            rows.append(
                Figure(
                    f"lean [{run.label}]: CPU of {name} during the messages",
                    f"{run.cpu_ms[name]:.0f} ms",
                )
            )
    if run.idle_cpu_ms:
        # Between conversations, where a persona spends most of its time: what the pollers
        # and timers cost (outbox couriers, soul watchers, heartbeats), all processes.
        per_s = sum(run.idle_cpu_ms.values()) / IDLE_S
        woken = sum(run.idle_switches.values()) / IDLE_S
        rows.append(
            Figure(
                f"lean [{run.label}]: idle, all processes: CPU, wake-ups",
                f"{per_s:.1f} ms/s, {woken:.0f}/s",
            )
        )
        names = list(run.idle_cpu_ms)
        rows.append(
            Figure(
                f"lean [{run.label}]: idle CPU ms/s {'/'.join(names)}",
                "/".join(f"{run.idle_cpu_ms[n] / IDLE_S:.1f}" for n in names),
            )
        )
    return rows


def import_figures(run: UpRun) -> list[Figure]:
    rows = [
        Figure(
            f"imports: cold start -> first reply under -X importtime (load {run.load})",
            f"{run.cold_start_s:.2f} s",
        )
    ]
    for child, lines in sorted(run.imports.items()):
        total, packages = package_costs(lines)
        litellm = any(name == "litellm" for name, _ in packages)
        rows.append(
            Figure(
                f"imports [{child}]: total (litellm {'imported' if litellm else 'not imported'})",
                f"{total:.0f} ms",
            )
        )
        top = 15 if child == "telegram" else 5
        for rank, (package, spent) in enumerate(packages[:top], 1):
            rows.append(Figure(f"imports [{child}] #{rank:<2} {package}", f"{spent:.0f} ms"))
    return rows


def client_figures(results: list[dict[str, Any]]) -> list[Figure]:
    rows = []
    for r in results:
        via = f"client [{r['client']}]"
        rows += [
            Figure(f"{via}: import + preload", f"{float(r['load_s']):.2f} s"),
            Figure(
                f"{via}: RSS after {CLIENT_CALLS} calls (peak)",
                f"{float(r['rss']):.0f} ({float(r['peak']):.0f}) MiB",
            ),
            Figure(f"{via}: CPU per llm.complete call", f"{float(r['cpu_ms']):.2f} ms"),
            Figure(f"{via}: litellm imported", "yes" if r["litellm"] else "no"),
        ]
    return rows


# (label, prefilled size, run_up options): as shipped (recall by meaning on when
# installed, the encoder "auto"), with the numpy encoder (the reference: more CPU, its
# weights' pages given back when idle), with recall off (what is left when the embedding
# model is not loaded), and through litellm (MIRROR_MODEL_CLIENT=litellm: what this issue
# started from).
RUNS: tuple[tuple[str, int | None, dict[str, Any]], ...] = (
    ("empty", None, {}),
    ("10k", 10_000, {}),
    ("10k, numpy encoder", 10_000, {"encoder": "numpy"}),
    ("empty, recall off", None, {"recall": False}),
    ("10k, recall off", 10_000, {"recall": False}),
    ("empty, litellm, recall off", None, {"recall": False, "client": "litellm"}),
)


def chosen_runs() -> list[tuple[str, int | None, dict[str, Any]]]:
    """RUNS, or those whose labels BENCH_LEAN_RUNS names (the labels
    separated by ";", e.g. "10k;10k, recall off")."""
    wanted = os.environ.get("BENCH_LEAN_RUNS")
    if not wanted:
        return list(RUNS)
    labels = [label.strip() for label in wanted.split(";")]
    unknown = set(labels) - {label for label, _, _ in RUNS}
    if unknown:
        raise SystemExit(f"BENCH_LEAN_RUNS: no run named {sorted(unknown)}")
    return [run for run in RUNS if run[0] in labels]


def compile_project() -> None:
    """Bytecode for bot/ and adapters/, as an installed MirrorOS has it: where
    PYTHONDONTWRITEBYTECODE is set (this machine's environment sets it), every process
    would compile the project's modules from source at each start (about 0.2 s of CPU,
    and heap for the compiler) and the figures would measure that instead."""
    import compileall

    for package in ("bot", "adapters"):
        compileall.compile_dir(ROOT / package, quiet=1)


def run(messages: int = MESSAGES) -> list[Figure]:
    asyncio.run(prefill.ensure([10_000]))
    compile_project()
    wall, cpu = wakeup_cost_us()
    figures = [
        Figure(
            "lean: machine, a round trip between two threads (wall / CPU)",
            f"{wall:.0f} / {cpu:.0f} us",
        )
    ]
    runs = chosen_runs()
    if len(runs) < len(RUNS):  # a chosen few: the figures of issue 24's goals only
        for label, size, options in runs:
            progress(f"lean [{label}]: mirror up, 3 entrances + scheduler, {messages} messages")
            figures += up_figures(asyncio.run(run_up(label, size, messages, **options)))
        return figures
    progress("lean: the model client alone, litellm and direct")
    figures += client_figures(measure_clients())
    for label, size, options in runs:
        progress(f"lean [{label}]: mirror up, 3 entrances + scheduler, {messages} messages")
        figures += up_figures(asyncio.run(run_up(label, size, messages, **options)))
    progress("lean: mirror up under -X importtime")
    figures += import_figures(asyncio.run(run_up("imports", None, 0, imports=True)))
    return figures


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        asyncio.run(client_worker(sys.argv[2], sys.argv[3], int(sys.argv[4])))
    elif sys.argv[1:2] == ["fake-model"]:
        asyncio.run(serve_fake_model())
    else:
        print_figures(run(*(int(a) for a in sys.argv[1:2])))
