from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from engage import db as engage_db
from models import Contact, Staff


def test_schema_is_current_after_upgrade(db_url: str) -> None:
    assert engage_db.schema_is_current(db_url)


def test_timestamps_come_back_in_utc(session: Session) -> None:
    paris = timezone(timedelta(hours=1))
    staff = Staff(email="ana@example.org", name="Ana", created_at=datetime(2026, 11, 20, 10, 0, tzinfo=paris))
    session.add(staff)
    session.commit()
    session.expire_all()
    loaded = session.exec(select(Staff)).one()
    assert loaded.created_at == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert loaded.created_at.tzinfo is not None


def test_naive_timestamps_are_refused(session: Session) -> None:
    session.add(Staff(email="bo@example.org", name="Bo", created_at=datetime(2026, 11, 20, 10, 0)))
    with pytest.raises(Exception, match="naive datetime"):
        session.commit()


def test_one_contact_per_normalised_email(session: Session) -> None:
    session.add(Contact(email="Lea@Example.org", email_key="lea@example.org"))
    session.commit()
    session.add(Contact(email="lea@example.org", email_key="lea@example.org"))
    with pytest.raises(IntegrityError):
        session.commit()


def test_migrations_match_the_models(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    with engage_db.get_engine(db_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        assert compare_metadata(context, SQLModel.metadata) == []
