"""The layering of docs/architecture.md, checked on the imports of every module (lazy imports in functions count).

- Pure rules import no Prefect, no database and no network: they are plain functions of their arguments.
- Models import nothing of Engage and no flow: the ledger's tables stand on their own.
- The package imports ``flows/`` from one module only, the local stack's ``engage/local/flows.py``.
- Nothing of the package but the CLI imports the CLI; nothing of production imports the plain reference builders.
- Flows are the Prefect side of the operations: they import the package, never the CLI.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engage.settings import PROJECT_ROOT

#: Modules that hold pure rules (a folder ends with "/").
PURE = (
    "engage/rules/",
    "engage/importer/",
    "engage/rendering/",
    "engage/plan_templates/schema.py",
    "engage/invites/due.py",
    "engage/invites/brief.py",
    "engage/invites/calendar.py",
    "engage/mail/message.py",
)
#: What a pure rule may not import: Prefect, the database (drivers, ORM, migrations, the ledger's tables and
#: sessions), the network.
IMPURE = (
    "prefect",
    "sqlalchemy",
    "sqlmodel",
    "alembic",
    "psycopg",
    "models",
    "engage.db",
    "engage.sql",
    "smtplib",
    "socket",
    "ssl",
    "http",
    "urllib.request",
    "httpx",
    "uvicorn",
    "starlette",
)


@dataclass(frozen=True)
class Import:
    module: str
    path: str
    line: int


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> Iterator[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    relative = path.relative_to(PROJECT_ROOT).as_posix()
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    type_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    for node in ast.walk(tree):
        if id(node) in type_only:  # an import for the type checker alone costs nothing at run time
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(alias.name, relative, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # a relative import: resolve it against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            yield Import(module, relative, node.lineno)
            # `from engage import db` imports the module engage.db
            for alias in node.names:
                yield Import(f"{module}.{alias.name}", relative, node.lineno)


def _sources(*folders: str) -> list[Path]:
    paths: list[Path] = []
    for folder in folders:
        paths += sorted((PROJECT_ROOT / folder).rglob("*.py"))
    return [path for path in paths if "migrations" not in path.parts]


def _is(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _in(relative: str, places: tuple[str, ...]) -> bool:
    return any(relative.startswith(place) if place.endswith("/") else relative == place for place in places)


ALL = _sources("engage", "flows", "models")


def _violations(paths: list[Path], forbidden: tuple[str, ...], allowed_in: tuple[str, ...] = ()) -> list[str]:
    found = []
    for path in paths:
        for item in _imports(path):
            if _in(item.path, allowed_in):
                continue
            if any(_is(item.module, prefix) for prefix in forbidden):
                found.append(f"{item.path}:{item.line} imports {item.module}")
    return sorted(set(found))


def test_the_check_sees_every_layer() -> None:
    # A check that found no module would pass whatever the code does.
    names = {path.relative_to(PROJECT_ROOT).as_posix() for path in ALL}
    for place in PURE:
        assert any(_in(name, (place,)) for name in names), f"no module at {place}"
    assert any(name.startswith("models/") for name in names)
    assert "engage/local/flows.py" in names


@pytest.mark.parametrize("place", PURE)
def test_pure_rules_import_no_prefect_database_or_network(place: str) -> None:
    paths = [path for path in ALL if _in(path.relative_to(PROJECT_ROOT).as_posix(), (place,))]
    assert _violations(paths, IMPURE) == []


def test_models_import_nothing_above_them() -> None:
    """The tables take their words from the vocabulary, which imports nothing; nothing else of Engage."""
    paths = [path for path in ALL if path.relative_to(PROJECT_ROOT).parts[0] == "models"]
    above = [found for found in _violations(paths, ("engage", "flows", "prefect")) if "engage.vocabulary" not in found]
    assert above == []


def test_the_vocabulary_imports_nothing() -> None:
    assert _violations([PROJECT_ROOT / "engage/vocabulary.py"], ("engage", "models", "sqlalchemy", "sqlmodel")) == []


def test_the_package_imports_flows_only_from_the_local_stack() -> None:
    paths = [path for path in ALL if path.relative_to(PROJECT_ROOT).parts[0] == "engage"]
    assert _violations(paths, ("flows",), allowed_in=("engage/local/flows.py",)) == []


def test_only_the_cli_imports_the_cli() -> None:
    paths = [path for path in ALL if not path.relative_to(PROJECT_ROOT).as_posix().startswith("engage/cli/")]
    assert _violations(paths, ("engage.cli",)) == []


def test_production_never_imports_the_reference_builders() -> None:
    assert _violations(ALL, ("engage.reference",), allowed_in=("engage/reference.py",)) == []


def test_the_mailer_and_the_pure_rules_know_nothing_of_prefect() -> None:
    paths = [path for path in ALL if _in(path.relative_to(PROJECT_ROOT).as_posix(), ("engage/mail/",))]
    assert _violations(paths, ("prefect",)) == []
