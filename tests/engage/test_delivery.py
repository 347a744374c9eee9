"""Every email of both seed plans, sent by the real runner through a real SMTP server, read back by a client."""

from __future__ import annotations

import email
import email.policy
import re
from collections import defaultdict
from collections.abc import Callable
from email.message import EmailMessage
from typing import Any

from sqlmodel import Session, select

from engage.mail.capture import SmtpCapture
from engage.unsubscribe.tokens import read_token
from models import Contact, Delivery, DeliveryState, PlanStep, StepStatus

PEOPLE: list[dict[str, Any]] = [
    {"email": "helene.lefevre@example.org", "first_name": "Hélène", "last_name": "Lefèvre", "language": "fr"},
    {"email": "zoe.ng@example.org", "first_name": "Zoë", "last_name": "Ng", "language": "en"},
    {"email": "tom@example.org", "first_name": 'Tom <b>&</b> "Jerry"', "last_name": "O'Neil", "language": "en-GB"},
    # A language the organisation does not write in: the default, French.
    {"email": "jurgen@example.org", "first_name": "Jürgen", "last_name": None, "language": "de"},
]
EXPECTED_LANGUAGE = {"helene.lefevre@example.org": "fr", "zoe.ng@example.org": "en", "tom@example.org": "en"}
GREETING = {"fr": "Bonjour", "en": "Hello"}


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def part(message: EmailMessage, subtype: str) -> str:
    body = message.get_body(preferencelist=(subtype,))
    assert body is not None and body.get_content_type() == f"text/{subtype}"
    assert body.get_content_charset() == "utf-8"
    return str(body.get_content()).replace("\r\n", "\n")


def test_every_email_of_both_plans_arrives_complete_in_the_contact_language(
    session: Session,
    smtp_sink: SmtpCapture,
    enroll: Callable[..., list[int]],
    run_plans: Callable[..., list[Any]],
) -> None:
    enroll("volunteer-followup", *[dict(person) for person in PEOPLE])
    enroll("donor-followup", *[dict(person, email="donor." + person["email"]) for person in PEOPLE])
    outcomes = run_plans()
    assert sum(o.sent for o in outcomes) == 2 * 3 * len(PEOPLE)
    assert sum(o.failed + o.skipped for o in outcomes) == 0
    session.commit()

    contacts = {c.email: c for c in session.exec(select(Contact))}
    deliveries = {d.message_id: d for d in session.exec(select(Delivery))}
    assert {d.state for d in deliveries.values()} == {DeliveryState.SENT}
    subjects: dict[str, set[str]] = defaultdict(set)
    for captured in smtp_sink.messages:
        message = parse(captured.data)
        assert message.defects == [] and all(p.defects == [] for p in message.walk())
        assert message.get_content_type() == "multipart/alternative"
        (to,) = message["To"].addresses
        contact = contacts[to.addr_spec]
        person = to.addr_spec.removeprefix("donor.")
        language = EXPECTED_LANGUAGE.get(person, "fr")

        # Right person, right language, names intact.
        assert to.display_name == contact.full_name
        assert message["Content-Language"] == language
        text, html = part(message, "plain"), part(message, "html")
        assert text.startswith(f"{GREETING[language]} {contact.first_name},\n")
        assert f'<html lang="{language}"' in html
        if "<b>" in (contact.first_name or ""):
            assert "<b>" not in html and "Tom &lt;b&gt;&amp;&lt;/b&gt;" in html
        else:
            assert f"{GREETING[language]} {contact.first_name}," in html

        # The headers every email carries.
        assert str(message["From"]) == "No More Homelessness <contact@nomorehomelessness.org>"
        assert str(message["Reply-To"]) == "Camille Martin <camille@nmh.example.org>"
        assert message["Date"].datetime is not None
        delivery = deliveries[message["Message-ID"]]
        assert delivery.recipient == contact.email and delivery.language == language
        assert delivery.subject == message["Subject"]
        assert (delivery.smtp_response or "").startswith("250")
        match = re.fullmatch(r"<(http://127\.0\.0\.1:8025/u/([^>]+))>", str(message["List-Unsubscribe"]))
        assert match is not None and read_token(match.group(2)) == contact.id
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert match.group(1) in text and f'href="{match.group(1)}"' in html
        subjects[contact.email].add(message["Subject"])

    assert all(len(seen) == 3 for seen in subjects.values()) and len(subjects) == 2 * len(PEOPLE)
    steps = session.exec(select(PlanStep)).all()
    assert {s.status for s in steps if s.kind == "email"} == {StepStatus.DONE}
    assert {s.status for s in steps if s.kind == "call"} == {StepStatus.OPEN}
