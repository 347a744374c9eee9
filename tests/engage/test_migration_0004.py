"""Migration 0004 on SQLite and PostgreSQL: the digests already sent become deliveries, and back again."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from engage import db as engage_db

CREATED = datetime(2026, 12, 23, 6, 5, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each backend, for migrations to walk up and down."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    server = str(request.getfixturevalue("postgresql_url"))  # skips (or fails in CI) without a server
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    name = f"engage_migration_{uuid.uuid4().hex[:8]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        engage_db.dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    config = engage_db.alembic_config(url)
    with engage_db.get_engine(url).begin() as connection:
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)


def _rows(engine: Engine, query: str) -> list[tuple[object, ...]]:
    with engine.connect() as connection:
        return [tuple(row) for row in connection.execute(text(query))]


def test_sent_digests_become_deliveries_and_come_back(fresh_url: str) -> None:
    _migrate(fresh_url, "0003")
    engine = engage_db.get_engine(fresh_url)
    stamp = "2026-12-23 06:05:00" if engine.dialect.name == "sqlite" else CREATED
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO staff (id, email, name, timezone, language, work_days, work_start, work_end, active, "
                "created_at) VALUES (1, 'camille@nmh.example.org', 'Camille', 'Europe/Paris', 'fr', 'mon', "
                "'09:00:00', '17:00:00', true, :at), (2, 'paul@nmh.example.org', 'Paul', 'Europe/Paris', 'fr', "
                "'mon', '09:00:00', '17:00:00', true, :at)"
            ),
            {"at": stamp},
        )
        connection.execute(
            text(
                "INSERT INTO staff_digest (id, staff_id, day, items, language, message_id, state, smtp_response, "
                "flow_run_id, created_at, sent_at) VALUES "
                "(1, 1, '2026-12-23', 6, 'fr', '<a@nmh>', 'sent', '250 ok', NULL, :at, :at), "
                "(2, 2, '2026-12-23', 0, NULL, NULL, 'empty', NULL, NULL, :at, NULL)"
            ),
            {"at": stamp},
        )
    _migrate(fresh_url, "head")
    assert _rows(
        engine,
        "SELECT staff_digest_id, plan_step_id, kind, sequence, recipient, language, message_id, state, smtp_response "
        "FROM delivery",
    ) == [(1, None, "digest", 0, "camille@nmh.example.org", "fr", "<a@nmh>", "sent", "250 ok")]
    assert _rows(engine, "SELECT id, staff_id, items FROM staff_digest ORDER BY id") == [(1, 1, 6), (2, 2, 0)]
    # A digest's second attempt takes the next sequence; the same sequence twice is refused.
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO delivery (staff_digest_id, kind, sequence, recipient, state, created_at) "
                "VALUES (1, 'digest', 1, 'camille@nmh.example.org', 'deferred', :at)"
            ),
            {"at": stamp},
        )
    with pytest.raises(Exception, match="(?i)unique"), engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO delivery (staff_digest_id, kind, sequence, recipient, state, created_at) "
                "VALUES (1, 'digest', 1, 'camille@nmh.example.org', 'sending', :at)"
            ),
            {"at": stamp},
        )

    _migrate(fresh_url, "0003", down=True)
    assert _rows(engine, "SELECT id, items, state FROM staff_digest ORDER BY id") == [(2, 0, "empty")]
    assert _rows(engine, "SELECT count(*) FROM delivery") == [(0,)]
