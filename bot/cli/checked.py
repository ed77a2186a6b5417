"""Config files that passed validation, remembered for `mirror status`.

Importing pydantic's model machinery and building the config's models (about fifty, with
the entrances' manifests) costs more than everything else `mirror status` does. So once a
full `bot.config.load_config` has passed, the few settings status reads are remembered
under a key made of all the verdict depends on:
- the bytes of the config file load_config would read (--config, else $MIRROR_CONFIG,
  else config/mirror.toml; or none: the embedded defaults), the --db override and
  $MIRROR_DB (relative paths stay relative, as load_config leaves them);
- the interpreter (version, prefix, sys.path) and the checkout this code runs from;
with the size and modification time of every module file outside the standard library
that was loaded when the validation passed (bot/, adapters/, pydantic, …) and of the
timezone file it looked up. A later status uses an entry only when all of that is
unchanged; otherwise, and on any problem with the cache file, it runs the full
load_config, whose errors are the same as ever. A failure is never remembered.

Each entry is a file `<key>.json` in `$XDG_CACHE_HOME/mirroros/checked-configs/`
(default `~/.cache`), written atomically; the ENTRIES most recently written are kept. A
process that cannot write there only skips remembering. Deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from bot.config import Config

ENTRIES = 32
FORMAT = 1
DEFAULT_CONFIG_PATH = Path("config/mirror.toml")  # as bot.config's (a test checks)
_CHECKOUT = str(Path(__file__).resolve().parents[2])


class Checked(NamedTuple):
    """The settings `mirror status` reads, from a config that passed validation."""

    memory_path: Path | str  # a SQLite file, or a postgresql:// URL
    busy_timeout_ms: int
    dead_after_s: float
    soul_path: Path

    @classmethod
    def of(cls, config: Config) -> Checked:
        return cls(
            config.memory.path,
            config.memory.busy_timeout_ms,
            config.persona.instance_dead_after_s,
            config.soul.path,
        )


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mirroros" / "checked-configs"


def checked_config(
    config: Path | None,
    db: Path | None,
    validate: Callable[[], Config],
    *,
    remembered: bool = True,
) -> Checked:
    """The status settings of this config file (chosen as load_config chooses it), from
    the cache when the same file passed before under the same code; else `validate()`
    (the full load_config, which raises on a bad config) and remembered. Not `remembered`:
    always `validate()`, and the cache is left alone."""
    key = _key(config, db) if remembered else None
    if key is not None:
        found = _recall(key)
        if found is not None:
            return found
    loaded = validate()
    checked = Checked.of(loaded)
    if key is not None and _key(config, db) == key:  # the file did not change meanwhile
        _remember(key, checked, _files_in_use(loaded))
    return checked


def _key(config: Path | None, db: Path | None) -> str | None:
    """What the verdict of load_config(config, db=db) depends on, besides the code; None
    when the file cannot be read (load_config says why)."""
    env_config = os.environ.get("MIRROR_CONFIG") or None
    chosen = Path(config) if config is not None else Path(env_config or DEFAULT_CONFIG_PATH)
    try:
        content: str | None = hashlib.sha256(chosen.read_bytes()).hexdigest()
    except FileNotFoundError:
        if config is not None or env_config is not None:
            return None
        content = None  # the embedded defaults
    except OSError:
        return None
    parts = [
        FORMAT,
        _CHECKOUT,
        sys.version,
        sys.prefix,
        sys.path,
        content,
        None if db is None else str(db),
        os.environ.get("MIRROR_DB") or None,
    ]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _unchanged(files: list[list[Any]]) -> bool:
    for path, mtime_ns, size in files:
        try:
            found = os.stat(path)
        except OSError:
            return False
        if found.st_mtime_ns != mtime_ns or found.st_size != size:
            return False
    return True


def _recall(key: str) -> Checked | None:
    try:
        entry = json.loads((cache_folder() / f"{key}.json").read_bytes())
        if entry["key"] != key or not _unchanged(entry["files"]):
            return None
        memory = entry["memory"]
        return Checked(
            memory if entry["memory_is_url"] else Path(memory),
            int(entry["busy_timeout_ms"]),
            float(entry["dead_after_s"]),
            Path(entry["soul"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _files_in_use(config: Config) -> list[str]:
    """The module files loaded now, outside the standard library, and the timezone file."""
    import sysconfig

    paths = sysconfig.get_paths()
    stdlib = tuple(os.path.join(paths[name], "") for name in ("stdlib", "platstdlib"))
    packages = tuple(os.path.join(paths[name], "") for name in ("purelib", "platlib"))
    files = set()
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if isinstance(path, str) and (not path.startswith(stdlib) or path.startswith(packages)):
            files.add(path)
    import zoneinfo

    for folder in zoneinfo.TZPATH:
        path = os.path.join(folder, config.persona.timezone)
        if os.path.isfile(path):
            files.add(path)
            break
    return sorted(files)


def _remember(key: str, checked: Checked, files: list[str]) -> None:
    try:
        stamps = [[path, (found := os.stat(path)).st_mtime_ns, found.st_size] for path in files]
    except OSError:
        return
    entry = {
        "key": key,
        "files": stamps,
        "memory": str(checked.memory_path),
        "memory_is_url": isinstance(checked.memory_path, str),
        "busy_timeout_ms": checked.busy_timeout_ms,
        "dead_after_s": checked.dead_after_s,
        "soul": str(checked.soul_path),
    }
    folder = cache_folder()
    target = folder / f"{key}.json"
    temporary = folder / f".{key}.{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(entry), encoding="utf-8")
        os.replace(temporary, target)
        entries = sorted(folder.glob("*.json"), key=lambda path: path.stat().st_mtime_ns)
        for old in entries[:-ENTRIES]:
            old.unlink(missing_ok=True)
    except OSError:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass
