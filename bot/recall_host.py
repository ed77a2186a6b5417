"""One encoder and one vector index per host, for every entrance `mirror up` runs there.

Recall by meaning in each entrance meant an encoder and a numpy index in each process:
three entrances held three copies of the index (1.8 KiB a row) and mapped the weights three
times, and each embedded its own messages (bench/lean.py: 400-470 MiB in all for three
entrances and the scheduler at 10k messages, against 250 with recall off). Under `mirror
up`, the scheduler process of the host (one per `mirror up`, leader or not) serves recall
by meaning for all of them instead: it embeds every row that has no vector yet (any
instance's), keeps the one index, and answers each turn's question over a Unix socket
(`MIRROR_RECALL_HOST`, set by `mirror up` for its children): the question's text, who it
is for, the word matches of the turn; back come the nearest rows that audience may see and
the word matches' similarities. The entrance reads those rows back through
`bot.memory.mirror_store.visible`, the one privacy rule, exactly as it reads its own
index's hits, and fuses them with its word matches as before (bot/memory/vector_store.py).

Nothing but the question crosses the socket, which only this user can open (a 0700
folder, the socket 0600). When the host cannot answer (restarting, not started yet), the
turn recalls by words only and says so in the log; the host's embedder catches the turn's
message up later.
A process run alone (`mirror chat`, `mirror run NAME` outside `mirror up`) embeds for
itself, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.config import Config
    from bot.memory import Memory
    from bot.models import Audience
    from bot.recall import Hit

log = logging.getLogger(__name__)

SOCKET_ENV = "MIRROR_RECALL_HOST"
ASK_TIMEOUT_S = 2.0  # a question waits this long at most (the encoder answers in ~5-15 ms)
_QUIET_S = 60.0  # "the host's recall does not answer" at most once a minute
# The longest question line the host reads: a message of `[guard] max_message_chars` (8000)
# escaped in JSON is up to 96 KB (12 bytes an emoji), past asyncio's 64 KiB default.
QUESTION_LIMIT = 8 << 20


def socket_path() -> str | None:
    """The host's recall socket, when this process runs under `mirror up` (None: embed
    here)."""
    return os.environ.get(SOCKET_ENV) or None


def new_socket_path() -> str:
    """A socket path for a new `mirror up`, in a folder only this user may enter: the
    session's runtime folder ($XDG_RUNTIME_DIR, made so by the login manager), else a new
    private folder of its own in the temporary folder (mkdtemp: created 0700, never one
    another user prepared)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isdir(runtime) and os.stat(runtime).st_uid == os.getuid():
        return str(Path(runtime) / f"mirroros-recall-{os.getpid()}.sock")
    return str(Path(tempfile.mkdtemp(prefix="mirroros-recall-")) / "recall.sock")


def remove_socket_folder(path: str | None) -> None:
    """After `mirror up`'s children stopped: the private folder `new_socket_path` made in
    the temporary folder (empty by then: the host removes its socket), so that each run
    leaves nothing behind."""
    if path is None:
        return
    folder = Path(path).parent
    if folder.name.startswith("mirroros-recall-"):
        with contextlib.suppress(OSError):
            (folder / "recall.sock").unlink(missing_ok=True)
            folder.rmdir()


@dataclass(frozen=True)
class Search:
    """What a turn's recall by meaning looks for, beside the question itself: rows
    `audience` may see (less conversation `here`'s messages), up to `limit` a kind above
    `floor`, and the similarities of the turn's word matches (`words`, ids by kind)."""

    audience: Audience
    here: int
    limit: int
    floor: float
    words: dict[str, list[int]]

    def as_json(self) -> dict[str, Any]:
        return {
            "audience": self.audience.model_dump(),
            "here": self.here,
            "limit": self.limit,
            "floor": self.floor,
            "words": self.words,
        }

    @classmethod
    def from_json(cls, found: dict[str, Any]) -> Search:
        from bot.models import Audience

        return cls(
            Audience.model_validate(found["audience"]),
            int(found["here"]),
            int(found["limit"]),
            float(found["floor"]),
            {kind: [int(i) for i in ids] for kind, ids in found["words"].items()},
        )


@dataclass(frozen=True)
class Asked:
    """A turn's question for the host's recall, in place of a vector computed here."""

    text: str
    path: str

    def search(self, search: Search) -> tuple[dict[str, list[Hit]], dict[str, dict[int, float]]]:
        """The nearest rows, by kind, and the word matches' similarities to the question
        (`Memory.search_by_meaning` in the host). Blocking (it runs in the turn's read, in
        memory's thread); OSError when the host does not answer."""
        from bot.recall import Hit

        answer = ask(self.path, {"text": self.text, **search.as_json()})
        hits = {
            kind: [Hit(kind, int(row), float(similarity)) for row, similarity in found]
            for kind, found in answer["hits"].items()
        }
        similarities = {
            kind: {int(row): float(similarity) for row, similarity in found}
            for kind, found in answer["similarities"].items()
        }
        return hits, similarities


class _Line:
    """This process's connection to the host's recall, kept open between questions: a new
    connection a turn cost both processes ~0.2 ms more CPU than a question on an open one
    (connect, accept, a task and a stream a connection; measured 280 against 95 us)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # one question at a time on the line
        self.conn: socket.socket | None = None
        self.path: str | None = None

    def ask(self, path: str, payload: bytes, timeout: float) -> bytes:
        with self.lock:
            reused = self.conn is not None and self.path == path
            try:
                return self._exchange(path, payload, timeout)
            except TimeoutError:
                self.close()  # its answer may still come: never read as the next one's
                raise
            except OSError:
                self.close()
                if not reused:
                    raise
            # The host restarted since the last question (its end of the line is closed):
            # once more, on a new connection.
            try:
                return self._exchange(path, payload, timeout)
            except OSError:
                self.close()
                raise

    def _exchange(self, path: str, payload: bytes, timeout: float) -> bytes:
        if self.conn is None or self.path != path:
            self.close()
            conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                conn.settimeout(timeout)
                conn.connect(path)
            except OSError:
                conn.close()
                raise
            self.conn, self.path = conn, path
        if self.conn.gettimeout() != timeout:
            self.conn.settimeout(timeout)
        self.conn.sendall(payload)
        received = b""
        while not received.endswith(b"\n"):
            part = self.conn.recv(65536)
            if not part:
                raise ConnectionError("the host's recall closed the connection")
            received += part
        return received

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


_line = _Line()


def ask(path: str, request: dict[str, Any], timeout: float = ASK_TIMEOUT_S) -> dict[str, Any]:
    """One question, one answer: a JSON line each way, on this process's open connection
    to the host (~0.1 ms)."""
    answer: dict[str, Any] = json.loads(
        _line.ask(path, json.dumps(request).encode() + b"\n", timeout)
    )
    if "error" in answer:
        raise ConnectionError(f"the host's recall: {answer['error']}")
    return answer


_said_at = -_QUIET_S


def unanswered(exc: Exception) -> None:
    """Log (at most once a minute) that a turn recalled by words only."""
    global _said_at
    now = time.monotonic()
    if now - _said_at >= _QUIET_S:
        _said_at = now
        log.warning("recall by words only: the host's recall did not answer (%s)", exc)


class RecallHost:
    """The server side, in the scheduler process: the host's encoder, index and embedder."""

    def __init__(self, memory: Memory, config: Config, path: str) -> None:
        self.memory = memory
        self.config = config
        self.path = path
        self._clients: set[asyncio.StreamWriter] = set()  # the entrances' open lines

    async def serve(self) -> None:
        """Embed every instance's new rows and answer questions until cancelled."""
        from bot import recall

        settings = self.config.recall
        recall.configure(settings, shared=True)
        self.memory.start_embedder(None, settings)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a previous scheduler's, of this `mirror up`
        try:
            server = await asyncio.start_unix_server(
                self._answer_client, path=self.path, limit=QUESTION_LIMIT
            )
        except OSError as exc:  # the entrances recall by words only, and say so
            log.error("recall by meaning cannot serve this host at %s: %s", self.path, exc)
            return
        os.chmod(self.path, 0o600)
        log.info("recall by meaning for this host's entrances at %s", self.path)
        try:
            await recall.preload(self.config)
            await server.serve_forever()
        except Exception:  # the encoder failed to load: the entrances fall back to words
            log.exception("recall by meaning stopped serving this host")
        finally:
            server.close()
            for writer in list(self._clients):  # the entrances ask a new host anew
                writer.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _answer_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """An entrance's questions, one line each, answered in turn until it hangs up."""
        self._clients.add(writer)
        try:
            while line := await reader.readline():
                try:
                    answer = await self.answer(json.loads(line))
                except Exception as exc:  # a bad question or memory gone: say so, stay up
                    log.warning("recall host: %r", exc)
                    answer = {"error": repr(exc)}
                writer.write(json.dumps(answer).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass  # the turn gave up waiting, or a line longer than the stream's limit
        finally:
            self._clients.discard(writer)
            writer.close()

    async def answer(self, request: dict[str, Any]) -> dict[str, Any]:
        from bot import recall

        vector = (await recall.vectors([str(request["text"])]))[0]
        hits, similarities = await self.memory.search_by_meaning(vector, Search.from_json(request))
        return {
            "hits": {
                kind: [[h.row_id, h.similarity] for h in found] for kind, found in hits.items()
            },
            "similarities": {
                kind: [[row, value] for row, value in found.items()]
                for kind, found in similarities.items()
            },
        }
