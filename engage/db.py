"""One engine per database URL, short sessions, one SQLite writer at a time, and schema upgrades through Alembic."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, inspect
from sqlalchemy.engine import make_url
from sqlmodel import Session, create_engine

import models  # noqa: F401  (completes the metadata)
from engage.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


SQLITE_BUSY_TIMEOUT_MS = 30_000


def _configure_sqlite(engine: Engine) -> None:
    """WAL, a busy timeout, foreign keys, and transactions that take the write lock up front.

    pysqlite starts transactions lazily and never with IMMEDIATE; a transaction that reads and then writes can then
    fail with "database is locked" without waiting. We take over BEGIN (the SQLAlchemy recipe) and make write
    transactions IMMEDIATE, so concurrent writers queue on the busy timeout instead.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        mode = connection.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        connection.exec_driver_sql(f"BEGIN {mode}")


_ENGINES: dict[str, Engine] = {}


def absolute_sqlite_url(url: str, base: Path | None = None) -> str:
    """A relative SQLite URL made absolute (against ``base``, default the working directory), so one URL is one file."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and url != prefix + ":memory:":
        return prefix + str(((base or Path.cwd()) / url[len(prefix) :]).resolve())
    return url


def get_engine(url: str | None = None) -> Engine:
    """The engine for ``url`` (default: the configured ledger), created once per process."""
    url = absolute_sqlite_url(url or get_settings().database_url)
    if url in _ENGINES:
        return _ENGINES[url]
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})
        _configure_sqlite(engine)
    else:
        engine = create_engine(url, pool_pre_ping=True)
    _ENGINES[url] = engine
    return engine


def dispose_engines() -> None:
    """Close every pooled connection of every engine made so far (tests, and before a fork)."""
    for url in list(_ENGINES):
        _ENGINES.pop(url).dispose()


@contextmanager
def session_scope(url: str | None = None, *, readonly: bool = False) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    engine = get_engine(url)
    with Session(engine, expire_on_commit=False) as session:
        if readonly and engine.dialect.name == "sqlite":
            session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


_SQLITE_WRITERS: dict[str, threading.Lock] = {}


_SQLITE_WRITERS_LOCK = threading.Lock()


def writing(engine: Engine) -> AbstractContextManager[object]:
    """Hold this while a write transaction of ``engine`` runs, when it is SQLite: one writer thread at a time.

    SQLite takes one writer at a time anyway; threads that collide there wait in SQLite's busy handler, which sleeps
    1, 2, 5, 10... milliseconds between tries. Batches sent at once commit every few hundred microseconds, so they
    queue on this lock instead, and each is woken the moment the one before it commits.
    """
    if engine.dialect.name != "sqlite":
        return contextlib.nullcontext()
    key = str(engine.url)
    with _SQLITE_WRITERS_LOCK:
        return _SQLITE_WRITERS.setdefault(key, threading.Lock())


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_schema(url: str | None = None) -> None:
    """Create or upgrade the ledger schema to the newest migration."""
    url = url or get_settings().database_url
    config = alembic_config(url)
    with get_engine(url).begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def schema_is_current(url: str | None = None) -> bool:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    url = url or get_settings().database_url
    head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
    with get_engine(url).connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return False
        return MigrationContext.configure(connection).get_current_revision() == head


def ensure_schema(url: str | None = None) -> None:
    """Upgrade the schema when it is behind; cheap when it is current (the CLI calls it on every start)."""
    if not schema_is_current(url):
        upgrade_schema(url)
