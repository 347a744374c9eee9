"""`engage preview`, `engage send-test`, `engage unsubscribe-server` and email validation, run as the console script."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select

from engage.mail.capture import SmtpCapture
from models import Delivery

REPO = Path(__file__).resolve().parents[3]
EMAIL_STEPS = [
    ("volunteer-followup", "survey"),
    ("volunteer-followup", "resource-pack"),
    ("volunteer-followup", "motivation"),
    ("donor-followup", "impact-story"),
    ("donor-followup", "call-to-give"),
    ("donor-followup", "project-visit"),
]


@pytest.mark.parametrize("language", ["fr", "en"])
@pytest.mark.parametrize(("template", "step"), EMAIL_STEPS)
def test_preview_writes_subject_html_text_and_a_whole_message(
    cli: Any, tmp_path: Path, template: str, step: str, language: str
) -> None:
    result = cli("preview", template, step, "--lang", language, "--out", "looks")
    assert result.exit_code == 0, result
    stem = f"looks/{template}.{step}.{language}"
    assert result.stdout.splitlines()[-4:] == [f"{stem}.eml", f"{stem}.html", f"{stem}.subject.txt", f"{stem}.txt"]
    assert "sample contact Hélène Lefèvre" in result.stdout
    subject = (tmp_path / f"{stem}.subject.txt").read_text(encoding="utf-8").strip()
    html = (tmp_path / f"{stem}.html").read_text(encoding="utf-8")
    text = (tmp_path / f"{stem}.txt").read_text(encoding="utf-8")
    assert f'<html lang="{language}"' in html and 'style="' in html and "Hélène" in html
    assert text.startswith("Bonjour Hélène," if language == "fr" else "Hello Hélène,")
    message = email.message_from_bytes((tmp_path / f"{stem}.eml").read_bytes(), policy=email.policy.default)
    assert message["Subject"] == subject
    assert message["To"].addresses[0].display_name == "Hélène Lefèvre"
    assert message.get_body(preferencelist=("html",)) is not None


def test_preview_for_a_contact_of_the_ledger_uses_their_language_and_plan(
    cli: Any, session: Session, enroll: Callable[..., list[int]], tmp_path: Path
) -> None:
    enroll("volunteer-followup", {"email": "zoe@example.org", "first_name": "Zoë", "language": "en"})
    result = cli("preview", "volunteer-followup", "survey", "--contact", "ZOE@example.org")
    assert result.exit_code == 0, result
    text = (tmp_path / "preview/volunteer-followup.survey.en.txt").read_text(encoding="utf-8")
    assert text.startswith("Hello Zoë,")
    assert '"Atelier Lyon" on Friday 20 November 2026 in Lyon 1er' in text
    assert "Camille Martin" in text
    assert "/u/" in text and "0.sample" not in text


def test_preview_shows_exactly_what_the_runner_sends(
    cli: Any, session: Session, enroll: Callable[..., list[int]], tmp_path: Path, smtp_sink: SmtpCapture
) -> None:
    from datetime import UTC, datetime

    from engage import runner

    enroll("volunteer-followup", {"email": "zoe@example.org", "first_name": "Zoë", "last_name": "Ng", "language": "en"})
    assert cli("preview", "volunteer-followup", "survey", "--contact", "zoe@example.org").exit_code == 0
    monday = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)
    claimed = runner.claim_due_steps(now=monday, claimant="run", limit=10, lease_seconds=600)
    assert runner.send_email_batch(step_ids=claimed, claimant="run", now=monday).sent == 1
    (captured,) = smtp_sink.messages
    sent = email.message_from_bytes(captured.data, policy=email.policy.default)
    shown = email.message_from_bytes(
        (tmp_path / "preview/volunteer-followup.survey.en.eml").read_bytes(), policy=email.policy.default
    )
    for header in (
        "From",
        "To",
        "Reply-To",
        "Subject",
        "Content-Language",
        "List-Unsubscribe",
        "List-Unsubscribe-Post",
    ):
        assert sent[header] == shown[header], header
    assert str(sent["Reply-To"]) == "Camille Martin <camille@nmh.example.org>"  # who applied the plan answers
    for subtype in ("plain", "html"):
        ours, theirs = shown.get_body(preferencelist=(subtype,)), sent.get_body(preferencelist=(subtype,))
        assert ours is not None and theirs is not None and ours.get_content() == theirs.get_content()


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["volunteer-followup", "survey", "--lang", "de"],
            "--lang de: emails are written in fr, en (ENGAGE_LANGUAGES)",
        ),
        (["volunteer-followup", "follow-up-call"], 'step "follow-up-call" of "volunteer-followup" is a call step'),
        (
            ["volunteer-followup", "servey"],
            'plan template "volunteer-followup" has no step "servey"; its email steps: survey, resource-pack',
        ),
        (["volunteer", "survey"], 'no plan template "volunteer"; known: donor-followup, volunteer-followup'),
        (["../plan_templates/volunteer-followup", "survey"], 'no plan template "../plan_templates/volunteer-followup"'),
    ],
)
def test_preview_mistakes_are_one_line(cli: Any, args: list[str], error: str) -> None:
    result = cli("preview", *args)
    assert result.exit_code == 1, result
    assert result.stderr.startswith(f"error: {error}"), result.stderr
    assert "Traceback" not in result.stderr


def test_send_test_sends_one_real_message(cli: Any, session: Session, smtp_sink: SmtpCapture) -> None:
    result = cli("send-test", "donor-followup", "call-to-give", "--to", "me@nmh.example.org", "--lang", "en")
    assert result.exit_code == 0, result
    assert "to me@nmh.example.org through 127.0.0.1:" in result.stdout
    assert ": 250 Message accepted for delivery" in result.stdout
    (captured,) = smtp_sink.messages
    assert captured.recipients == ["me@nmh.example.org"]
    message = email.message_from_bytes(captured.data, policy=email.policy.default)
    assert message["Subject"] == "A home is where everything starts again"
    assert f"Message-ID: {message['Message-ID']}" in result.stdout
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # Delivered through the outbox like any message: a delivery of kind `test`, of no step.
    session.commit()
    (delivery,) = session.exec(select(Delivery)).all()
    assert (delivery.kind, delivery.state, delivery.recipient, delivery.plan_step_id) == (
        "test",
        "sent",
        "me@nmh.example.org",
        None,
    )
    assert delivery.message_id == message["Message-ID"] and (delivery.smtp_response or "").startswith("250")


def test_send_test_without_a_server_says_why(cli: Any, session: Session, monkeypatch: pytest.MonkeyPatch) -> None:
    with SmtpCapture() as closed:
        port = closed.port
    monkeypatch.setenv("ENGAGE_SMTP_PORT", str(port))
    result = cli("send-test", "volunteer-followup", "survey", "--to", "me@nmh.example.org")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: cannot connect to SMTP server 127.0.0.1:{port}")
    session.commit()
    assert [(d.kind, d.state) for d in session.exec(select(Delivery))] == [("test", "deferred")]


def test_the_unsubscribe_server_refuses_to_listen_publicly_with_the_placeholder_secret(cli: Any) -> None:
    result = cli("unsubscribe-server", "--host", "0.0.0.0", "--port", "8099")
    assert result.exit_code == 1
    assert "ENGAGE_UNSUBSCRIBE_SECRET is the development placeholder" in result.stderr


# --- validation names template, step, language and variable ---------------------------------------------------


def test_validate_renders_the_emails_and_names_what_is_wrong(cli: Any, workspace: Path) -> None:
    html = workspace / "email_templates/donor/call-to-give/en/body.html"
    html.write_text(html.read_text(encoding="utf-8").replace("links.donation_page", "links.donate"), "utf-8")
    (workspace / "email_templates/volunteer/survey/fr/subject.txt").unlink()
    result = cli("templates", "validate")
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        'plan_templates/donor-followup.yaml: step "call-to-give": email_template: language "en": '
        "email_templates/donor/call-to-give/en/body.html uses links.donate, which the template does not define "
        'under links (did you mean "donation_page"?) (line 14, via email_templates/_layout/macros.html line 6)',
        'plan_templates/volunteer-followup.yaml: step "survey": email_template: language "fr": '
        "missing email_templates/volunteer/survey/fr/subject.txt (the subject)",
        "error: 2 of 2 plan template files do not validate",
    ]
