"""Shared fixtures: a real ledger on SQLite and on PostgreSQL, clean settings per test."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlmodel import Session, SQLModel

from engage import db as engage_db
from engage.settings import PROJECT_ROOT, get_settings

POSTGRES_ADMIN_URL = os.environ.get("ENGAGE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
# The test Prefect server needs no telemetry (its heartbeat competes for its SQLite file and logs errors).
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


FLOW_TESTS = Path(__file__).resolve().parent / "flows"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark `flows` every test that runs Prefect flows: those of tests/flows/ and those using the Prefect server."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if item.path.is_relative_to(FLOW_TESTS) or "prefect_api" in fixtures or "prefect" in fixtures:
            item.add_marker(pytest.mark.flows)


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
    except Exception as error:  # any failure to connect means "no server here"
        return f"no PostgreSQL server answers at {POSTGRES_ADMIN_URL}: {type(error).__name__}"
    return None


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    """A throwaway PostgreSQL database for this test run, dropped at the end."""
    reason = _postgres_unavailable_reason()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    name = f"engage_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        engage_db.dispose_engines()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'engage.db'}"


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def migrated_url(request: pytest.FixtureRequest) -> str:
    """A ledger URL with the schema upgraded once per backend."""
    url = request.getfixturevalue(f"{request.param}_url")
    engage_db.upgrade_schema(url)
    return str(url)


def _empty_all_tables(url: str) -> None:
    with engage_db.get_engine(url).begin() as connection:
        for table in reversed(SQLModel.metadata.sorted_tables):
            connection.execute(table.delete())


@pytest.fixture
def db_url(migrated_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An empty, migrated ledger (SQLite and PostgreSQL), also set as ENGAGE_DATABASE_URL."""
    _empty_all_tables(migrated_url)
    monkeypatch.setenv("ENGAGE_DATABASE_URL", migrated_url)
    get_settings.cache_clear()
    yield migrated_url
    get_settings.cache_clear()


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    """A session for the test itself. On SQLite its reads take no write lock (the code under test needs it);
    call ``session.commit()`` to end its snapshot and see what the code under test wrote."""
    engine = engage_db.get_engine(db_url).execution_options(sqlite_begin="DEFERRED")
    with Session(engine) as session:
        yield session


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No ENGAGE_ variable leaks in from the machine; each test works in its own folder."""
    for name in list(os.environ):
        if name.startswith("ENGAGE_") and name != "ENGAGE_TEST_POSTGRES_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the seed plan templates and email texts in the test's folder, configured as Engage's own."""
    shutil.copytree(PROJECT_ROOT / "plan_templates", tmp_path / "plan_templates")
    shutil.copytree(PROJECT_ROOT / "email_templates", tmp_path / "email_templates")
    monkeypatch.setenv("ENGAGE_PLAN_TEMPLATES_DIR", str(tmp_path / "plan_templates"))
    monkeypatch.setenv("ENGAGE_EMAIL_TEMPLATES_DIR", str(tmp_path / "email_templates"))
    get_settings.cache_clear()
    return tmp_path


class CliResult:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code = exit_code
        self.stdout = stdout
        self.stderr = stderr

    def json(self) -> object:
        import json

        return json.loads(self.stdout)

    def __repr__(self) -> str:
        return f"CliResult(exit_code={self.exit_code}, stdout={self.stdout!r}, stderr={self.stderr!r})"


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Run `engage ARGS...` in-process exactly as the console script does; returns exit code, stdout, stderr."""
    import sys

    from engage.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        monkeypatch.setattr(sys, "argv", ["engage", *args])
        monkeypatch.setenv("COLUMNS", "200")
        get_settings.cache_clear()  # a real command starts a fresh process, reading the environment anew
        environment = dict(os.environ)  # what a command sets in its own process must not leak into the next
        try:
            main()
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        finally:
            os.environ.clear()
            os.environ.update(environment)
            get_settings.cache_clear()
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def smtp_sink(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """A real SMTP server (aiosmtpd) on loopback that keeps every message; ENGAGE_SMTP_* point at it."""
    from engage.mail.capture import SmtpCapture

    with SmtpCapture(tmp_path / "outbox") as capture:
        monkeypatch.setenv("ENGAGE_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("ENGAGE_SMTP_PORT", str(capture.port))
        get_settings.cache_clear()
        yield capture


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """A real, temporary Prefect server (SQLite) for the whole run: flows report to it, tests read it back."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield str(PREFECT_API_URL.value())


@pytest.fixture
def prefect(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The Prefect test server, with due times run in-process (no deployment) unless a test applies one."""
    monkeypatch.setenv("ENGAGE_PREFECT_DEPLOYMENTS", "never")
    monkeypatch.setenv("ENGAGE_RETRY_DELAY_SECONDS", "0.2")
    get_settings.cache_clear()
    return prefect_api
