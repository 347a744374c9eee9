"""The invites production sends (built directly, the time zone written once) say exactly what the standard library's
builder in engage.reference says."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, date, datetime, timedelta
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engage.invites.brief import CallBrief, Note, Person, StepLine, invite_subject
from engage.invites.calendar import Organiser, compose_invite, invite_calendar_bytes
from engage.invites.due import InviteMessage
from engage.mail.message import _one_line, build_message
from engage.reference import invite_calendar, invite_email, prepare_email_message
from engage.settings import Settings

NOW = datetime(2026, 12, 7, 9, tzinfo=UTC)
SETTINGS = Settings(organisation_name="No More Homelessness · Lyon", organisation_email="contact@nmh.example.org")
ORGANISER_15 = Organiser(SETTINGS.organisation_email, SETTINGS.organisation_name, reminder_minutes=15)
JEANNE = Person(email="jeanne@nmh.example.org", name="Jeanne Smith", language="en", timezone="America/New_York")
LUCIE = Person(email="lucie@nmh.example.org", name="Lucie Ménard", language="fr", timezone="Europe/Paris")
REQUEST = InviteMessage(kind="invite", recipient=LUCIE.email, sequence=0)
HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "Content-Language", "Auto-Submitted", "MIME-Version")


def brief(**changes: object) -> CallBrief:
    values: dict[str, object] = {
        "call_id": 7,
        "step_id": 41,
        "uid": "engage-call-41@nmh.example.org",
        "slot_start": datetime(2026, 12, 23, 8, 45, tzinfo=UTC),
        "slot_end": datetime(2026, 12, 23, 9, tzinfo=UTC),
        "sequence": 0,
        "cancelled": False,
        "assignee": LUCIE,
        "fallback": False,
        "contact_name": "Hélène Lefèvre",
        "contact_email": "helene@example.org",
        "contact_phone": "+33 6 12 34 56 78",
        "contact_language": "fr",
        "plan_id": 12,
        "template_name": "Volunteer follow-up",
        "step_name": "Follow-up call",
        "step_description": "Ask how the event went; offer the next workshop.",
        "priority": "normal",
        "workshop_name": "Atelier Lyon",
        "workshop_date": date(2026, 11, 19),
        "workshop_place": "Lyon 7e",
        "history": (StepLine("Survey", "email", "done", datetime(2026, 11, 20, 9, tzinfo=UTC), None),),
        "notes": (),
    }
    values.update(changes)
    return CallBrief(**values)  # type: ignore[arg-type]


def parsed(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def assert_same_invite(case: CallBrief, message: InviteMessage, recipient: Person) -> None:
    reference = prepare_email_message(
        invite_email(case, message, recipient, now=NOW, settings=SETTINGS, message_id="<m@nmh.example.org>"), SETTINGS
    )
    # What the invite pass hands the outbox, built as the outbox builds it.
    built = build_message(
        compose_invite(case, message, recipient, now=NOW, settings=SETTINGS, message_id="<m@nmh.example.org>"), SETTINGS
    )
    assert built.sender == reference.sender and built.recipients == reference.recipients
    ours, theirs = parsed(built.data), parsed(reference.data)
    for header in HEADERS:
        if header not in ("Subject", "To"):
            assert ours[header] == theirs[header], header
    # The recipient's name as it is, whatever it holds (the standard library takes a name such as ": x" for a group).
    (to,) = ours["To"].addresses
    assert (to.display_name, to.addr_spec) == (recipient.name, recipient.email)
    # The subject as written, spaces and no-break spaces kept (the standard library's folding can drop the space
    # before an encoded word, which is why the reference is not the measure here).
    assert ours["Subject"] == _one_line(invite_subject(case, message, recipient))
    assert ours.get_content_type() == theirs.get_content_type() == "multipart/alternative"
    our_parts, their_parts = list(ours.iter_parts()), list(theirs.iter_parts())
    assert [p.get_content_type() for p in our_parts] == [p.get_content_type() for p in their_parts]
    for our, their in zip(our_parts, their_parts, strict=True):
        assert dict(our.get_params() or []) == dict(their.get_params() or [])
        assert our.get_content() == their.get_content()
    # Byte for byte, the calendar a client imports.
    calendar = our_parts[1].get_payload(decode=True)
    assert calendar == their_parts[1].get_payload(decode=True)
    assert calendar == invite_calendar_bytes(
        case,
        message,
        recipient,
        now=NOW,
        organiser=Organiser.of(SETTINGS),
    )


@pytest.mark.parametrize(
    ("case", "message", "recipient"),
    [
        pytest.param(brief(), REQUEST, LUCIE, id="a new call, French"),
        pytest.param(
            brief(assignee=JEANNE, sequence=2),
            InviteMessage(kind="update", recipient=JEANNE.email, sequence=2),
            JEANNE,
            id="moved, English, New York",
        ),
        pytest.param(
            brief(assignee=JEANNE, sequence=1),
            InviteMessage(kind="cancel", recipient=LUCIE.email, sequence=1),
            LUCIE,
            id="reassigned away: the old calendar is told for whom",
        ),
        pytest.param(
            brief(cancelled=True, sequence=3),
            InviteMessage(kind="cancel", recipient=LUCIE.email, sequence=3),
            LUCIE,
            id="plan cancelled",
        ),
        pytest.param(
            brief(
                fallback=True,
                priority="high",
                contact_phone=None,
                workshop_name=None,
                step_description=None,
                notes=(Note(datetime(2026, 12, 1, 10, tzinfo=UTC), "Lucie", "Survey", 'Dit « oui ; "demain" »'),),
                history=(),
            ),
            REQUEST,
            LUCIE,
            id="fallback, high priority, notes with quotes and separators",
        ),
        pytest.param(
            brief(slot_start=datetime(2027, 3, 28, 8, tzinfo=UTC), slot_end=datetime(2027, 3, 28, 8, 15, tzinfo=UTC)),
            REQUEST,
            Person(email="ops@nmh.example.org", name="", language="de", timezone="UTC"),
            id="UTC recipient without a name, a language Engage does not write, another year",
        ),
    ],
)
def test_the_built_invite_is_the_reference_invite(case: CallBrief, message: InviteMessage, recipient: Person) -> None:
    assert_same_invite(case, message, recipient)


awkward_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("\n\t;,:\\\"'«» "), max_size=120
)


# Names are one line with single spaces in the ledger (the import and the templates see to it); a description is not.
one_line_text = awkward_text.map(lambda v: " ".join(v.split())).filter(bool)


@settings(max_examples=25, deadline=None)
@given(
    name=one_line_text,
    step=one_line_text,
    description=st.none() | awkward_text,
    phone=st.none() | st.text("+0123456789 ()-", min_size=1, max_size=20),
    zone=st.sampled_from(["Europe/Paris", "America/Montreal", "Pacific/Auckland", "Asia/Kolkata", "UTC"]),
    minutes=st.integers(min_value=0, max_value=60 * 24 * 400),
)
def test_any_text_and_zone_give_the_reference_invite(
    name: str, step: str, description: str | None, phone: str | None, zone: str, minutes: int
) -> None:
    start = datetime(2026, 12, 1, tzinfo=UTC) + timedelta(minutes=15 * (minutes // 15))
    recipient = Person(email="lucie@nmh.example.org", name=name, language="fr", timezone=zone)
    case = brief(
        contact_name=name,
        step_name=step,
        step_description=description,
        contact_phone=phone,
        slot_start=start,
        slot_end=start + timedelta(minutes=15),
        assignee=recipient,
    )
    assert_same_invite(case, REQUEST, recipient)


def test_the_reference_calendar_is_what_the_built_one_writes() -> None:
    case = brief()
    written = invite_calendar(
        case,
        REQUEST,
        LUCIE,
        now=NOW,
        organiser=ORGANISER_15,
    ).to_ical()
    assert b"BEGIN:VTIMEZONE" in written and b"TZID:Europe/Paris" in written
    assert written == invite_calendar_bytes(
        case,
        REQUEST,
        LUCIE,
        now=NOW,
        organiser=ORGANISER_15,
    )
