"""Model calls: the ONLY module that imports litellm.

`complete` asks the configured model, then each fallback, for a structured reply. The
offline brain (`mirror/…`) is called directly; litellm is imported only when a real model
is in the chain, so a persona on the offline brain never pays for it (seconds of import,
a hundred MiB). We ask real models for a JSON reply (`response_format`), validate it with
pydantic, and fall back to plain text when a model answers in prose. Retries (with
backoff) and fallbacks are ours, per model, so their count and timing are exactly what the
config says; litellm's own retries are switched off. A refused key or an unknown model is
not retried: another try cannot fix it.

OpenAI-compatible servers you run yourself (`hosted_vllm/…`, or `openai/…` with an
`api_base`) serving a model litellm has no entry for (no price, no window: litellm would
only translate the request and wrap the answer) are asked directly, with the same request
body, retries, fallbacks and errors: litellm costs about 3 s of import, a hundred MiB and a
few ms of CPU a call that serve nobody there (bench/lean.py measures both). The direct path
speaks HTTP through bot/http_client (a tenth of httpx's CPU a request, nothing to import),
and through httpx only when the environment names a proxy.
Every other model, and every model when MIRROR_MODEL_CLIENT=litellm, goes through litellm.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from bot import http_client
from bot.config import ModelConfig
from bot.context import Context, fit_to_window, render_messages
from bot.entrance import manifests
from bot.models import IntentionDraft, Reply

log = logging.getLogger(__name__)

OFFLINE_MODEL = "mirror/offline"
_FENCE = re.compile(r"^```(?:json)?\s*(?P<body>.*?)\s*```$", re.S)
_litellm: Any = None
_import_lock = threading.Lock()
# Preloads in flight, per event loop and model chain (see `preload`).
_preloads: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[tuple[str, ...], asyncio.Future[None]]
] = weakref.WeakKeyDictionary()


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
            log.warning("model answered malformed JSON; using its text: %s", str(exc)[:200])
            return _salvaged_reply(candidate)
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
            return _salvaged_reply(candidate)
    return Reply(text=text)


# A JSON string, whole or cut off, and whether a colon follows it (then it is a key).
_JSON_STRING = re.compile(r'"(?P<text>(?:[^"\\]|\\.)*)"?(?P<key>\s*:)?')


def _salvaged_reply(candidate: str) -> Reply:
    """JSON that failed validation as a reply a person can read rather than the JSON:
    the first text value in it, whole or cut off by the token limit (`{"reply": "Hello, I
    am…`, `{"answer": "…"}`, `{"Hello! Here is…`). JSON without any text in it (`{}`, a
    small model's favourite) is no answer: a ValueError, so the call counts as failed
    (retried, then the next model, then the apology) and no person ever gets `{}`."""
    for found in _JSON_STRING.finditer(candidate):
        if found.group("key"):
            continue
        text = found.group("text")
        for end in range(len(text), max(len(text) - 6, -1), -1):  # half an escape (\u00)
            try:
                value = str(json.loads(f'"{text[:end]}"')).strip()
            except json.JSONDecodeError:
                continue
            if value:
                return Reply(text=value)
            break
    raise ValueError(f"the model's JSON holds no text to say: {candidate[:80]!r}")


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
    """litellm, imported in a daemon thread so the event loop keeps running meanwhile."""
    if _litellm is not None:
        return _litellm
    return await _in_daemon_thread(_import_litellm)


async def _in_daemon_thread(work: Callable[[], Any]) -> Any:
    """`work()` run in a daemon thread (imports, file reads) while the event loop runs on.

    Not asyncio.to_thread: its worker is joined at exit, so a process stopping during
    start-up would wait seconds for an import to finish.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()

    def load() -> None:
        module: Any = None
        error: BaseException | None = None
        try:
            module = work()
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
    """Load in the background what the real models of `config` need (httpx for the direct
    path, else litellm), so the first turn does not wait for it. The offline brain needs
    nothing loaded (nor does a caller that does not say which models it will use). Once per
    event loop and model chain: a call while another loads waits for that one's work."""
    if config is None or not needs_litellm(config):
        return
    loading = _preloads.setdefault(asyncio.get_running_loop(), {})
    key = (config.api_base or "", config.name, *config.fallbacks)
    if key not in loading:
        loading[key] = asyncio.ensure_future(_load_for(config))
        loading[key].add_done_callback(lambda _: loading.pop(key, None))
    # Shielded: a caller that stops waiting (its owner cancelled it) leaves the load to
    # the others.
    await asyncio.shield(loading[key])


async def _load_for(config: ModelConfig) -> None:
    real = [model for model in [config.name, *config.fallbacks] if not is_offline(model)]
    routes = await _in_daemon_thread(lambda: [_direct_endpoint(config, m) for m in real])
    direct = [route for route in routes if route is not None]
    if direct and http_client.proxied():
        await _in_daemon_thread(_import_httpx)
    elif any(route.url.startswith("https:") for route in direct):
        await _in_daemon_thread(http_client.ssl_context)  # certifi's bundle, read once
    if any(route is None for route in routes):
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
    is loaded: the offline brain never imports it to ask), or, for the direct path, whose
    key variable is not set."""
    found = []
    for model in [config.name, *config.fallbacks]:
        if is_offline(model):
            continue
        endpoint = _direct_endpoint(config, model)
        if endpoint is not None:
            if endpoint.key_required and endpoint.key_env not in os.environ:
                found.append((model, [endpoint.key_env]))
            continue
        if _litellm is None:
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
                endpoint = _direct_endpoint(config, model)
                if endpoint is not None:
                    reply, used = await _ask_directly(config, model, endpoint, messages)
                    return Answer(
                        reply=reply.model_copy(update={"model": model}),
                        model=model,
                        prompt_tokens=used[0],
                        completion_tokens=used[1],
                    )  # cost 0: litellm has no price for a model it has no entry for
                litellm = await _litellm_loaded()
                fitted = await _fitted_messages(litellm, config, model, context) or messages
                response = await litellm.acompletion(**_call_arguments(config, model, fitted))
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
    """The cost litellm already worked out for this response (None: it has no price for
    the model); computed again only when litellm did not say."""
    hidden = getattr(response, "_hidden_params", None)
    try:
        if isinstance(hidden, dict) and "response_cost" in hidden:
            return float(hidden["response_cost"] or 0.0)
        return float(litellm.completion_cost(completion_response=response) or 0.0)
    except Exception:
        return 0.0


# The model's window, in its own tokens ---------------------------------------------------

# Room left for the chat template's own tokens, which litellm's count only approximates.
_TEMPLATE_SLACK = 32
_tokenizers: dict[str, Any] = {}
_windows: dict[str, int | None] = {}  # litellm's max_input_tokens per model


async def _fitted_messages(
    litellm: Any, config: ModelConfig, model: str, context: Context
) -> list[dict[str, str]] | None:
    """The prompt cut to the model's window (less `max_tokens` for the answer), counted by
    litellm with the model's tokenizer; None when the window is unknown (the per-section
    budgets then are all there is)."""
    window = config.context_tokens if model == config.name else None
    if window is None:
        if model not in _windows:  # once per model: an unknown one raises, at some cost
            try:
                _windows[model] = litellm.get_model_info(model).get("max_input_tokens")
            except Exception:  # litellm does not know the model (a local server's alias)
                _windows[model] = None
        window = _windows[model]
    if not window:
        return None
    limit = max(window - config.max_tokens - _TEMPLATE_SLACK, 1)
    tokenizer = None
    if config.tokenizer is not None:
        tokenizer = _tokenizers.get(str(config.tokenizer))
        if tokenizer is None:
            tokenizer = await asyncio.to_thread(_tokenizer, litellm, config.tokenizer)

    # Without a tokenizer.json: litellm's tiktoken, never its per-model Hugging Face
    # tokenizers (downloaded on first use, and tried again on every turn when offline).
    counted_as = model if tokenizer is not None else ""

    def count(messages: list[dict[str, str]]) -> int:
        return int(
            litellm.token_counter(model=counted_as, messages=messages, custom_tokenizer=tokenizer)
        )

    return fit_to_window(context, limit, count)


def _tokenizer(litellm: Any, path: Any) -> Any:
    """`[model] tokenizer` loaded once per process (a tokenizer.json is a few MB)."""
    key = str(path)
    if key not in _tokenizers:
        with open(path, encoding="utf-8") as file:
            _tokenizers[key] = litellm.create_tokenizer(file.read())
    return _tokenizers[key]


# The direct path to OpenAI-compatible servers -------------------------------------------

_PRICES_FILE = "model_prices_and_context_window_backup.json"  # litellm's local model table
_known_models: dict[str, bool] = {}
# The HTTP clients and the event loop they belong to (their connections are that loop's):
# bot/http_client's, and httpx's when a proxy is named.
_client: tuple[weakref.ref[asyncio.AbstractEventLoop], Any] | None = None
_lean_client: tuple[weakref.ref[asyncio.AbstractEventLoop], http_client.Client] | None = None


@dataclass(frozen=True)
class _Endpoint:
    url: str  # …/chat/completions
    key_env: str  # the variable litellm reads the key from
    key_required: bool  # litellm refuses `openai/…` without it; hosted_vllm sends a dummy


class ModelError(Exception):
    """An OpenAI-compatible server answered with an error status (direct path)."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(f"{status_code} {message}")
        self.status_code = status_code


def _direct_endpoint(config: ModelConfig, model: str) -> _Endpoint | None:
    """Where to ask `model` without litellm, or None when litellm must (see the module
    docstring): a model litellm has an entry for keeps litellm's price, window and
    parameter rules; a configured window or tokenizer needs litellm's token counting."""
    if os.environ.get("MIRROR_MODEL_CLIENT", "").strip().lower() == "litellm":
        return None
    if config.tokenizer is not None or (model == config.name and config.context_tokens):
        return None
    if model.startswith("openai/"):
        base, key_env, required = config.api_base, "OPENAI_API_KEY", True
    elif model.startswith("hosted_vllm/"):
        base = config.api_base or os.environ.get("HOSTED_VLLM_API_BASE")
        key_env, required = "HOSTED_VLLM_API_KEY", False
    else:
        return None
    if not base or _known_to_litellm(model):
        return None
    return _Endpoint(f"{base.rstrip('/')}/chat/completions", key_env, required)


def _known_to_litellm(model: str) -> bool:
    """Does litellm's model table have an entry for `model` (with or without its provider)?
    Read from litellm's own JSON file without importing litellm, once per model; when the
    file cannot be read, assume it does (litellm then handles the model)."""
    if model not in _known_models:
        from importlib.util import find_spec

        spec = find_spec("litellm")
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        try:
            with open(os.path.join(folders[0], _PRICES_FILE), encoding="utf-8") as table:
                text = table.read()
        except (IndexError, OSError):
            _known_models[model] = True
        else:
            bare = model.split("/", 1)[1]
            _known_models[model] = f'"{model}": {{' in text or f'"{bare}": {{' in text
    return _known_models[model]


_USER_AGENT = "mirroros"


def _import_httpx() -> Any:
    import httpx

    return httpx


def _plain_client() -> http_client.Client:
    """bot/http_client's client of this event loop (its connections are kept and reused):
    one a process, a new one when another loop runs (tests)."""
    global _lean_client
    loop = asyncio.get_running_loop()
    if _lean_client is None or _lean_client[0]() is not loop:
        _lean_client = (weakref.ref(loop), http_client.Client(user_agent=_USER_AGENT))
    return _lean_client[1]


def _http_client() -> Any:
    """The httpx client of this event loop (its connections are kept and reused): one a
    process, a new one when another loop runs (tests)."""
    global _client
    loop = asyncio.get_running_loop()
    if _client is None or _client[0]() is not loop:
        httpx = _import_httpx()
        # httpx logs every request at INFO: a line a turn that serves nobody, relayed by
        # `mirror up`, with a URL that may carry a key. Its warnings still show.
        logging.getLogger("httpx").setLevel(logging.WARNING)
        limits = httpx.Limits(max_keepalive_connections=4)
        _client = (weakref.ref(loop), httpx.AsyncClient(timeout=None, limits=limits))
    return _client[1]


async def _ask_directly(
    config: ModelConfig, model: str, endpoint: _Endpoint, messages: list[dict[str, str]]
) -> tuple[Reply, tuple[int, int]]:
    """The request litellm would send (same body), its reply and (prompt, completion)
    tokens. A missing required key fails before anything is sent, as litellm's SDK does."""
    key = os.environ.get(endpoint.key_env)
    if endpoint.key_required and key is None:
        raise MissingKey(f"{endpoint.key_env} not set (needed by {model})")
    body = _call_arguments(config, model, messages)
    body["model"] = model.split("/", 1)[1]
    for local in ("timeout", "num_retries", "api_base"):
        body.pop(local, None)
    authorization = f"Bearer {key or 'fake-api-key'}"
    async with asyncio.timeout(config.timeout_s):
        if http_client.proxied():
            headers = {"Authorization": authorization}
            response = await _http_client().post(endpoint.url, json=body, headers=headers)
        else:
            # The bytes httpx's `json=` sends.
            content = json.dumps(
                body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            ).encode()
            response = await _plain_client().request(
                "POST",
                endpoint.url,
                content=content,
                headers=(("Authorization", authorization), ("Content-Type", "application/json")),
            )
        if response.status_code >= 400:
            raise ModelError(response.status_code, _error_text(response))
        data = response.json()
    content = data["choices"][0]["message"].get("content")
    usage = data.get("usage") or {}
    reply = parse_reply(content)
    return reply, (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _error_text(response: Any) -> str:
    try:
        error = response.json().get("error")
        return str(error.get("message") if isinstance(error, dict) else error)[:300]
    except Exception:
        return response.text[:300] or response.reason_phrase
