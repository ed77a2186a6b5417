"""Model calls: the ONLY module that imports litellm.

Every model, the offline brain included, is reached through `litellm.acompletion`: the
offline brain is registered as the custom provider `mirror/…`. We ask for a JSON reply
(`response_format`), validate it with pydantic, and fall back to plain text when a model
answers in prose. Retries (with backoff) and fallbacks are ours, per model, so their count
and timing are exactly what the config says; litellm's own retries are switched off.
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
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

from bot.config import ModelConfig
from bot.context import Context, render_messages
from bot.entrance import manifests
from bot.models import IntentionDraft, Reply

log = logging.getLogger(__name__)

OFFLINE_MODEL = "mirror/offline"
_FENCE = re.compile(r"^```(?:json)?\s*(?P<body>.*?)\s*```$", re.S)
_litellm: Any = None


class ModelUnavailable(Exception):
    """Every model (with retries and fallbacks) failed; the reason is short and loggable."""


class _ModelIntention(BaseModel):
    text: str
    subject: str | None = None
    due_at: datetime | None = None
    duration_minutes: int = Field(default=60, ge=1, le=24 * 60)
    target_entrance: str | None = None

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


@dataclass(frozen=True)
class Answer:
    reply: Reply
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


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
                        )
                        for item in data.intentions
                        if item.text.strip()
                    ],
                    notes=[note for note in data.notes if note.strip()],
                    done=data.done,
                )
    return Reply(text=text)


def litellm_module() -> Any:
    """Import litellm once, offline (local cost map), with the offline brain registered."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        litellm.suppress_debug_info = True
        litellm.telemetry = False
        litellm.set_verbose = False
        for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "litellm"):
            logging.getLogger(name).setLevel(logging.WARNING)
        litellm.custom_provider_map = [
            entry for entry in litellm.custom_provider_map if entry.get("provider") != "mirror"
        ] + [{"provider": "mirror", "custom_handler": _offline_handler(litellm)}]
        _litellm = litellm
    return _litellm


def _offline_handler(litellm: Any) -> Any:
    from bot import offline_brain

    class OfflineBrain(litellm.CustomLLM):
        """litellm provider `mirror/offline`: answers from the Context in the metadata."""

        async def acompletion(
            self, model: str, messages: list[Any], *args: Any, **kwargs: Any
        ) -> Any:
            params = kwargs.get("litellm_params") or {}
            raw = (params.get("metadata") or {}).get("mirror_context")
            if raw is None:
                raise litellm.BadRequestError(
                    message="mirror/offline needs the turn context",
                    model=model,
                    llm_provider="mirror",
                )
            context = Context.model_validate(raw)
            content = json.dumps(offline_brain.answer(context), ensure_ascii=False)
            prompt = sum(len(str(m.get("content", ""))) for m in messages) // 4
            return litellm.ModelResponse(
                model=OFFLINE_MODEL,
                choices=[{"message": {"role": "assistant", "content": content}}],
                usage={
                    "prompt_tokens": prompt,
                    "completion_tokens": len(content) // 4,
                    "total_tokens": prompt + len(content) // 4,
                },
            )

        def completion(self, *args: Any, **kwargs: Any) -> Any:
            raise litellm.BadRequestError(
                message="mirror/offline is async only", model="offline", llm_provider="mirror"
            )

    return OfflineBrain()


async def preload() -> None:
    """Import litellm in a daemon thread so the first turn does not wait for it.

    Not asyncio.to_thread: its worker is joined at exit, so a process stopping during
    start-up would wait seconds for the import to finish.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def load() -> None:
        error: BaseException | None = None
        try:
            litellm_module()
        except BaseException as exc:
            error = exc

        def report() -> None:
            if done.done():
                return
            if error is None:
                done.set_result(None)
            else:
                done.set_exception(error)

        try:
            loop.call_soon_threadsafe(report)
        except RuntimeError:
            pass  # the loop has closed: nobody is waiting

    threading.Thread(target=load, name="load-litellm", daemon=True).start()
    await done


async def complete(config: ModelConfig, context: Context) -> Answer:
    """Ask the configured model (then each fallback) for a structured reply."""
    litellm = litellm_module()
    messages = render_messages(context)
    failures: list[str] = []
    for model in [config.name, *config.fallbacks]:
        for attempt in range(config.retries + 1):
            if attempt:
                await asyncio.sleep(config.retry_backoff_s * 2 ** (attempt - 1))
            try:
                response = await litellm.acompletion(
                    **_call_arguments(config, model, messages, context)
                )
                reply = parse_reply(response.choices[0].message.content)
            except Exception as exc:  # litellm raises many unrelated classes
                reason = _describe(exc)
                failures.append(f"{model}: {reason}")
                log.warning("model %s failed (attempt %d): %s", model, attempt + 1, reason)
                if not _retryable(exc):
                    break
                continue
            usage = getattr(response, "usage", None)
            return Answer(
                reply=reply.model_copy(update={"model": model}),
                model=model,
                prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
                cost_usd=_cost(litellm, response, model),
            )
    raise ModelUnavailable("; ".join(failures[-3:]))


def _call_arguments(
    config: ModelConfig, model: str, messages: list[dict[str, str]], context: Context
) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "timeout": config.timeout_s,
        "num_retries": 0,
        "max_tokens": config.max_tokens,
        "response_format": {"type": "json_object"},
    }
    if model.startswith("mirror/"):
        arguments["metadata"] = {"mirror_context": context.model_dump(mode="json")}
    elif config.api_base:
        arguments["api_base"] = config.api_base
    if config.temperature is not None:
        arguments["temperature"] = config.temperature
    return arguments


def _retryable(exc: Exception) -> bool:
    status = getattr(exc, "status_code", None)
    if isinstance(exc, ValueError):  # empty answer: another try may do better
        return True
    return status is None or status in (408, 409, 429) or status >= 500


def _describe(exc: Exception) -> str:
    name = type(exc).__name__
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{name}: {text[:160]}" if text else name


def _cost(litellm: Any, response: Any, model: str) -> float:
    if model.startswith("mirror/"):
        return 0.0
    try:
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:
        return 0.0
