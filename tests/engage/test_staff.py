from __future__ import annotations

from datetime import time

import pytest
from factories import create_contact, create_staff
from sqlmodel import Session

from engage import staff as staff_ops
from engage.errors import EngageError, InvalidStateError, NotFoundError
from engage.rules.clock import parse_days


def test_add_staff_has_default_working_hours(session: Session) -> None:
    member, created = staff_ops.add_staff(session=session, email=" Camille@NMH.example.org ", name="Camille")
    assert created
    assert member.email == "camille@nmh.example.org"
    assert (member.work_start, member.work_end, member.work_days) == (time(9), time(17), "mon,tue,wed,thu,fri")
    assert member.active


def test_adding_again_updates_and_reactivates(session: Session) -> None:
    member, _ = staff_ops.add_staff(session=session, email="a@nmh.example.org", name="A")
    member.active = False
    again, created = staff_ops.add_staff(session=session, email="A@nmh.example.org", name="Anne", hours="10:00-16:00")
    assert not created and again.id == member.id
    assert again.name == "Anne" and again.active and again.work_start == time(10)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("hours", "17:00-09:00", "must end after it starts"),
        ("hours", "nine to five", "HH:MM-HH:MM"),
        ("timezone", "Mars/Olympus", "unknown time zone"),
        ("days", "fri-mon", "run forward"),
        ("days", "lundi", "three-letter"),
    ],
)
def test_bad_staff_input_is_one_clear_error(session: Session, field: str, value: str, message: str) -> None:
    with pytest.raises(EngageError, match=message):
        staff_ops.add_staff(session=session, email="x@nmh.example.org", name="X", **{field: value})


@pytest.mark.parametrize(("text", "stored"), [("mon-fri", "mon,tue,wed,thu,fri"), ("thu,mon", "mon,thu")])
def test_parse_days(text: str, stored: str) -> None:
    assert parse_days(text) == stored


def test_deactivate_moves_contacts_to_successor(session: Session) -> None:
    leaving = create_staff(session)
    successor = create_staff(session)
    contacts = [create_contact(session, owner_id=leaving.id) for _ in range(3)]
    handover = staff_ops.deactivate_staff(session=session, email=leaving.email, reassign_to=successor.email)
    session.flush()
    assert handover.contacts == 3
    for contact in contacts:
        session.refresh(contact)
        assert contact.owner_id == successor.id
    assert not leaving.active


def test_deactivate_needs_an_active_successor(session: Session) -> None:
    leaving = create_staff(session)
    gone = create_staff(session, active=False)
    with pytest.raises(InvalidStateError):
        staff_ops.deactivate_staff(session=session, email=leaving.email, reassign_to=gone.email)
    with pytest.raises(NotFoundError, match="engage staff add"):
        staff_ops.deactivate_staff(session=session, email=leaving.email, reassign_to="nobody@nmh.example.org")


def test_staff_cli_add_and_list(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("staff", "add", "camille@nmh.example.org", "--name", "Camille Martin", "--json")
    assert result.exit_code == 0, result
    assert result.json()["created"] is True
    listed = cli("staff", "list", "--json").json()
    assert [row["email"] for row in listed] == ["camille@nmh.example.org"]
    bad = cli("staff", "add", "x@nmh.example.org", "--name", "X", "--hours", "5pm")
    assert bad.exit_code == 1
    assert bad.stderr.count("\n") == 1 and "HH:MM-HH:MM" in bad.stderr
