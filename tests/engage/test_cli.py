from __future__ import annotations

import pytest

from engage.cli import app


def _command_paths() -> list[list[str]]:
    import typer.main

    root = typer.main.get_command(app)
    paths: list[list[str]] = []

    def walk(command: object, prefix: list[str]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, [*prefix, name])
        else:
            paths.append(prefix)

    walk(root, [])
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p))
def test_every_command_has_help(cli, path: list[str]) -> None:  # type: ignore[no-untyped-def]
    result = cli(*path, "--help")
    assert result.exit_code == 0, result
    assert "Usage" in result.stdout


def test_db_upgrade_creates_a_fresh_sqlite_ledger(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result
    assert (tmp_path / "engage.db").exists()
