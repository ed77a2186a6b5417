"""Model calls: the ONLY module that imports litellm.

`complete` asks the configured model, then each fallback, for a structured reply. The
offline brain (`mirror/…`) is called directly; litellm is imported only when a real model
is in the chain, so a persona on the offline brain never pays for it (seconds of import,
a hundred MiB). We ask real models for a JSON reply (`response_format`), validate it with
pydantic, and fall back to plain text when a model answers in prose. Retries (with
backoff) and fallbacks are ours, per model, so their count and timing are exactly what the
config says; litellm's own retries are switched off. A refused key or an unknown model is
not retried: another try cannot fix it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from bot.config import ModelConfig
from bot.context import Context, render_messages
from bot.entrance import manifests
from bot.models import IntentionDraft, Reply

log = logging.getLogger(__name__)

OFFLINE_MODEL = "mirror/offline"
_FENCE = re.compile(r"^```(?:json)?\s*(?P<body>.*?)\s*```$", re.S)
_litellm: Any = None
_import_lock = threading.Lock()


class ModelUnavailable(Exception):
    """Every model (with retries and fallbacks) failed; the reason is short and loggable."""


class _ModelIntention(BaseModel):
    text: str
    subject: str | None = None
    due_at: datetime | None = None
    duration_minutes: int = Field(default=60, ge=1, le=24 * 60)
    target_entrance: str | None = None
    kind: Literal["promise", "reminder"] = "promise"
    recurrence: dict[str, Any] | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> str:
        return "reminder" if str(value or "").lower() == "reminder" else "promise"

    @field_validator("recurrence", mode="before")
    @classmethod
    def _cron_fields(cls, value: Any) -> dict[str, Any] | None:
        # Checked against CronTrigger when stored (bot.mind): here only its shape.
        return value if isinstance(value, dict) and value else None

    @field_validator("target_entrance")
    @classmethod
    def _known_entrance(cls, value: str | None) -> str | None:
        if value in (None, "", "null", "none"):
            return None
        value = value.lower()
        return value if value in manifests() else None


class _ModelReply(BaseModel):
    reply: str
    intentions: list[_ModelIntention] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    done: list[int] = Field(default_factory=list)
    person_name: str | None = None


@dataclass(frozen=True)
class Answer:
    reply: Reply
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


class MissingKey(Exception):
    """A real model's key is not set: another attempt cannot fix it (the next model may)."""


def is_offline(model: str) -> bool:
    """The offline brain answers every `mirror/…` model, in this process."""
    return model.startswith("mirror/")


def needs_litellm(config: ModelConfig) -> bool:
    """Does the model chain (the model, then its fallbacks) name a real model?"""
    return any(not is_offline(model) for model in [config.name, *config.fallbacks])


def parse_reply(content: str | None) -> Reply:
    """A model's content as a Reply: validated JSON, else the prose itself."""
    text = (content or "").strip()
    if not text:
        raise ValueError("the model returned an empty answer")
    body = _FENCE.match(text)
    candidate = body.group("body") if body else text
    if candidate.startswith("{"):
        try:
            data = _ModelReply.model_validate(json.loads(candidate))
        except (json.JSONDecodeError, ValidationError) as exc:
            log.warning("model answered malformed JSON; using it as prose: %s", str(exc)[:200])
        else:
            if data.reply.strip():
                return Reply(
                    text=data.reply.strip(),
                    intentions=[
                        IntentionDraft(
                            text=item.text,
                            subject=item.subject,
                            due_at=item.due_at,
                            duration_minutes=item.duration_minutes,
                            target_entrance=item.target_entrance,
                            kind=item.kind,
                            recurrence=item.recurrence,
                        )
                        for item in data.intentions
                        if item.text.strip()
                    ],
                    notes=[note for note in data.notes if note.strip()],
                    done=data.done,
                    person_name=(data.person_name or "").strip()[:64] or None,
                )
    return Reply(text=text)


def _import_litellm() -> Any:
    """Import litellm once, offline (local cost map), quiet. Blocks for seconds the first
    time: from the event loop, use `await _litellm_loaded()`."""
    global _litellm
    with _import_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True
            litellm.telemetry = False
            litellm.set_verbose = False
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
                logging.getLogger(name).setLevel(logging.WARNING)
            _litellm = litellm
    return _litellm


async def _litellm_loaded() -> Any:
    """litellm, imported in a daemon thread so the event loop keeps running meanwhile.

    Not asyncio.to_thread: its worker is joined at exit, so a process stopping during
    start-up would wait seconds for the import to finish.
    """
    if _litellm is not None:
        return _litellm
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def load() -> None:
        module: Any = None
        error: BaseException | None = None
        try:
            module = _import_litellm()
        except BaseException as exc:
            error = exc

        def report() -> None:
            if done.done():
                return
            if error is None:
                done.set_result(module)
            else:
                done.set_exception(error)

        try:
            loop.call_soon_threadsafe(report)
        except RuntimeError:
            pass  # the loop has closed: nobody is waiting

    threading.Thread(target=load, name="load-litellm", daemon=True).start()
    return await done


async def preload(config: ModelConfig | None = None) -> None:
    """Import litellm in the background when `config` names a real model, so the first
    turn does not wait for it. The offline brain needs nothing loaded (nor does a caller
    that does not say which models it will use)."""
    if config is not None and needs_litellm(config):
        await _litellm_loaded()


def offline_notice(config: ModelConfig) -> str:
    """What the offline brain says once per conversation: how to give it a real model, or
    which key the configured one is missing."""
    where = str(config.source) if config.source else "a config file"
    intro = "(I'm running on MirrorOS's offline brain, so my answers are simple."
    if config.offline_because:
        return f"{intro} {config.offline_because})"
    for model, keys in _missing_keys(config):
        return (
            f"{intro} My model {model} needs {' and '.join(keys)} in the environment (or in "
            f".env), and it is not set.)"
        )
    defaults = "" if config.source else " (none is in use: I run on the embedded defaults)"
    return (
        f"{intro} To give me a real model, set [model] name in {where}{defaults} (e.g. "
        '"openai/gpt-4o-mini") and its API key in the environment.)'
    )


def _missing_keys(config: ModelConfig) -> list[tuple[str, list[str]]]:
    """Real models in the chain whose credentials litellm finds missing (only once litellm
    is loaded: the offline brain never imports it to ask)."""
    if _litellm is None:
        return []
    found = []
    for model in [config.name, *config.fallbacks]:
        if is_offline(model):
            continue
        try:
            missing = _litellm.validate_environment(model).get("missing_keys") or []
        except Exception:
            continue
        # A configured api_base stands in for a provider's *_API_BASE variable.
        keys = [key for key in missing if not (config.api_base and key.endswith("_API_BASE"))]
        if keys:
            found.append((model, keys))
    return found


async def complete(config: ModelConfig, context: Context) -> Answer:
    """Ask the configured model (then each fallback) for a structured reply."""
    messages = render_messages(context)
    failures: list[str] = []
    for model in [config.name, *config.fallbacks]:
        for attempt in range(config.retries + 1):
            if attempt:
                await asyncio.sleep(config.retry_backoff_s * 2 ** (attempt - 1))
            try:
                if is_offline(model):
                    return _offline_answer(config, model, messages, context)
                litellm = await _litellm_loaded()
                response = await litellm.acompletion(**_call_arguments(config, model, messages))
                reply = parse_reply(response.choices[0].message.content)
            except Exception as exc:  # litellm raises many unrelated classes
                failure = _without_key(config, model, exc)
                reason = _describe(failure)
                failures.append(f"{model}: {reason}")
                log.warning("model %s failed (attempt %d): %s", model, attempt + 1, reason)
                if not _retryable(failure):
                    break
                continue
            usage = getattr(response, "usage", None)
            return Answer(
                reply=reply.model_copy(update={"model": model}),
                model=model,
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                cost_usd=_cost(litellm, response),
            )
    raise ModelUnavailable("; ".join(failures[-3:]))


def _offline_answer(
    config: ModelConfig, model: str, messages: list[dict[str, str]], context: Context
) -> Answer:
    """The offline brain's answer, through the same validation a real model's gets."""
    from bot import offline_brain

    # The notice names the config file in use, or the key a configured model lacks.
    data = offline_brain.answer(context, offline_notice(config))
    content = json.dumps(data, ensure_ascii=False)
    reply = parse_reply(content)
    prompt = sum(len(str(message.get("content", ""))) for message in messages) // 4
    return Answer(
        reply=reply.model_copy(update={"model": model}),
        model=model,
        prompt_tokens=prompt,
        completion_tokens=len(content) // 4,
    )


def _call_arguments(
    config: ModelConfig, model: str, messages: list[dict[str, str]]
) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "timeout": config.timeout_s,
        "num_retries": 0,
        "max_tokens": config.max_tokens,
        "response_format": {"type": "json_object"},
    }
    if config.api_base:
        arguments["api_base"] = config.api_base
    if config.temperature is not None:
        arguments["temperature"] = config.temperature
    return arguments


def _without_key(config: ModelConfig, model: str, exc: Exception) -> Exception:
    """A failed call to a model whose key is not set is that missing key (some providers
    report it as a server error, which would be retried)."""
    for found, keys in _missing_keys(config.model_copy(update={"name": model, "fallbacks": []})):
        return MissingKey(f"{' and '.join(keys)} not set (needed by {found})")
    return exc


def _retryable(exc: Exception) -> bool:
    if isinstance(exc, MissingKey):
        return False
    if isinstance(exc, ValueError):  # empty answer: another try may do better
        return True
    if _litellm is not None and isinstance(
        exc,
        (_litellm.AuthenticationError, _litellm.PermissionDeniedError, _litellm.NotFoundError),
    ):
        return False
    status = getattr(exc, "status_code", None)
    return status is None or status in (408, 409, 429) or status >= 500


def _describe(exc: Exception) -> str:
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{name}: {text[:160]}" if text else name


def _cost(litellm: Any, response: Any) -> float:
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:
        return 0.0
