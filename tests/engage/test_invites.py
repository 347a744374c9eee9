"""Calendar invites: what each calendar still needs to hear, the messages a real SMTP server receives, and the events a
real CalDAV server (Radicale) holds once a calendar client has applied them."""

from __future__ import annotations

import socket
import subprocess
import sys
import time as clock
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import httpx
import pytest
import vobject
from call_plans import CALL_DUE, calendar_of, enroll, received, release_calls, staff_member
from sqlmodel import Session, col, select

from engage import db
from engage.invites.due import InviteMessage, SentInvite, messages_due
from engage.invites.send import send_pending_invites
from engage.mail.capture import SmtpCapture
from engage.plans import calls
from models import Call, Delivery, DeliveryState, PlanStep, StepComment

RELEASED = datetime(2026, 12, 7, 8, tzinfo=UTC)
LATER = "2026-12-10T10:00"
A, B, C = "a@nmh.example.org", "b@nmh.example.org", "c@nmh.example.org"


# --- What each calendar still needs to hear ------------------------------------------------------------------------


def sent(kind: str, sequence: int, recipient: str, state: str = DeliveryState.SENT) -> SentInvite:
    return SentInvite(kind=kind, sequence=sequence, recipient=recipient, state=state)


@pytest.mark.parametrize(
    ("assignee", "sequence", "cancelled", "history", "expected"),
    [
        pytest.param(A, 0, False, [], [("invite", A, 0)], id="a new call"),
        pytest.param(A, 0, False, [sent("invite", 0, A)], [], id="already told"),
        pytest.param(A, 1, False, [sent("invite", 0, A)], [("update", A, 1)], id="rescheduled"),
        pytest.param(
            B, 1, False, [sent("invite", 0, A)], [("cancel", A, 1), ("invite", B, 1)], id="reassigned from A to B"
        ),
        pytest.param(A, 1, True, [sent("invite", 0, A)], [("cancel", A, 1)], id="plan cancelled"),
        pytest.param(A, 1, True, [], [], id="cancelled before anyone heard of it"),
        pytest.param(
            A,
            2,
            False,
            [sent("invite", 0, A), sent("cancel", 1, A), sent("invite", 1, B)],
            [("cancel", B, 2), ("invite", A, 2)],
            id="back to A",
        ),
        pytest.param(
            C,
            2,
            False,
            [sent("invite", 0, A), sent("invite", 1, B)],
            [("cancel", A, 2), ("cancel", B, 3), ("invite", C, 2)],
            id="two calendars to clear at once take their own numbers",
        ),
        pytest.param(A, 0, False, [sent("invite", 0, A, DeliveryState.FAILED)], [], id="refused for good: not again"),
        pytest.param(A, 1, False, [sent("invite", 0, A, DeliveryState.UNKNOWN)], [("update", A, 1)], id="maybe sent"),
        pytest.param(
            A, 0, False, [sent("invite", 0, A, DeliveryState.DEFERRED)], [("invite", A, 1)], id="deferred: again, next"
        ),
        pytest.param(
            B,
            1,
            False,
            [sent("invite", 0, A), sent("cancel", 1, A, DeliveryState.DEFERRED), sent("invite", 1, B)],
            [("cancel", A, 2)],
            id="a deferred cancel is sent again with the next number",
        ),
    ],
)
def test_messages_due(
    assignee: str, sequence: int, cancelled: bool, history: list[SentInvite], expected: list[tuple[str, str, int]]
) -> None:
    messages, reached = messages_due(assignee=assignee, sequence=sequence, cancelled=cancelled, history=history)
    assert [(m.kind, m.recipient, m.sequence) for m in messages] == expected
    assert reached == max([sequence, *(n for _, _, n in expected)])
    assert all(m.method == ("CANCEL" if m.kind == "cancel" else "REQUEST") for m in messages)


def test_a_cancel_is_never_numbered_below_what_that_calendar_saw() -> None:
    message = InviteMessage(kind="cancel", recipient=A, sequence=3)
    assert message.method == "CANCEL"


# --- Invites through a real SMTP server ----------------------------------------------------------------------------


def one_call(session: Session, **contact: object) -> int:
    """A plan whose call is released and placed; returns the call step's id."""
    (step,) = release_calls(session, enroll(session, 1, **contact))
    with db.session_scope() as work:
        calls.sync_calls(session=work, now=RELEASED)
    return step.id or 0


def deliveries(session: Session) -> list[tuple[str, int, str, str]]:
    session.commit()
    rows = session.exec(select(Delivery).where(col(Delivery.kind) != "email").order_by(col(Delivery.id)))
    return [(d.kind, d.sequence, d.recipient, d.state) for d in rows]


def test_an_invite_carries_what_the_caller_needs(session: Session, smtp_sink: SmtpCapture) -> None:
    step_id = one_call(session, first_name="Léa", last_name="Dupont <Lyon>", phone="+33 6 12 34 56 78", language="en")
    session.commit()
    session.add(StepComment(plan_step_id=step_id - 1, text="Wants to host an event in March.", created_at=RELEASED))
    session.commit()
    outcome = send_pending_invites(now=RELEASED)
    assert (outcome.requests, outcome.cancels) == (1, 0)
    ((recipient, message),) = received(smtp_sink)
    assert recipient == "camille@nmh.example.org"
    assert message["Subject"] == "Appeler Léa Dupont <Lyon> · Follow-up call · mercredi 23 décembre 2026 à 09:00"
    assert message["Auto-Submitted"] == "auto-generated"
    text = message.get_body(("plain",))
    assert text is not None and "Wants to host an event in March." in text.get_content()
    method, calendar = calendar_of(message)
    assert method == "REQUEST" and calendar["METHOD"] == "REQUEST"
    (event,) = calendar.walk("VEVENT")
    assert event["UID"] == f"engage-call-{step_id}@nomorehomelessness.org" and event["SEQUENCE"] == 0
    assert event.decoded("DTSTART") == CALL_DUE.astimezone(ZoneInfo("Europe/Paris"))
    assert event["DTSTART"].params["TZID"] == "Europe/Paris"
    assert event.decoded("DTEND") - event.decoded("DTSTART") == timedelta(minutes=15)
    assert [tz["TZID"] for tz in calendar.walk("VTIMEZONE")] == ["Europe/Paris"]
    assert str(event["ATTENDEE"]) == "mailto:camille@nmh.example.org"
    assert str(event["ORGANIZER"]) == "mailto:contact@nomorehomelessness.org"
    assert event["ORGANIZER"].params["CN"] == "No More Homelessness"
    (alarm,) = event.walk("VALARM")
    assert alarm.decoded("TRIGGER") == timedelta(minutes=-10)
    description = str(event["DESCRIPTION"])
    for expected in (
        "Léa Dupont <Lyon>",
        "+33 6 12 34 56 78",
        "Langue\u00a0: anglais",  # the contact's language, in the caller's
        "Atelier Lyon, vendredi 20 novembre 2026, Lyon 1er",
        "Satisfaction survey\u00a0: envoyé lundi 23 novembre 2026",
        "Motivation\u00a0: envoyé lundi 7 décembre 2026",
        "(Motivation)\u00a0: Wants to host an event in March.",
        f"engage tasks complete {step_id}",
    ):
        assert expected in description, expected
    assert "par défaut" not in description
    assert deliveries(session) == [("invite", 0, "camille@nmh.example.org", "sent")]
    assert send_pending_invites(now=RELEASED + timedelta(minutes=5)).sent == 0  # nothing twice


def test_a_fallback_assignee_is_told_why(session: Session, smtp_sink: SmtpCapture) -> None:
    staff_member(session, language="en")
    session.commit()
    (step,) = release_calls(session, enroll(session, 1, template="donor-followup"))
    assert step.assignee_fallback  # the rule names the owner; this contact has none
    with db.session_scope() as work:
        calls.sync_calls(session=work, now=RELEASED)
    send_pending_invites(now=RELEASED)
    ((_, message),) = received(smtp_sink)
    _, calendar = calendar_of(message)
    (event,) = calendar.walk("VEVENT")
    assert "Assigned to you as a fallback" in str(event["DESCRIPTION"])
    assert event["PRIORITY"] == 1  # the owner's call is a high-priority step


def test_reassign_reschedule_and_cancel_update_the_calendars(cli, session: Session, smtp_sink: SmtpCapture) -> None:  # type: ignore[no-untyped-def]
    staff_member(session, "jeanne@nmh.example.org", name="Jeanne Smith", language="en", timezone="America/New_York")
    step_id = one_call(session)
    send_pending_invites(now=RELEASED)

    moved = cli("tasks", "reassign", str(step_id), "jeanne@nmh.example.org", "--now", LATER)
    assert moved.exit_code == 0, moved
    assert "calendar: 1 invites and 1 cancellations sent" in moved.stdout
    again = cli("tasks", "reschedule", str(step_id), "2026-12-28", "--now", LATER)
    assert again.exit_code == 0, again
    session.commit()
    step = session.get(PlanStep, step_id)
    assert step is not None
    gone = cli("plans", "cancel", str(step.plan_id), "--reason", "moved away", "--now", LATER)
    assert gone.exit_code == 0, gone

    messages = received(smtp_sink)
    summary = []
    for recipient, message in messages:
        method, calendar = calendar_of(message)
        (event,) = calendar.walk("VEVENT")
        assert event["UID"] == f"engage-call-{step_id}@nomorehomelessness.org"
        local = event.decoded("DTSTART")
        summary.append((recipient, method, event["SEQUENCE"], str(event["STATUS"]), f"{local:%Y-%m-%d %H:%M %Z}"))
    assert summary == [
        ("camille@nmh.example.org", "REQUEST", 0, "CONFIRMED", "2026-12-23 09:00 CET"),
        # The call left Camille's calendar for Jeanne's, where it is 09:00 in New York (15:00 in Paris).
        ("camille@nmh.example.org", "CANCEL", 1, "CANCELLED", "2026-12-23 15:00 CET"),
        ("jeanne@nmh.example.org", "REQUEST", 1, "CONFIRMED", "2026-12-23 09:00 EST"),  # Jeanne's morning
        ("jeanne@nmh.example.org", "REQUEST", 2, "CONFIRMED", "2026-12-28 09:00 EST"),
        ("jeanne@nmh.example.org", "CANCEL", 3, "CANCELLED", "2026-12-28 09:00 EST"),
    ]
    subjects = [str(message["Subject"]) for _, message in messages]
    # The calendar the call left is told for whom, not a time that was never its own.
    assert subjects[1].startswith("Réattribué à Jeanne Smith\u00a0: appeler Contact") and "2026" not in subjects[1]
    assert subjects[2].startswith("Call ")
    assert subjects[3].startswith("Moved: call") and subjects[4].startswith("Cancelled: call")
    assert deliveries(session) == [
        ("invite", 0, "camille@nmh.example.org", "sent"),
        ("cancel", 1, "camille@nmh.example.org", "sent"),
        ("invite", 1, "jeanne@nmh.example.org", "sent"),
        ("update", 2, "jeanne@nmh.example.org", "sent"),
        ("cancel", 3, "jeanne@nmh.example.org", "sent"),
    ]
    call = session.exec(select(Call)).one()
    assert (call.sequence, call.invite_pending, call.cancelled_at is not None) == (3, False, True)


def test_when_smtp_is_down_the_change_stands_and_the_invites_wait(  # type: ignore[no-untyped-def]
    cli, session: Session, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from engage.settings import get_settings

    staff_member(session, "jeanne@nmh.example.org", name="Jeanne")
    with SmtpCapture() as closed:
        port = closed.port
    monkeypatch.setenv("ENGAGE_SMTP_PORT", str(port))
    step_id = one_call(session)
    result = cli("tasks", "reassign", str(step_id), "jeanne@nmh.example.org", "--now", LATER)
    assert result.exit_code == 0, result
    assert "calendar invites not sent now" in result.stderr and "run-due-steps sends them later" in result.stderr
    session.commit()
    call = session.exec(select(Call)).one()
    # Nothing went out: the attempt stays in the ledger, deferred (it used to be forgotten).
    assert call.invite_pending and deliveries(session) == [("invite", 1, "jeanne@nmh.example.org", "deferred")]

    with SmtpCapture(tmp_path / "outbox") as sink:
        monkeypatch.setenv("ENGAGE_SMTP_PORT", str(sink.port))
        get_settings.cache_clear()
        outcome = send_pending_invites(now=RELEASED + timedelta(days=3))
        # Camille never heard of the call: only Jeanne is told.
        assert (outcome.requests, outcome.cancels) == (1, 0)
        assert [recipient for recipient, _ in received(sink)] == ["jeanne@nmh.example.org"]
        # The retry is a new delivery, with the next number, which its calendar sees as the event's SEQUENCE.
        ((_, message),) = received(sink)
        (event,) = calendar_of(message)[1].walk("VEVENT")
        assert event["SEQUENCE"] == 2
    assert deliveries(session) == [
        ("invite", 1, "jeanne@nmh.example.org", "deferred"),
        ("invite", 2, "jeanne@nmh.example.org", "sent"),
    ]
    assert not session.exec(select(Call)).one().invite_pending


# --- The events in a real calendar server --------------------------------------------------------------------------

CALDAV = "urn:ietf:params:xml:ns:caldav"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Radicale CalDAV server on a free loopback port, no authentication, storage in a temporary folder."""
    folder = tmp_path_factory.mktemp("radicale")
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "radicale",
            "--config",
            "",
            "--storage-filesystem-folder",
            str(folder / "collections"),
            "--auth-type",
            "none",
            "--server-hosts",
            f"127.0.0.1:{port}",
            "--logging-level",
            "error",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = clock.monotonic() + 20
    while True:
        try:
            httpx.get(base, timeout=1)
            break
        except httpx.TransportError:
            if process.poll() is not None or clock.monotonic() > deadline:
                process.kill()
                raise RuntimeError("Radicale did not start") from None
            clock.sleep(0.1)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=10)


class CalendarClient:
    """What a calendar application does with an emailed invite (RFC 6047): store a REQUEST, mark a CANCEL, and
    ignore anything older than what it holds (a lower SEQUENCE)."""

    def __init__(self, base: str, user: str) -> None:
        self.http = httpx.Client(base_url=base, auth=(user, "unused"), timeout=10)
        self.collection = f"/{user}/calls/"
        self.http.request("PROPFIND", f"/{user}/", headers={"Depth": "0"}).raise_for_status()
        self.http.request("MKCALENDAR", self.collection).raise_for_status()

    def receive(self, ics: str) -> bool:
        """Apply one iTIP message; True when it changed the calendar."""
        incoming = vobject.readOne(ics)
        uid, sequence = incoming.vevent.uid.value, int(incoming.vevent.sequence.value)
        held = self.event(uid)
        if held is not None and int(held.vevent.sequence.value) >= sequence:
            return False
        stored = "".join(line for line in ics.splitlines(keepends=True) if not line.startswith("METHOD:"))
        response = self.http.put(
            f"{self.collection}{uid}.ics", content=stored.encode(), headers={"Content-Type": "text/calendar"}
        )
        response.raise_for_status()
        return True

    def event(self, uid: str) -> vobject.base.Component | None:
        response = self.http.get(f"{self.collection}{uid}.ics")
        return None if response.status_code == 404 else vobject.readOne(response.text)

    def uids_between(self, start: datetime, end: datetime) -> list[str]:
        """The events the server itself finds in a UTC time range (its own reading of DTSTART and VTIMEZONE)."""
        query = f"""<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="{CALDAV}">
  <D:prop><C:calendar-data/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT">
    <C:time-range start="{start:%Y%m%dT%H%M%SZ}" end="{end:%Y%m%dT%H%M%SZ}"/>
  </C:comp-filter></C:comp-filter></C:filter>
</C:calendar-query>"""
        response = self.http.request(
            "REPORT", self.collection, content=query.encode(), headers={"Depth": "1", "Content-Type": "application/xml"}
        )
        response.raise_for_status()
        found = ET.fromstring(response.content).iter(f"{{{CALDAV}}}calendar-data")
        return sorted(vobject.readOne(data.text or "").vevent.uid.value for data in found)


def test_invites_land_in_a_real_calendar_at_the_right_time(  # type: ignore[no-untyped-def]
    cli, session: Session, smtp_sink: SmtpCapture, radicale: str
) -> None:
    staff_member(session, "jeanne@nmh.example.org", name="Jeanne Smith", language="en", timezone="America/New_York")
    first = one_call(session)
    second = one_call(session)
    send_pending_invites(now=RELEASED)
    assert cli("tasks", "reassign", str(second), "jeanne@nmh.example.org", "--now", LATER).exit_code == 0
    assert cli("tasks", "reschedule", str(second), "2026-12-28", "--now", LATER).exit_code == 0

    user = f"camille-{session.get_bind().dialect.name}"  # one calendar per database backend of the run
    camille, jeanne = CalendarClient(radicale, user), CalendarClient(radicale, f"{user}-jeanne")
    calendars = {"camille@nmh.example.org": camille, "jeanne@nmh.example.org": jeanne}
    messages = received(smtp_sink)
    for recipient, message in messages:
        (part,) = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
        assert calendars[recipient].receive(part.get_content())
    # An older message arriving late changes nothing.
    (late,) = [p for p in messages[0][1].walk() if p.get_content_type() == "text/calendar"]
    assert not camille.receive(late.get_content())

    uid = f"engage-call-{first}@nomorehomelessness.org"
    moved_uid = f"engage-call-{second}@nomorehomelessness.org"
    # The server reads 09:00 Europe/Paris as 08:00 UTC, and 09:00 America/New_York on the 28th as 14:00 UTC.
    assert camille.uids_between(CALL_DUE, CALL_DUE + timedelta(minutes=15)) == [uid]
    assert camille.uids_between(CALL_DUE + timedelta(hours=1), CALL_DUE + timedelta(hours=2)) == []
    eastern = datetime(2026, 12, 28, 14, tzinfo=UTC)
    assert jeanne.uids_between(eastern, eastern + timedelta(minutes=15)) == [moved_uid]

    held = camille.event(uid)
    assert held is not None
    event = held.vevent
    assert event.dtstart.value == CALL_DUE and event.dtstart.value.utcoffset() == timedelta(hours=1)
    assert event.dtstart.params.get("X-VOBJ-ORIGINAL-TZID") == ["Europe/Paris"]
    assert event.attendee.value == "mailto:camille@nmh.example.org"
    assert (event.uid.value, event.sequence.value, event.status.value) == (uid, "0", "CONFIRMED")
    assert event.valarm.trigger.value == timedelta(minutes=-10)

    cancelled = camille.event(moved_uid)
    assert cancelled is not None and cancelled.vevent.status.value == "CANCELLED"
    assert cancelled.vevent.sequence.value == "1"
    taken = jeanne.event(moved_uid)
    assert taken is not None
    assert (taken.vevent.sequence.value, taken.vevent.status.value) == ("2", "CONFIRMED")
    local = taken.vevent.dtstart.value
    assert (f"{local:%Y-%m-%d %H:%M}", local.utcoffset()) == ("2026-12-28 09:00", timedelta(hours=-5))
    assert taken.vevent.attendee.value == "mailto:jeanne@nmh.example.org"


def test_a_large_workshop_is_sent_page_by_page_in_one_pass(session: Session, smtp_sink: SmtpCapture) -> None:
    release_calls(session, enroll(session, 5))
    with db.session_scope() as work:
        calls.sync_calls(session=work, now=RELEASED)
    outcome = send_pending_invites(now=RELEASED, limit=2)
    assert (outcome.requests, outcome.calls) == (5, 5)
    assert len(received(smtp_sink)) == 5
    session.commit()
    assert not any(call.invite_pending for call in session.exec(select(Call)))
