"""The tokenizer inside a GGUF file, as a Hugging Face tokenizer.json for `[model] tokenizer`.

A GGUF model carries its vocabulary and BPE merges in its header; SmolLM2's is a GPT-2
style byte-level BPE, so `tokenizers` can rebuild it exactly and litellm
(`create_tokenizer`) counts prompts in the model's real tokens. Reads only the header's
key-value section (the weights are never touched); no dependency beyond `tokenizers`.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

_SCALARS = {
    0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q",
    12: "<d",
}  # fmt: skip
_STRING, _ARRAY = 8, 9


def _read(file: BinaryIO, fmt: str) -> Any:
    size = struct.calcsize(fmt)
    return struct.unpack(fmt, file.read(size))[0]


def _string(file: BinaryIO) -> str:
    return file.read(_read(file, "<Q")).decode("utf-8", errors="replace")


def _value(file: BinaryIO, kind: int) -> Any:
    if kind == _STRING:
        return _string(file)
    if kind == _ARRAY:
        item_kind, count = _read(file, "<I"), _read(file, "<Q")
        return [_value(file, item_kind) for _ in range(count)]
    return _read(file, _SCALARS[kind])


def metadata(path: Path) -> dict[str, Any]:
    """The key-value header of a GGUF file (version 2 or 3)."""
    with path.open("rb") as file:
        if file.read(4) != b"GGUF":
            raise ValueError(f"{path} is not a GGUF file")
        version = _read(file, "<I")
        if version < 2:
            raise ValueError(f"{path}: GGUF version {version} is not supported")
        _read(file, "<Q")  # tensor count
        found = {}
        for _ in range(_read(file, "<Q")):
            key = _string(file)
            found[key] = _value(file, _read(file, "<I"))
        return found


def tokenizer_json(path: Path) -> str:
    """The GGUF's BPE tokenizer as tokenizer.json text (GPT-2 style byte-level BPE only)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    meta = metadata(path)
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"{path}: not a byte-level BPE tokenizer")
    tokens: list[str] = meta["tokenizer.ggml.tokens"]
    merges = [tuple(merge.split(" ", 1)) for merge in meta["tokenizer.ggml.merges"]]
    types: list[int] = meta.get("tokenizer.ggml.token_type", [1] * len(tokens))
    tokenizer = Tokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)  # type: ignore[arg-type]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(  # type: ignore[assignment]
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()  # type: ignore[assignment]
    # Control tokens (type 3: <|im_start|>, <|im_end|>, …) are single tokens in prompts.
    special = [
        AddedToken(t, special=True) for t, kind in zip(tokens, types, strict=True) if kind == 3
    ]
    tokenizer.add_special_tokens(special)
    return tokenizer.to_str()
