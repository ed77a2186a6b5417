"""`bot.memory`'s one face: every record is named from the package, never from a store.

The package's lazy exports (PEP 562 `_WHERE`), its `TYPE_CHECKING` imports (what mypy
sees) and `__all__` must say the same thing; the records module must stay light; and code
outside bot/memory must not reach into a store module, so stores can be split or merged
without touching their callers.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import bot.memory
from bot.memory import records
from tests.conftest import ROOT

STORE_IMPORT = re.compile(r"^\s*(from bot\.memory\.\w+_store import|import bot\.memory\.\w+_store)")


def test_lazy_exports_type_checking_imports_and_all_name_the_same_things() -> None:
    tree = ast.parse((ROOT / "bot" / "memory" / "__init__.py").read_text(encoding="utf-8"))
    guarded = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    seen = {
        alias.name: statement.module
        for statement in guarded.body
        if isinstance(statement, ast.ImportFrom)
        for alias in statement.names
    }
    assert seen == bot.memory._WHERE
    assert sorted(bot.memory.__all__) == sorted(bot.memory._WHERE)


def test_every_exported_name_loads_from_where_it_says() -> None:
    for name, module in bot.memory._WHERE.items():
        value = getattr(bot.memory, name)
        assert getattr(sys.modules[module], name) is value, name


def test_every_record_and_error_of_the_records_module_is_exported() -> None:
    defined = {
        name
        for name, value in vars(records).items()
        if isinstance(value, type) and value.__module__ == records.__name__
    }
    assert defined <= set(bot.memory.__all__), defined - set(bot.memory.__all__)


def test_records_import_neither_aiosqlite_nor_a_store() -> None:
    code = (
        "import sys, bot.memory.records; "
        "print(sorted(m for m in sys.modules if m == 'aiosqlite' or m.endswith('_store')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.strip() == "[]"


def test_no_code_outside_the_memory_package_imports_a_store_module() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for folder in ("bot", "adapters", "tests", "bench")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if (ROOT / "bot" / "memory") not in path.parents
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if STORE_IMPORT.match(line)
    ]
    assert offenders == [], "import these from bot.memory instead:\n" + "\n".join(offenders)
