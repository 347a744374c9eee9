"""The staff digest: each person's calls and tasks of the day, the overdue and the news, once, in their morning."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, date, datetime, time, timedelta
from email.message import EmailMessage

import pytest
from call_plans import CALL_DUE, enroll, received, release_calls, staff_member
from factories import create_staff
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlmodel import Session, select

from engage import db, digest, plans
from engage.errors import InvalidStateError
from engage.mail.capture import SmtpCapture
from engage.plans import calls
from models import Delivery, PlanStep, Staff, StaffDigest, StepKind, StepStatus

WEDNESDAY_7_PARIS = datetime(2026, 12, 23, 6, 5, tzinfo=UTC)  # 07:05 in Paris, 01:05 in New York


def place_calls(now: datetime = datetime(2026, 12, 7, 8, tzinfo=UTC)) -> None:
    with db.session_scope() as session:
        calls.sync_calls(session=session, now=now)


@pytest.fixture
def day_of_work(session: Session) -> dict[str, int]:
    """Camille (Paris): 2 calls today, 1 overdue call, 1 task today, a failed and an unknown send on her plans.
    Jeanne (New York): 1 call today, in English. Paul: nothing to do."""
    camille = staff_member(session)
    jeanne = staff_member(
        session, "jeanne@nmh.example.org", name="Jeanne Smith", language="en", timezone="America/New_York"
    )
    paul = staff_member(session, "paul@nmh.example.org", name="Paul")
    session.commit()
    today = release_calls(
        session, enroll(session, 2, first_name="Léa", last_name="<Dupont>", phone="+33 6 00 00 00 01")
    )
    (overdue,) = release_calls(session, enroll(session, 1, first_name="Old"))
    (jeannes,) = release_calls(session, enroll(session, 1, applier=jeanne, first_name="Joan"))
    failing = enroll(session, 2, first_name="Max")
    with db.session_scope() as work:
        moved = work.get(PlanStep, overdue.id)
        assert moved is not None
        moved.due_at = CALL_DUE - timedelta(days=1)  # yesterday's call, never done
        work.add(moved)
        task = plans.add_follow_up(
            session=work,
            step_id=today[0].id or 0,
            on=date(2026, 12, 23),
            subject="Send the Lyon team's dates",
            by=work.get_one(Staff, camille.id),
            now=CALL_DUE - timedelta(days=2),
        )
        first_failing, second_failing = (plans.plan_steps(session=work, plan_id=plan.id or 0)[0] for plan in failing)
        first_failing.status, first_failing.last_error = StepStatus.FAILED, "550 5.1.1 mailbox unavailable"
        second_failing.status = StepStatus.UNKNOWN
        for step in (first_failing, second_failing):
            step.updated_at = CALL_DUE - timedelta(hours=12)
            work.add(step)
    place_calls(datetime(2026, 12, 7, 8, tzinfo=UTC))
    return {"camille": camille.id or 0, "jeanne": jeanne.id or 0, "paul": paul.id or 0, "task": task.id or 0}


def test_each_digest_lists_exactly_that_person_s_items(session: Session, day_of_work: dict[str, int]) -> None:
    with db.session_scope() as work:
        members = list(work.exec(select(Staff)))
        found = {d.staff.email: d for d in digest.collect_digests(session=work, now=WEDNESDAY_7_PARIS, staff=members)}
    camille = found["camille@nmh.example.org"]
    assert camille.day == date(2026, 12, 23)
    assert [(line.kind, f"{line.when:%H:%M}") for line in camille.today] == [
        (StepKind.CALL, "08:00"),
        (StepKind.TASK, "08:00"),
        (StepKind.CALL, "08:15"),
    ]
    assert [line.contact_name for line in camille.overdue] == ["Old"]
    assert sorted(line.status for line in camille.news) == [StepStatus.FAILED, StepStatus.UNKNOWN]
    jeanne = found["jeanne@nmh.example.org"]
    assert jeanne.day == date(2026, 12, 23) and [line.kind for line in jeanne.today] == [StepKind.CALL]
    assert (jeanne.overdue, jeanne.news) == ([], [])
    assert found["paul@nmh.example.org"].items == 0


def test_the_morning_run_emails_whoever_has_work_once(
    session: Session, day_of_work: dict[str, int], smtp_sink: SmtpCapture
) -> None:
    first = digest.send_digests(now=WEDNESDAY_7_PARIS)
    # Camille's morning; Paul's too, with nothing to do; 01:05 in New York is not Jeanne's.
    assert first.as_dict() == {
        "sent": 1,
        "nothing_to_do": 1,
        "not_their_morning": 1,
        "already_done": 0,
        "failed": 0,
        "unknown": 0,
    }
    ((recipient, message),) = received(smtp_sink)
    assert recipient == "camille@nmh.example.org"
    assert message["Subject"] == (
        "Votre journée du mercredi 23 décembre 2026\u00a0: 2 appels, 1 tâche, 1 en retard, 2 à vérifier"
    )
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    lines = [line for line in text.get_content().splitlines() if line.startswith("- ")]
    assert len(lines) == 6  # one line per item
    assert lines[0].startswith("- 09:00 · appeler Léa <Dupont> (+33 6 00 00 00 01) · Follow-up call")
    assert "tâche" in lines[1] and "Send the Lyon team's dates" in lines[2]
    assert any("échec\u00a0: 550 5.1.1 mailbox unavailable" in line for line in lines)
    assert any("engage tasks resolve" in line for line in lines)
    assert "Léa &lt;Dupont&gt;" in html.get_content() and "<Dupont>" not in html.get_content()

    again = digest.send_digests(now=WEDNESDAY_7_PARIS + timedelta(hours=1))
    assert (again.sent, again.already_done, again.not_due) == (0, 2, 1)
    # 08:05 in New York: Jeanne's turn, in English.
    new_york = digest.send_digests(now=datetime(2026, 12, 23, 13, 5, tzinfo=UTC))
    assert new_york.sent == 1
    (_, english) = received(smtp_sink)[-1]
    assert english["To"] == "Jeanne Smith <jeanne@nmh.example.org>"
    assert english["Subject"] == "Your day, Wednesday 23 December 2026: 1 call"
    session.commit()
    rows = session.exec(select(StaffDigest).order_by(StaffDigest.id)).all()
    assert [(r.items, r.day) for r in rows] == [
        (6, date(2026, 12, 23)),
        (0, date(2026, 12, 23)),
        (1, date(2026, 12, 23)),
    ]
    # Each email is a delivery of its day; the empty day has none.
    sent = session.exec(select(Delivery).order_by(Delivery.id)).all()
    assert [(d.staff_digest_id, d.kind, d.sequence, d.recipient, d.state) for d in sent] == [
        (rows[0].id, "digest", 0, "camille@nmh.example.org", "sent"),
        (rows[2].id, "digest", 0, "jeanne@nmh.example.org", "sent"),
    ]
    assert sent[0].message_id == message["Message-ID"] and sent[0].subject == message["Subject"]
    assert (sent[0].smtp_response or "").startswith("250") and sent[0].sent_at == WEDNESDAY_7_PARIS


def test_asking_for_one_person_sends_theirs_now_whatever_the_hour(
    session: Session, day_of_work: dict[str, int], smtp_sink: SmtpCapture
) -> None:
    six_in_new_york = datetime(2026, 12, 23, 11, tzinfo=UTC)
    outcome = digest.send_digests(now=six_in_new_york, only="jeanne@nmh.example.org")
    assert outcome.sent == 1 and [r for r, _ in received(smtp_sink)] == ["jeanne@nmh.example.org"]


def test_no_digest_on_a_day_off_or_after_work(session: Session) -> None:
    member = create_staff(session, work_days="mon,tue,wed,thu,fri", work_end=time(17))
    saturday_morning = datetime(2026, 12, 26, 7, tzinfo=UTC)
    assert not digest.digest_due(member, saturday_morning, time(7))
    assert digest.digest_due(member, WEDNESDAY_7_PARIS, time(7))
    assert not digest.digest_due(member, WEDNESDAY_7_PARIS - timedelta(minutes=10), time(7))
    assert not digest.digest_due(member, datetime(2026, 12, 23, 16, 30, tzinfo=UTC), time(7))


def test_an_inactive_person_gets_no_digest(session: Session) -> None:
    create_staff(session, email="gone@nmh.example.org", active=False)
    session.commit()
    with pytest.raises(InvalidStateError, match="not active"):
        digest.send_digests(now=WEDNESDAY_7_PARIS, only="gone@nmh.example.org")


@pytest.mark.parametrize("language", ["fr", "en"])
def test_both_languages_render_every_section(session: Session, language: str) -> None:
    member = create_staff(session, language=language)
    line = digest.DigestLine(
        step_id=7,
        kind=StepKind.CALL,
        status=StepStatus.OPEN,
        step_name="Follow-up call",
        contact_name="Zoë & <Max>",
        contact_phone=None,
        template_key="volunteer-followup",
        when=CALL_DUE,
        fallback=True,
    )
    news = digest.DigestLine(**{**line.__dict__, "status": StepStatus.FAILED, "detail": "refused"})
    rendered = digest.render_digest(
        digest.Digest(staff=member, day=date(2026, 12, 23), today=[line], overdue=[line], news=[news])
    )
    assert rendered.language == language
    assert rendered.text.count("Zoë & <Max>") == 3 and "Zoë &amp; &lt;Max&gt;" in rendered.html
    assert ("par défaut" if language == "fr" else "as fallback") in rendered.text


# --- the message production builds is the standard library's ------------------------------------------------------

_HEADERS = ("From", "To", "Subject", "Date", "Message-ID", "Content-Language", "Auto-Submitted", "MIME-Version")


def _read(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


one_line = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1, max_size=60).map(
    lambda v: " ".join(v.split())
)


@hypothesis_settings(max_examples=25, deadline=None)
@given(staff_name=one_line.filter(bool), contact=one_line.filter(bool), language=st.sampled_from(["fr", "en"]))
def test_the_digest_message_reads_as_the_reference_builds_it(staff_name: str, contact: str, language: str) -> None:
    """What the outbox sends for a digest (build_message) is what engage.reference builds with the standard library."""
    from engage.digest.render import compose_digest
    from engage.mail.message import _one_line, build_message
    from engage.reference import digest_email, prepare_email_message
    from engage.settings import Settings

    settings = Settings()
    member = Staff(id=3, email="camille@nmh.example.org", name=staff_name, language=language)
    line = digest.DigestLine(
        7, StepKind.CALL, StepStatus.OPEN, "Follow-up call", contact, None, "volunteer-followup", CALL_DUE
    )
    day = digest.Digest(staff=member, day=date(2026, 12, 23), today=[line])
    ours = build_message(compose_digest(day, now=WEDNESDAY_7_PARIS, settings=settings, message_id="<d@nmh>"), settings)
    theirs = prepare_email_message(
        digest_email(day, now=WEDNESDAY_7_PARIS, settings=settings, message_id="<d@nmh>"), settings
    )
    assert (ours.sender, ours.recipients) == (theirs.sender, theirs.recipients)
    built, reference = _read(ours.data), _read(theirs.data)
    for header in _HEADERS:
        if header not in ("Subject", "To"):
            assert built[header] == reference[header], header
    # Names and subject as written (the standard library reads a name such as ": x" as a group, and its folding can
    # drop a space before an encoded word: the text itself is the measure there).
    (to,) = built["To"].addresses
    assert (to.display_name, to.addr_spec) == (staff_name, member.email)
    assert built["Subject"] == _one_line(digest.render_digest(day, settings).subject)
    assert [p.get_content_type() for p in built.iter_parts()] == [p.get_content_type() for p in reference.iter_parts()]
    for our, their in zip(built.iter_parts(), reference.iter_parts(), strict=True):
        assert our.get_content() == their.get_content()
